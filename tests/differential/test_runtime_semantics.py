"""The generic block-layer semantics at run time, on qemu-storage-daemon 7.2 and on txgraph.

Each scenario builds the same images on both peers, runs the same QMP steps
(``blockdev-add``, ``blockdev-reopen``...), exports a node over NBD on a unix
socket, drives guest I/O through it with the real ``qemu-io`` and finally
compares, peer against peer: every QMP reply, the qemu-io output (timing lines
dropped) and ``qemu-img map --output=json`` of every image (host offsets
reduced to whether there is one: a zero cluster that kept its allocation and
one that was unmapped differ only there). What they pin: detect-zeroes on/unmap (zero clusters instead of data
clusters) after open and after reopen, discard honoured only with
``discard=unmap``, copy-on-read inserted by ``blockdev-add`` and by
``blockdev-reopen`` (cluster-aligned copies, zero stretches copied as zero
clusters, ``bottom`` respected), raw offset/size windows after reopen, and a
read-only export refusing writes with QEMU's text.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.image_checks import file_blocks
from txgraph.peers import QSD, QMPProcess, TxgraphDaemon

pytestmark = pytest.mark.qsd

#: (command, arguments) run on the peer's monitor, in order
Steps = Sequence[tuple[str, dict[str, Any]]]


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=60)


@dataclass
class Case:
    """One scenario: images, QMP steps, the export, guest I/O, images to map."""

    setup: Callable[[str], None]
    steps: Callable[[str], Steps]
    export: str
    io: Sequence[Sequence[str]]
    images: Sequence[str]
    #: QMP steps after the first I/O batch, then a second I/O batch
    later_steps: Callable[[str], Steps] = lambda d: ()
    later_io: Sequence[Sequence[str]] = ()
    writable: bool = True
    fmt: dict[str, str] = field(default_factory=dict)
    #: the export name the second I/O batch uses (default: ``export``)
    later_export: str | None = None
    #: also compare ``qemu-img map`` over the export at the end (NBD block status)
    nbd_map: bool = False


def _canon(text: str, d: str) -> list[str]:
    """qemu-io output without timing lines, with the peer's directory replaced."""
    return [line.replace(d, "{dir}") for line in text.splitlines() if " ops; " not in line]


def _qemu_io(d: str, export: str, commands: Sequence[str]) -> list[str]:
    argv = ["qemu-io", "-f", "raw", f"nbd+unix:///{export}?socket={d}/nbd.sock"]
    for c in commands:
        argv += ["-c", c]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return [*_canon(res.stdout + res.stderr, d), f"rc={res.returncode}"]


def _map(d: str, image: str, fmt: str) -> list[dict[str, Any]]:
    res = subprocess.run(
        [
            "qemu-img",
            "map",
            "-f",
            fmt,
            "--output=json",
            image if "://" in image else f"{d}/{image}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Host offsets differ between peers; whether a range has one (is allocated) must not.
    return [
        {**{k: v for k, v in e.items() if k != "offset"}, "host": "offset" in e}
        for e in json.loads(res.stdout)
    ]


def _run(case: Case, peer: type[QMPProcess]) -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix="semantics-")
    out: dict[str, Any] = {"replies": [], "io": []}
    try:
        case.setup(d)
        proc = peer(workdir=d)  # type: ignore[call-arg]
        try:
            steps = [
                *case.steps(d),
                ("nbd-server-start", {"addr": {"type": "unix", "data": {"path": f"{d}/nbd.sock"}}}),
                (
                    "block-export-add",
                    {"type": "nbd", "id": "e", "node-name": case.export, "writable": case.writable},
                ),
            ]
            for command, arguments in steps:
                out["replies"].append((command, proc.execute(command, arguments)))
            for batch in case.io:
                out["io"].append(_qemu_io(d, case.export, batch))
            for command, arguments in case.later_steps(d):
                out["replies"].append((command, proc.execute(command, arguments)))
            for batch in case.later_io:
                out["io"].append(_qemu_io(d, case.later_export or case.export, batch))
            if case.nbd_map:
                out["nbd_map"] = _map(d, f"nbd+unix:///{case.export}?socket={d}/nbd.sock", "raw")
        finally:
            proc.close()
        out["maps"] = {img: _map(d, img, case.fmt.get(img, "qcow2")) for img in case.images}
        out["files"] = {img: file_blocks(f"{d}/{img}") for img in case.images}
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- scenarios ------------------------------------------------------------------------------
def _qcow2_with_data(d: str) -> None:
    _sh("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/img.qcow2", "1M")
    _sh("qemu-io", "-f", "qcow2", "-c", "write -P 5 0 256k", f"{d}/img.qcow2")


def _add_qcow2(d: str, **common: Any) -> Steps:
    return [
        (
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "q",
                **common,
                "file": {"driver": "file", "node-name": "qf", "filename": f"{d}/img.qcow2"},
            },
        )
    ]


def _ext_l2_with_data(d: str, *, backing: bool = False, extended: bool = True) -> None:
    """A 1 MiB qcow2 with extended L2 entries (64 KiB clusters, 2 KiB subclusters):
    data in cluster 0, in two subclusters of cluster 3, compressed in cluster 4 and in
    cluster 5; with ``backing``, over a base full of 9s with two zeroed ranges; without
    ``extended``, the same on plain L2 entries."""
    base: list[str] = []
    if backing:
        _sh("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/base.qcow2", "1M")
        _sh(
            "qemu-io", "-f", "qcow2", "-c", "write -P 9 0 1M", "-c", "write -z 130k 20k",
            "-c", "write -z 600k 200k", f"{d}/base.qcow2",
        )  # fmt: skip
        base = ["-b", "base.qcow2", "-F", "qcow2"]
    _sh(
        "qemu-img", "create", "-q", "-f", "qcow2", "-o",
        f"extended_l2={'on' if extended else 'off'},cluster_size=64k",
        *base, f"{d}/img.qcow2", "1M",
    )  # fmt: skip
    _sh(
        "qemu-io", "-f", "qcow2", "-c", "write -P 5 0 64k", "-c", "write -P 5 192k 4k",
        "-c", "write -c -P 7 256k 64k", "-c", "write -P 5 320k 64k", f"{d}/img.qcow2",
    )  # fmt: skip


def _metadata_preallocated(d: str, *, written: str | None = None, spare: int = 0) -> None:
    """A 1 MiB qcow2 (64 KiB clusters) made with ``preallocation=metadata``: every
    cluster is referenced, and the file is a hole wherever nothing was written
    (``written``: a qemu-io write run on it first); ``spare`` clusters of allocated,
    unreferenced space appended to the file."""
    img = f"{d}/img.qcow2"
    _sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", img, "1M")
    if written is not None:
        _sh("qemu-io", "-f", "qcow2", "-c", written, img)
    if spare:
        fd = os.open(img, os.O_RDWR)
        try:
            os.posix_fallocate(fd, os.fstat(fd).st_size, spare << 16)
        finally:
            os.close(fd)


_EXT_L2_ZERO_IO = [
    "write -z 8k 4k",
    "write -z 64k 6k",
    "write -z 129k 1k",
    "write -z 193k 1k",
    "write -z 196k 3k",
    "write -z 256k 4k",
    "write -z 326k 60k",
    "write -z 500k 3k",
    "write -z -u 511k 2k",
    "read -P 5 0 8k",
    "read -P 0 8k 4k",
    "read -P 0 193k 1k",
    "read -P 7 260k 60k",
]


_ZERO_IO = [
    [
        "write -P 0 0 64k",
        "write -P 0 512k 64k",
        "write -P 0 100k 8k",
        "read -P 0 0 64k",
        "read -P 5 64k 36k",
        "read -P 0 100k 8k",
    ]
]


def _qcow2_with_compressed(d: str) -> None:
    """A 4 MiB qcow2: 5s at 0-512k, a compressed 7s at 1M-1152k."""
    _sh("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/img.qcow2", "4M")
    _sh("qemu-io", "-f", "qcow2", "-c", "write -P 5 0 512k", "-c", "write -c -P 7 1M 128k",
        f"{d}/img.qcow2")  # fmt: skip


def _over_raw(d: str) -> None:
    """A 4 MiB img.qcow2 over a sparse raw base.raw: 9s at 0-64k, 0s written at
    512k-576k, holes elsewhere; in the image a zero cluster at 768k and a compressed
    cluster at 1M (so that fresh clusters are not the last of the file)."""
    _sh("qemu-img", "create", "-q", "-f", "raw", f"{d}/base.raw", "4M")
    _sh("qemu-io", "-f", "raw", "-c", "write -P 9 0 64k", "-c", "write -P 0 512k 64k",
        f"{d}/base.raw")  # fmt: skip
    _sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
        f"{d}/img.qcow2", "4M")  # fmt: skip
    _sh("qemu-io", "-f", "qcow2", "-c", "write -z 768k 64k", "-c", "write -c -P 7 1M 128k",
        f"{d}/img.qcow2")  # fmt: skip


def _chain(d: str, *, mid: bool = False) -> None:
    """base.qcow2 (data at 0-64k and 192k-256k) [<- mid.qcow2 (data at 128k-192k)] <- top.qcow2."""
    _sh("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/base.qcow2", "1M")
    _sh(
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 7 0 64k",
        "-c",
        "write -P 9 192k 64k",
        f"{d}/base.qcow2",
    )
    below = "base.qcow2"
    if mid:
        _sh(
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            f"{d}/mid.qcow2",
            "1M",
        )
        _sh("qemu-io", "-f", "qcow2", "-c", "write -P 3 128k 64k", f"{d}/mid.qcow2")
        below = "mid.qcow2"
    _sh(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        below,
        "-F",
        "qcow2",
        f"{d}/top.qcow2",
        "1M",
    )


def _add_top(d: str) -> Steps:
    return [
        (
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "node-name": "topf", "filename": f"{d}/top.qcow2"},
            },
        )
    ]


def _raw_disk(d: str) -> None:
    _sh("qemu-img", "create", "-q", "-f", "raw", f"{d}/disk.raw", "1M")
    _sh("qemu-io", "-f", "raw", "-c", "write -P 1 0 1M", f"{d}/disk.raw")


def _named_chain(d: str, *, bottom: str) -> Steps:
    """base <- mid <- top opened by name, and a COR filter over top with ``bottom``."""
    return [
        (
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "base",
                "file": {"driver": "file", "filename": f"{d}/base.qcow2"},
            },
        ),
        (
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "mid",
                "backing": "base",
                "file": {"driver": "file", "filename": f"{d}/mid.qcow2"},
            },
        ),
        (
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "top",
                "backing": "mid",
                "file": {"driver": "file", "filename": f"{d}/top.qcow2"},
            },
        ),
        (
            "blockdev-add",
            {"driver": "copy-on-read", "node-name": "cor", "file": "top", "bottom": bottom},
        ),
    ]


_COR_IO = [["read -P 7 0 32k", "read 100k 8k", "read -P 9 200k 4k", "read -P 0 600k 4k"]]

CASES: dict[str, Case] = {
    # detect-zeroes=unmap with discard=unmap: zero writes deallocate (zero, no data)
    "detect_zeroes_unmap": Case(
        _qcow2_with_data,
        lambda d: _add_qcow2(d, discard="unmap", **{"detect-zeroes": "unmap"}),
        "q",
        _ZERO_IO,
        ["img.qcow2"],
    ),
    # detect-zeroes=on: zero clusters, no unmap
    "detect_zeroes_on": Case(
        _qcow2_with_data,
        lambda d: _add_qcow2(d, **{"detect-zeroes": "on"}),
        "q",
        _ZERO_IO,
        ["img.qcow2"],
    ),
    # default (off): zero buffers are written as data
    "detect_zeroes_off": Case(_qcow2_with_data, _add_qcow2, "q", _ZERO_IO, ["img.qcow2"]),
    # blockdev-reopen turns detect-zeroes on while the export is live
    "detect_zeroes_on_after_reopen": Case(
        _qcow2_with_data,
        _add_qcow2,
        "q",
        [["write -P 0 0 64k"]],
        ["img.qcow2"],
        later_steps=lambda d: [
            (
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "qcow2", "node-name": "q", "file": "qf", "detect-zeroes": "on"}
                    ]
                },
            )
        ],
        later_io=[["write -P 0 64k 64k", "write -P 0 512k 64k", "read -P 0 0 128k"]],
    ),
    "detect_zeroes_unmap_after_reopen": Case(
        _qcow2_with_data,
        _add_qcow2,
        "q",
        [["write -P 0 0 64k"]],
        ["img.qcow2"],
        later_steps=lambda d: [
            (
                "blockdev-reopen",
                {
                    "options": [
                        {
                            "driver": "qcow2",
                            "node-name": "q",
                            "file": "qf",
                            "discard": "unmap",
                            "detect-zeroes": "unmap",
                        }
                    ]
                },
            )
        ],
        later_io=[["write -P 0 64k 64k", "write -P 0 512k 64k", "read -P 0 0 128k"]],
    ),
    # NBD WRITE_ZEROES with and without NO_HOLE on a root node opened with discard=ignore
    # (QEMU 7.2's BlockBackend passes MAY_UNMAP on; only a parent's request is checked)
    "zero_writes_through_export": Case(
        _qcow2_with_data,
        _add_qcow2,
        "q",
        [
            [
                "write -z -u 0 64k",
                "write -z 64k 64k",
                "write -z -u 512k 64k",
                "read -P 0 0 128k",
                "read -P 5 128k 64k",
            ]
        ],
        ["img.qcow2"],
    ),
    # extended L2: a zero write gives zero subclusters where QEMU does (whole aligned
    # subclusters; an unaligned head or tail whose subcluster has no data and otherwise
    # reads zeros), data elsewhere (a subcluster with data, a partial compressed cluster)
    "ext_l2_zero_writes": Case(
        _ext_l2_with_data,
        _add_qcow2,
        "q",
        [_EXT_L2_ZERO_IO, ["write -z 250k 10k", "write -z 190k 70k", "write -z 318k 130k"]],
        ["img.qcow2"],
        nbd_map=True,
    ),
    "ext_l2_zero_writes_over_backing": Case(
        lambda d: _ext_l2_with_data(d, backing=True),
        _add_qcow2,
        "q",
        [
            [
                "write -z 129k 1k",
                "write -z 140k 3k",
                "write -z 601k 1k",
                "write -z 650k 5k",
                "write -z -u 700k 2k",
                "read -P 0 129k 1k",
                "read -P 0 601k 1k",
                "read -P 9 602k 1k",
            ]
        ],
        ["img.qcow2"],
        nbd_map=True,
    ),
    # NBD block status answers for the whole chain: a range the top leaves unallocated
    # is a hole, and reads as zeros where the backing does
    "block_status_over_backing": Case(
        lambda d: _ext_l2_with_data(d, backing=True, extended=False),
        _add_qcow2,
        "q",
        [["write -z 704k 64k", "read -P 9 800k 4k"]],
        ["img.qcow2"],
        nbd_map=True,
    ),
    # metadata preallocation (qcow2_detect_metadata_preallocation): far more clusters
    # referenced than the file holds, so block status asks the file under a data
    # cluster (BDRV_BLOCK_RECURSE): its holes read DATA|ZERO, for the sparse reads and
    # for qemu-img map over the export
    "metadata_preallocation_status": Case(
        _metadata_preallocated,
        _add_qcow2,
        "q",
        [["write -P 5 128k 64k", "write -P 6 300k 4k", "read -P 0 0 128k", "read -P 6 300k 4k"]],
        ["img.qcow2"],
        nbd_map=True,
    ),
    # all but the last cluster written: 21 clusters referenced, 19 allocated, which is
    # still at the threshold (max(19 * 10 / 9, 19 + 2))
    "metadata_preallocation_mostly_written": Case(
        lambda d: _metadata_preallocated(d, written="write -P 5 0 960k"),
        _add_qcow2,
        "q",
        [["read -P 0 960k 64k", "read -P 5 0 4k"]],
        ["img.qcow2"],
        nbd_map=True,
    ),
    # the same holes, but the file has 40 spare clusters allocated: fewer referenced
    # clusters than the threshold, so nothing recurses and the holes are plain data
    "metadata_preallocation_under_threshold": Case(
        lambda d: _metadata_preallocated(d, written="write -P 5 0 64k", spare=40),
        _add_qcow2,
        "q",
        [["read -P 0 64k 64k", "read -P 5 0 4k"]],
        ["img.qcow2"],
        nbd_map=True,
    ),
    "zero_writes_through_raw_parent": Case(
        _qcow2_with_data,
        lambda d: [
            *_add_qcow2(d),
            ("blockdev-add", {"driver": "raw", "node-name": "r", "file": "q"}),
        ],
        "r",
        [["write -z -u 0 64k", "write -z 64k 64k", "read -P 0 0 128k"]],
        ["img.qcow2"],
    ),
    # discard reaches the image only with discard=unmap
    "discard_unmap": Case(
        _qcow2_with_data,
        lambda d: _add_qcow2(d, discard="unmap"),
        "q",
        [["discard 0 64k", "discard 128k 128k", "read -P 0 0 64k", "read -P 5 64k 64k"]],
        ["img.qcow2"],
    ),
    "discard_ignore": Case(
        _qcow2_with_data,
        _add_qcow2,
        "q",
        [["discard 0 64k", "discard 128k 128k", "read -P 5 0 256k"]],
        ["img.qcow2"],
    ),
    "discard_unmap_after_reopen": Case(
        _qcow2_with_data,
        _add_qcow2,
        "q",
        [["discard 0 64k", "read -P 5 0 64k"]],
        ["img.qcow2"],
        later_steps=lambda d: [
            (
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "qcow2", "node-name": "q", "file": "qf", "discard": "unmap"}
                    ]
                },
            )
        ],
        later_io=[["discard 0 64k", "read -P 0 0 64k"]],
    ),
    # a freed cluster keeps its blocks on the file unless its discard type passes:
    # pass-discard-request=off keeps what a discard or an unmapping zero write frees,
    # and a COW write never discards the compressed cluster it replaces
    # (QCOW2_DISCARD_NEVER), even with discard=unmap (compare "files")
    "pass_discard_request_off": Case(
        _qcow2_with_data,
        lambda d: _add_qcow2(d, discard="unmap", **{"pass-discard-request": False}),
        "q",
        [["discard 0 64k", "write -z -u 64k 64k", "read -P 0 0 128k", "read -P 5 128k 4k"]],
        ["img.qcow2"],
    ),
    "cow_over_compressed_keeps_its_blocks": Case(
        lambda d: _ext_l2_with_data(d, extended=False),
        lambda d: _add_qcow2(d, discard="unmap"),
        "q",
        [["write -P 3 256k 4k", "read -P 7 260k 60k", "discard 0 64k"]],
        ["img.qcow2"],
    ),
    # a partial write to a fresh cluster whose rest reads as zeros (handle_alloc_space,
    # is_zero_cow): the cluster is zeroed on the file (an unwritten extent, "zero" in
    # qemu-img map), then the data written; also over a zero cluster
    "cow_regions_zeroed_not_written": Case(
        _qcow2_with_compressed,
        _add_qcow2,
        "q",
        [
            [
                "write -P 1 2572800 64k",
                "write -z 3M 64k",
                "write -P 2 3M 2k",
            ]
        ],
        ["img.qcow2"],
    ),
    # over a raw backing, a hole is data to is_zero_cow (block status without want_zero):
    # the COW regions are copied; a zero cluster of the image's own is zeroed instead
    # (no nbd_map: QEMU's export asks the file inside data clusters, txgraph's does not)
    "cow_over_raw_backing": Case(
        _over_raw,
        lambda d: [
            (
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "file": {"driver": "file", "filename": f"{d}/img.qcow2"},
                    "backing": {
                        "driver": "raw",
                        "file": {"driver": "file", "filename": f"{d}/base.raw"},
                    },
                },
            )
        ],
        "q",
        [
            [
                "write -P 3 2572800 64k",
                "write -P 4 8k 4k",
                "write -P 5 520k 4k",
                "write -P 6 770k 4k",
                "write -z 900k 4k",
                "read -P 9 0 8k",
            ]
        ],
        ["img.qcow2"],
        fmt={"img.qcow2": "qcow2"},
    ),
    # copy-on-read inserted by blockdev-add (the COR node is exported)
    "cor_added": Case(
        _chain,
        lambda d: [
            *_add_top(d),
            ("blockdev-add", {"driver": "copy-on-read", "node-name": "cor", "file": "top"}),
        ],
        "cor",
        _COR_IO,
        ["top.qcow2", "base.qcow2"],
    ),
    # copy-on-read inserted by blockdev-reopen under a raw node that is exported
    "cor_inserted_by_reopen": Case(
        _chain,
        lambda d: [
            *_add_top(d),
            ("blockdev-add", {"driver": "raw", "node-name": "r", "file": "top"}),
            ("blockdev-add", {"driver": "copy-on-read", "node-name": "cor", "file": "top"}),
            ("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "r", "file": "cor"}]}),
        ],
        "r",
        _COR_IO,
        ["top.qcow2", "base.qcow2"],
    ),
    # the same insertion while the export is already live
    "cor_inserted_by_reopen_live": Case(
        _chain,
        lambda d: [
            *_add_top(d),
            ("blockdev-add", {"driver": "raw", "node-name": "r", "file": "top"}),
        ],
        "r",
        [["read -P 7 0 4k"]],
        ["top.qcow2"],
        later_steps=lambda d: [
            ("blockdev-add", {"driver": "copy-on-read", "node-name": "cor", "file": "top"}),
            ("blockdev-reopen", {"options": [{"driver": "raw", "node-name": "r", "file": "cor"}]}),
        ],
        later_io=_COR_IO,
    ),
    # bottom: data that lives only below 'mid' is read, not copied
    "cor_bottom": Case(
        lambda d: _chain(d, mid=True),
        lambda d: _named_chain(d, bottom="mid"),
        "cor",
        [["read -P 7 0 64k", "read -P 3 128k 64k", "read -P 9 192k 64k", "read 300k 64k"]],
        ["top.qcow2", "mid.qcow2"],
    ),
    "cor_bottom_is_base": Case(
        lambda d: _chain(d, mid=True),
        lambda d: _named_chain(d, bottom="base"),
        "cor",
        [["read -P 7 0 64k", "read -P 3 128k 64k", "read 300k 64k"]],
        ["top.qcow2", "mid.qcow2"],
    ),
    # raw offset/size window, moved by blockdev-reopen
    "raw_window_after_reopen": Case(
        _raw_disk,
        lambda d: [
            (
                "blockdev-add",
                {
                    "driver": "raw",
                    "node-name": "w",
                    "offset": 65536,
                    "size": 131072,
                    "file": {"driver": "file", "node-name": "wf", "filename": f"{d}/disk.raw"},
                },
            )
        ],
        "w",
        [["write -P 2 0 4k", "read -P 1 4k 4k"]],
        ["disk.raw"],
        later_steps=lambda d: [
            (
                "blockdev-reopen",
                {
                    "options": [
                        {
                            "driver": "raw",
                            "node-name": "w",
                            "offset": 262144,
                            "size": 131072,
                            "file": "wf",
                        }
                    ]
                },
            )
        ],
        later_io=[["write -P 3 0 4k", "read -P 3 0 4k", "read -P 1 4k 4k"]],
        fmt={"disk.raw": "raw"},
    ),
    # read-only, then made writable by blockdev-reopen under a live read-only export,
    # then a writable export is added
    "read_only_to_writable_by_reopen": Case(
        _qcow2_with_data,
        lambda d: _add_qcow2(d, **{"read-only": True}),
        "q",
        [["write -P 1 0 4k", "read -P 5 0 4k"]],
        ["img.qcow2"],
        writable=False,
        later_steps=lambda d: [
            (
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "qcow2", "node-name": "q", "file": "qf", "read-only": False}
                    ]
                },
            ),
            (
                "block-export-add",
                {"type": "nbd", "id": "w", "node-name": "q", "name": "w", "writable": True},
            ),
        ],
        later_io=[["write -P 1 0 4k", "write -P 0 600k 64k", "read -P 1 0 4k"]],
        later_export="w",
    ),
    # writable, then made read-only by blockdev-reopen once the writable export is gone
    "writable_to_read_only_by_reopen": Case(
        _qcow2_with_data,
        _add_qcow2,
        "q",
        [["write -P 1 0 4k"]],
        ["img.qcow2"],
        later_steps=lambda d: [
            ("block-export-del", {"id": "e", "mode": "hard"}),
            (
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "qcow2", "node-name": "q", "file": "qf", "read-only": True}
                    ]
                },
            ),
            ("block-export-add", {"type": "nbd", "id": "r", "node-name": "q", "name": "r"}),
        ],
        later_io=[["write -P 2 0 4k", "read -P 1 0 4k"]],
        later_export="r",
    ),
    # a read-only export refuses every kind of write with QEMU's text
    "read_only_export": Case(
        _qcow2_with_data,
        lambda d: _add_qcow2(d, **{"read-only": True}),
        "q",
        [["write -P 1 0 4k"], ["write -z 0 4k"], ["discard 0 64k"], ["read -P 5 0 4k"]],
        ["img.qcow2"],
        writable=False,
    ),
}


def random_case(seed: int) -> Case:
    """A random guest session on a random qcow2 layout, the same on both peers.

    The image: 16 or 64 KiB clusters, plain or extended L2 entries, optionally made
    with ``preallocation=metadata`` (where qemu-img allows it), over nothing, a qcow2 or a raw backing with
    random data and zeroed ranges; opened with ``discard`` unmap or ignore. The
    session: two batches of data, zero, unmapping-zero writes and discards at
    512-byte granularity (so partial clusters and subclusters are frequent), and reads
    of the ranges touched. Everything :func:`_run` compares must agree, down to the
    file's blocks.

    Each request that can free clusters is followed by a flush: txgraph hands a freed
    cluster out again only once the tables that dropped it are on disk (so a crash can
    never map an old guest offset onto new data), where QEMU reuses it at once; before
    that flush the two place new clusters differently, by design. A flush cannot come
    between the parts of one request: an unaligned ``write -z -u`` that frees the
    clusters in its middle and allocates its partial head or tail shows that
    difference (seeds 1182, 1475, 1499 of the opt-in range); ``make test`` runs seeds
    that do not hit it.

    A raw backing on ext4 once differed too: pages cached over an unwritten extent make
    SEEK_DATA call it data, so what earlier reads cached changes the backing's map and,
    through a zero write's block status, what is allocated. The raw driver now reads
    with ``preadv`` as QEMU does (``FileNode.preadinto``), so the same reads cache the
    same pages; seeds 1026, 1211 and 1409 pin it.
    """
    rnd = random.Random(seed)
    size = 1 << 20
    cluster = rnd.choice((16, 64))
    extended = rnd.random() < 0.5
    prealloc = rnd.random() < 0.25
    backing = rnd.choice(("none", "qcow2", "raw"))
    # (qemu-img refuses a backing file with preallocation unless extended_l2 is on)
    prealloc = prealloc and (backing == "none" or extended)
    discard = rnd.choice(("unmap", "ignore"))

    def span(limit: int = 192) -> tuple[int, int]:
        length = rnd.randint(1, limit) * 512
        return rnd.randrange(0, size - length + 1, 512), length

    base_io = []
    for _ in range(4):
        off, length = span(512)
        base_io.append(f"write -P {rnd.randint(1, 255)} {off} {length}")
    for _ in range(2):
        off, length = span()
        base_io.append(f"write -z {off} {length}")

    def setup(d: str) -> None:
        opts = f"cluster_size={cluster}k,extended_l2={'on' if extended else 'off'}"
        if prealloc:
            opts += ",preallocation=metadata"
        base: list[str] = []
        if backing != "none":
            ext = "qcow2" if backing == "qcow2" else "raw"
            _sh("qemu-img", "create", "-q", "-f", ext, f"{d}/base.{ext}", str(size))
            io = [arg for cmd in base_io for arg in ("-c", cmd)]
            _sh("qemu-io", "-f", ext, *io, f"{d}/base.{ext}")
            base = ["-b", f"base.{ext}", "-F", ext]
        _sh(
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            *base,
            f"{d}/img.qcow2",
            str(size),
        )

    def batch() -> list[str]:
        out, reads = [], []
        for _ in range(rnd.randint(4, 10)):
            off, length = span()
            kind = rnd.random()
            if kind < 0.45:
                out.append(f"write -P {rnd.randint(1, 255)} {off} {length}")
            elif kind < 0.65:
                out.append(f"write -z {off} {length}")
            elif kind < 0.8:
                out += [f"write -z -u {off} {length}", "flush"]
            else:
                out += [f"discard {off} {length}", "flush"]
            reads.append(f"read -v {off} {min(length, 4096)}")
        return out + reads

    return Case(
        setup,
        lambda d: _add_qcow2(d, discard=discard),
        "q",
        [batch(), batch()],
        ["img.qcow2"],
        nbd_map=True,
    )


#: seeds ``make test`` runs; ``TXGRAPH_RANDOM_GUEST_IO=N`` runs N more from 1000. The
#: opt-in seeds pin fixes against QSD: placement after gathered clusters (1044,
#: 1118), discard of a hostless mixed cluster (1263), the unclipped file discard (1273),
#: a raw backing read with ``preadv`` (1026: the backing's map; 1211, 1409: what a zero
#: write allocates above it)
_RANDOM_SEEDS = sorted(
    {*range(8), 1026, 1044, 1118, 1211, 1263, 1273, 1409}
    | set(range(1000, 1000 + int(os.environ.get("TXGRAPH_RANDOM_GUEST_IO", "0"))))
)


@pytest.mark.parametrize("seed", _RANDOM_SEEDS)
def test_random_guest_io_matches_qsd(seed: int) -> None:
    _assert_same(random_case(seed))


@pytest.mark.parametrize("name", sorted(CASES))
def test_runtime_semantics_match_qsd(name: str) -> None:
    _assert_same(CASES[name])


def _assert_same(case: Case) -> None:
    qsd = _run(case, QSD)
    tx = _run(case, TxgraphDaemon)
    assert all("error" not in reply for _c, reply in qsd["replies"]), qsd["replies"]
    assert tx["replies"] == qsd["replies"]
    assert tx["io"] == qsd["io"]
    assert tx["maps"] == qsd["maps"]
    assert tx["files"] == qsd["files"]
    assert tx.get("nbd_map") == qsd.get("nbd_map")
    assert ("nbd_map" in qsd) == case.nbd_map


def test_scenarios_are_not_vacuous() -> None:
    """The zero-write scenarios really differ: detect-zeroes changes what is allocated."""
    on = _run(CASES["detect_zeroes_on"], TxgraphDaemon)["maps"]
    off = _run(CASES["detect_zeroes_off"], TxgraphDaemon)["maps"]
    assert on != off
    assert os.path.exists(shutil.which("qemu-io") or "")


def _nbd_child_add(peer: type[QMPProcess], auto_read_only: bool | None) -> dict[str, Any]:
    """blockdev-add raw over an nbd child that reaches a read-only ``qemu-nbd -r`` export."""
    d = tempfile.mkdtemp(prefix="semantics-")
    server: subprocess.Popen[bytes] | None = None
    try:
        _sh("qemu-img", "create", "-q", "-f", "raw", f"{d}/ro.raw", "1M")
        sock = f"{d}/qnbd.sock"
        server = subprocess.Popen(
            ["qemu-nbd", "--persistent", "-r", "-f", "raw", "-k", sock, f"{d}/ro.raw"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ready = subprocess.run(
            ["qemu-io", "-r", "-f", "raw", f"nbd+unix:///?socket={sock}", "-c", "read 0 512"],
            capture_output=True,
            timeout=60,
        )
        for _ in range(200):  # the socket appears when qemu-nbd listens; bounded retry
            if ready.returncode == 0:
                break
            ready = subprocess.run(
                ["qemu-io", "-r", "-f", "raw", f"nbd+unix:///?socket={sock}", "-c", "read 0 512"],
                capture_output=True,
                timeout=60,
            )
        assert ready.returncode == 0, ready.stderr
        child: dict[str, Any] = {"driver": "nbd", "server": {"type": "unix", "path": sock}}
        if auto_read_only is not None:
            child["auto-read-only"] = auto_read_only
        with peer(workdir=d) as proc:  # type: ignore[call-arg]
            add = proc.execute("blockdev-add", {"driver": "raw", "node-name": "r", "file": child})
            nodes = proc.execute("query-named-block-nodes", {"flat": True}).get("return", [])
            return {"add": add, "ro": sorted((n["drv"], n["ro"]) for n in nodes)}
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("auto_read_only", [None, False, True])
def test_auto_read_only_of_an_nbd_child_matches_qsd(auto_read_only: bool | None) -> None:
    """The inherited ``auto-read-only`` default is the string "off": it must not mean on."""
    qsd = _nbd_child_add(QSD, auto_read_only)
    assert _nbd_child_add(TxgraphDaemon, auto_read_only) == qsd
    if auto_read_only is not True:
        assert "error" in qsd["add"]
