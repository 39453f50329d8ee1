"""The flushes QEMU 7.2's image formats make inside a guest write, seen by blkdebug.

Each test opens a real image (made by qemu-img) as ``fmt`` over a blkdebug node
over its file, with an ``inject-error`` rule on ``flush`` requests armed by
``flush_to_os`` - raised on blkdebug only by a flush of the format node
(``bdrv_co_flush``'s ``BLKDBG_EVENT(primary_child, ...)``). Once armed, it fails
every flush of the blkdebug node that has writes to flush. So an allocating
write fails with EIO exactly when the format flushes its file inside the write,
as QEMU does (the same sequences run against qemu-storage-daemon in
tests/differential/test_blkdebug_flush_events.py, whose ``os-flush`` cases give
these results on QSD 7.2). Without the flushes the writes succeed.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from txgraph.errors import IOFailure
from txgraph.io.runtime import Runtime

_EIO = 5
#: armed by a flush of the format node, fails the blkdebug node's own flushes
_OS_FLUSH = {"inject-error": [{"event": "flush_to_os", "errno": _EIO, "iotype": "flush"}]}
#: armed by flush_to_disk, fails every later read and write
_DISK_RW = {"inject-error": [{"event": "flush_to_disk", "errno": _EIO}]}


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Any]:
    runtimes: list[Runtime] = []

    def open_fmt(fmt: str, rules: dict[str, Any]) -> tuple[Any, Path]:
        img = tmp_path / f"i.{fmt}"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", fmt, str(img), "1M"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        rt = Runtime()
        runtimes.append(rt)
        rt.open_node("f", "file", {"filename": str(img)}, {}, False)
        rt.open_node("dbg", "blkdebug", rules, {"image": "f"}, False)
        rt.open_node("fmt", fmt, {}, {"file": "dbg"}, False)
        return rt.node("fmt"), img

    yield open_fmt
    for rt in runtimes:
        rt.close_all()


def _errno(fn: Any, *args: Any) -> int:
    try:
        fn(*args)
    except IOFailure as e:
        return e.errno
    return 0


@pytest.mark.parametrize(
    ("fmt", "where"),
    [
        ("qcow", "get_cluster_offset: bdrv_co_pwrite_sync of the L1 entry"),
        ("vpc", "alloc_block: bdrv_pwrite_sync of the block bitmap"),
        ("vmdk", "vmdk_L2update: bdrv_flush(extent->file->bs)"),
        ("qcow2", "l2_allocate: qcow2_cache_flush(refcount_block_cache)"),
    ],
)
def test_allocating_write_flushes_the_file(opened: Any, fmt: str, where: str) -> None:
    """A first flush arms the rule (the file is clean: it passes); the allocating
    write then fails at its flush of the file (``where``)."""
    node, _ = opened(fmt, _OS_FLUSH)
    assert _errno(node.flush) == 0
    assert _errno(node.write, 0, b"\x5a" * 4096) == _EIO, where


@pytest.mark.parametrize(
    ("fmt", "where"),
    [
        ("qed", "qed_write_table with flush: bdrv_co_flush(s->bs) after a new L2 table"),
        ("vhdx", "vhdx_log_write_and_flush: bdrv_flush(bs) before the log entry"),
    ],
)
def test_allocating_write_flushes_the_format_node(opened: Any, fmt: str, where: str) -> None:
    """No flush before: the write's own flush of the format node raises flush_to_os
    (arming the rule) and then flushes the dirty file, which fails."""
    node, _ = opened(fmt, _OS_FLUSH)
    assert _errno(node.write, 0, b"\x33" * 4096) == _EIO, where


def test_parallels_open_leaves_the_file_flushed(opened: Any) -> None:
    """``parallels_update_header`` at a read-write open is ``bdrv_pwrite_sync``: the
    guest's first flush finds nothing to flush in the file and passes."""
    node, _ = opened("parallels", _OS_FLUSH)
    assert _errno(node.flush) == 0
    assert _errno(node.flush) == 0


def test_qcow_failed_l2_update_keeps_the_cached_entry(opened: Any) -> None:
    """QEMU updates qcow's cached L2 entry before its synced write; the entry names a
    cluster the file was truncated to hold, so the failed write reads back zeroes."""
    node, img = opened("qcow", _OS_FLUSH)
    node.write(0, b"\x11" * 4096)  # allocates the L2 table and cluster 0 (rule not armed)
    assert _errno(node.flush) == _EIO  # arms; the data written since is flushed: fails
    assert _errno(node.write, 8192, b"\x22" * 4096) == _EIO
    assert node.read(8192, 4096) == bytes(4096)
    assert img.stat().st_size % 4096 == 0  # bdrv_co_truncate to the new cluster's end


def test_qcow2_flush_writes_l2_tables_before_flush_to_disk(opened: Any) -> None:
    """``qcow2_co_flush_to_os`` flushes the file for the refcount cache (not the flush to
    disk) and writes the L2 table; only then ``flush_to_disk`` arms the rule, which
    fails the flush of the file: the L2 entry of the first data cluster is on disk."""
    node, img = opened("qcow2", _DISK_RW)
    assert _errno(node.write, 0, b"\x5a" * 4096) == 0
    assert _errno(node.flush) == _EIO
    raw = img.read_bytes()
    l1 = struct.unpack_from(">Q", raw, 0x28)[0]  # l1_table_offset
    l2 = struct.unpack_from(">Q", raw, l1)[0] & 0x00FFFFFFFFFFFE00
    (entry,) = struct.unpack_from(">Q", raw, l2)
    assert entry & (1 << 63) and entry & 0x00FFFFFFFFFFFE00 > l2, hex(entry)


def test_qcow2_new_refcount_block_is_flushed_inside_the_write(tmp_path: Path) -> None:
    """``alloc_refcount_block``: with 512-byte clusters one refcount block covers 128 KiB
    of the file; 124 KiB of guest data (written by qemu-io) fill it, a flush arms the
    rule, and the next write (inside an existing L2 table: no ``l2_allocate``) needs a
    new refcount block, which QEMU writes and flushes (``qcow2_cache_flush``) inside the
    write. The block goes after the write's whole run of clusters, where
    ``qcow2_alloc_clusters`` puts it."""
    img = tmp_path / "c512.qcow2"
    for cmd in (
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(img), "1M"],
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x40 0 124k", str(img)],
    ):
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    rt = Runtime()
    try:
        rt.open_node("f", "file", {"filename": str(img)}, {}, False)
        rt.open_node("dbg", "blkdebug", _OS_FLUSH, {"image": "f"}, False)
        rt.open_node("fmt", "qcow2", {}, {"file": "dbg"}, False)
        node = rt.node("fmt")
        assert _errno(node.flush) == 0  # nothing written: arms the rule and passes
        assert _errno(node.write, 31 * 4096, b"\x7e" * 4096) == _EIO
    finally:
        rt.close_all()
    raw = img.read_bytes()
    reftable = struct.unpack_from(">Q", raw, 48)[0]
    # the new block (describing itself) was written after the run 256..263; its flush
    # failed, so it was never hooked into the refcount table (as on QSD 7.2)
    assert struct.unpack_from(">H", raw, 264 * 512 + (264 - 256) * 2)[0] == 1
    assert struct.unpack_from(">Q", raw, reftable + 8)[0] == 0
