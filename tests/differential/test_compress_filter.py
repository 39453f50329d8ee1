"""The ``compress`` filter under guest writes, against qemu-storage-daemon 7.2.

A guest writes through an NBD export of a ``compress`` node: every write goes down
as a compressed write (``compress_co_pwritev_part``). The filter's request
alignment is the cluster size below (``compress_refresh_limits``), so a 4 KiB
write is padded to its whole cluster first (read, then written whole). A cluster
already written cannot be compressed again (qcow2 and streamOptimized vmdk answer
EIO); a vmdk of another subformat takes the data plain. Compared: each guest
request's outcome, the images' clusters (``qemu-img check``'s compressed count for
qcow2, every grain's stream for vmdk), maps and content.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import cmd, qemu_img
from tests.differential.jobs.harness import JobScenario, Run, job_differential

pytestmark = pytest.mark.qsd

_URI = "nbd+unix:///vm?socket={dir}/nbd.sock"


def _node(name: str, image: str, driver: str) -> dict[str, Any]:
    return cmd(
        "blockdev-add",
        {
            "driver": driver,
            "node-name": name,
            "file": {"driver": "file", "filename": image, "node-name": f"{name}-f"},
        },
    )


def _export(node: str) -> tuple[dict[str, Any], ...]:
    return (
        cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}}),
        cmd(
            "block-export-add",
            {"type": "nbd", "id": "e", "node-name": node, "writable": True, "name": "vm"},
        ),
    )


def _guest(*commands: str) -> Run:
    argv: list[str] = ["qemu-io", "-f", "raw", _URI]
    for c in commands:
        argv += ["-c", c]
    return Run(tuple(argv))


#: an aligned cluster, a padded 4 KiB write, a write into a written cluster, reads back
_WRITES = (
    _guest("write -P 0x11 0 64k"),
    _guest("write -P 0x22 132k 4k"),
    _guest("write -P 0x33 4k 4k"),
    _guest("write -P 0x44 1M 192k"),
    _guest("read -P 0x11 0 64k", "read -P 0 128k 4k", "read -P 0x22 132k 4k", "read -P 0 136k 56k"),
    _guest("read -P 0x44 1M 192k"),
)


def _scenario(name: str, image: str, create: str, *steps: dict[str, Any], doc: str) -> JobScenario:
    return JobScenario(
        name,
        (
            *steps,
            cmd("blockdev-add", {"driver": "compress", "node-name": "c", "file": "img"}),
            *_export("c"),
            *_WRITES,
        ),
        (qemu_img(f"create -q {create} {{dir}}/{image} 4M"),),
        (image,),
        doc,
    )


SCENARIOS = [
    _scenario(
        "compress-over-qcow2",
        "a.qcow2",
        "-f qcow2",
        _node("img", "a.qcow2", "qcow2"),
        doc="64 KiB clusters: every cluster written is one compressed cluster",
    ),
    _scenario(
        "compress-over-qcow2-zstd-4k-clusters",
        "a.qcow2",
        "-f qcow2 -o cluster_size=4096,compression_type=zstd",
        _node("img", "a.qcow2", "qcow2"),
        doc="4 KiB clusters: no padding for 4 KiB writes; zstd streams",
    ),
    _scenario(
        "compress-over-throttle-over-qcow2",
        "a.qcow2",
        "-f qcow2",
        _node("q", "a.qcow2", "qcow2"),
        cmd("object-add", {"qom-type": "throttle-group", "id": "tg"}),
        cmd(
            "blockdev-add",
            {"driver": "throttle", "node-name": "img", "file": "q", "throttle-group": "tg"},
        ),
        doc="throttle forwards compressed writes; the alignment is seen through it",
    ),
    _scenario(
        "compress-over-stream-optimized-vmdk",
        "a.vmdk",
        "-f vmdk -o subformat=streamOptimized",
        _node("img", "a.vmdk", "vmdk"),
        doc="each grain is compressed once; a written grain refuses a second write",
    ),
    _scenario(
        "compress-over-monolithic-sparse-vmdk",
        "a.vmdk",
        "-f vmdk",
        _node("img", "a.vmdk", "vmdk"),
        doc="a sparse vmdk takes compressed writes as plain ones (vmdk_co_pwritev_compressed)",
    ),
]


@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.name) for s in SCENARIOS])
def test_compress_filter_against_qsd(scenario: JobScenario) -> None:
    diffs = job_differential(scenario)
    assert not diffs, "\n".join(diffs)
