"""Compressed backups into every kind of target QEMU 7.2 accepts, against qemu-storage-daemon 7.2.

``backup_job_create`` accepts ``compress: true`` when the target takes compressed
writes (``bdrv_supports_compressed_writes``): its driver does, and a filter's
filtered child does too. throttle and copy-on-read forward compressed writes
(``throttle_co_pwritev_compressed``, ``cor_co_pwritev_compressed``); blkdebug and
raw do not. A streamOptimized vmdk compresses every grain it is given, once
(``vmdk_pwritev`` into a compressed extent), with or without the flag; a second
write into a written grain fails. The images are compared grain by grain
(:mod:`tests.support.vmdk_grains`) and cluster by cluster (``qemu-img check``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import cmd, qemu_img
from tests.differential.jobs.harness import Graph, JobScenario, job_differential
from tests.differential.jobs.test_backup import BACKUP, IMAGES, _done, scenario

pytestmark = pytest.mark.qsd

_SO_SETUP = (qemu_img("create -q -f vmdk -o subformat=streamOptimized {dir}/so.vmdk 4M"),)
_ADD_SO = cmd(
    "blockdev-add",
    {
        "driver": "vmdk",
        "node-name": "so",
        "file": {"driver": "file", "filename": "so.vmdk", "node-name": "so-f"},
    },
)


def _over_tgt(driver: str, name: str, **extra: Any) -> dict[str, Any]:
    return cmd("blockdev-add", {"driver": driver, "node-name": name, "file": "tgt", **extra})


SCENARIOS: list[JobScenario] = [
    scenario(
        "backup-compress-into-stream-optimized-vmdk",
        _ADD_SO,
        cmd("blockdev-backup", {**BACKUP, "target": "so", "compress": True}),
        *_done("b"),
        images=("top.qcow2", "so.vmdk"),
        setup=_SO_SETUP,
        doc="each 64 KiB grain of data is one zlib stream behind a grain marker",
    ),
    scenario(
        "backup-plain-into-stream-optimized-vmdk",
        _ADD_SO,
        cmd("blockdev-backup", {**BACKUP, "target": "so"}),
        *_done("b"),
        images=("top.qcow2", "so.vmdk"),
        setup=_SO_SETUP,
        doc="a streamOptimized extent compresses plain writes too",
    ),
    scenario(
        "backup-compress-twice-into-stream-optimized-vmdk",
        _ADD_SO,
        cmd("blockdev-backup", {**BACKUP, "target": "so", "compress": True}),
        *_done("b"),
        cmd("blockdev-backup", {**BACKUP, "target": "so", "compress": True}),
        *_done("b"),
        images=("so.vmdk",),
        setup=_SO_SETUP,
        doc="a written grain cannot be written again: the second backup fails with EIO "
        "('Could not write to allocated cluster for streamOptimized' on QSD's stderr)",
    ),
    scenario(
        "backup-compress-into-a-throttle-over-qcow2",
        cmd("object-add", {"qom-type": "throttle-group", "id": "tg"}),
        _over_tgt("throttle", "thr", **{"throttle-group": "tg"}),
        cmd("blockdev-backup", {**BACKUP, "target": "thr", "compress": True}),
        *_done("b"),
        Graph(),
        images=IMAGES,
        doc="throttle forwards compressed writes (bdrv_supports_compressed_writes follows "
        "the filter): the qcow2 below gets compressed clusters",
    ),
    scenario(
        "backup-compress-into-copy-on-read-over-qcow2",
        _over_tgt("copy-on-read", "cor"),
        cmd("blockdev-backup", {**BACKUP, "target": "cor", "compress": True}),
        *_done("b"),
        images=IMAGES,
        doc="copy-on-read forwards compressed writes too",
    ),
    scenario(
        "backup-compress-refused-for-blkdebug-and-raw-filters",
        _over_tgt("raw", "traw"),
        cmd("blockdev-backup", {**BACKUP, "target": "traw", "compress": True}),
        cmd(
            "blockdev-add",
            {
                "driver": "blkdebug",
                "node-name": "dbg",
                "image": {"driver": "file", "filename": "tgt2.qcow2"},
            },
        ),
        cmd("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "dbg"}),
        cmd("object-add", {"qom-type": "throttle-group", "id": "tg2"}),
        cmd(
            "blockdev-add",
            {"driver": "throttle", "node-name": "thr3", "file": "traw", "throttle-group": "tg2"},
        ),
        cmd("blockdev-backup", {**BACKUP, "target": "thr3", "compress": True}),
        cmd("blockdev-backup", {**BACKUP, "target": "q", "compress": True}),
        *_done("b"),
        images=IMAGES,
        doc="raw cannot compress, so neither can a throttle over it; a qcow2 over blkdebug "
        "can (only the target's own chain of filters counts)",
    ),
]

_PARAMS = [pytest.param(s, id=s.name) for s in SCENARIOS]


@pytest.mark.parametrize("job_scenario", _PARAMS)
def test_compressed_backup_targets_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)
