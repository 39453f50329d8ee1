"""The qcow2 one-cluster read, which inlines ``FileNode.readinto``'s small-read branch.

A random small read of a plain qcow2 image copies straight out of the file node's
mapping without calling the file node (``inlinable_file``). That copy must keep the
file node's rules:

* the bytes: every one-cluster read equals what ``qemu-img convert`` reads, for
  read-only and writable opens, and through blkdebug (whose reads are not inlined);
* a file truncated by another process reads zeros past its new end, as QEMU reads
  it, and never faults the process (run in a child process, so a SIGBUS shows as a
  failure and not as a dead test run);
* requests of ``PREADV_MIN`` and more stay ``preadv``'s, which leave the page cache as
  QEMU's reads do; copied from the mapping they would fault its pages in instead.
"""

from __future__ import annotations

import random
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from imgkit import open_node, open_qcow2, qemu_img, qemu_io

from txgraph.io.buffers import aligned_buffer
from txgraph.io.drivers.file import PREADV_MIN, inlinable_file

KiB, MiB = 1 << 10, 1 << 20
CLUSTER = 128 * KiB
SIZE = 4 * MiB


def _image(tmp: Path) -> tuple[Path, bytes]:
    """Data in most clusters (distinct patterns), a zero cluster and unallocated ones."""
    img = tmp / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size={CLUSTER}", img, str(SIZE))
    cmds = [f"write -q -P {0x10 + i} {i * CLUSTER} {CLUSTER}" for i in range(0, 30, 1) if i != 7]
    qemu_io(img, *cmds, "write -q -z 256k 128k")
    ref = tmp / "ref.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", img, ref)
    return img, ref.read_bytes()


def _requests(seed: int) -> list[tuple[int, int]]:
    """Reads inside one cluster: sub-page, page, large, whole-cluster and unaligned."""
    rnd = random.Random(seed)
    out = []
    for _ in range(400):
        length = rnd.choice([1, 512, 4 * KiB, 4 * KiB + 3, PREADV_MIN - 1, PREADV_MIN, CLUSTER])
        c = rnd.randrange(SIZE // CLUSTER)
        start = c * CLUSTER + rnd.randrange(CLUSTER - length + 1)
        out.append((start, length))
    return out


@pytest.mark.parametrize("how", ["read-only", "writable", "blkdebug"])
def test_one_cluster_reads_equal_qemu(tmp_path: Path, how: str) -> None:
    img, ref = _image(tmp_path)
    if how == "blkdebug":
        f = open_node("file", {"filename": str(img)}, read_only=True)
        dbg = open_node("blkdebug", {}, {"image": f}, read_only=True)
        node = open_node("qcow2", {}, {"file": dbg}, read_only=True)
        assert inlinable_file(dbg) is None
    else:
        node = open_qcow2(img, read_only=how == "read-only")
        assert inlinable_file(node.children["file"]) is node.children["file"]
    for offset, length in _requests(1):
        buf = aligned_buffer(length)
        node.readinto(offset, buf)
        assert bytes(buf) == ref[offset : offset + length], (offset, length)


_TRUNCATED_READER = """
import os, sys
sys.path.insert(0, sys.argv[3])
from imgkit import open_qcow2
from txgraph.io.buffers import aligned_buffer
img, offset = sys.argv[1], int(sys.argv[2])
node = open_qcow2(img, read_only=True)
buf = aligned_buffer(4096)
node.readinto(offset, buf)
node.readinto(offset, buf)  # the first small read mapped the file; this one copies from it
assert bytes(buf) != bytes(4096)
os.truncate(node.children["file"].filename, int(sys.argv[4]))  # "another process"
node.readinto(offset, buf)
sys.stdout.write(bytes(buf).hex())
"""


def test_truncated_underneath_reads_zeros_like_qemu(tmp_path: Path) -> None:
    img, _ = _image(tmp_path)
    length = img.stat().st_size
    offset = 29 * CLUSTER + 8 * KiB  # the last data cluster written, at the file's end
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _TRUNCATED_READER,
            str(img),
            str(offset),
            str(Path(__file__).parent),
            str(length - CLUSTER),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    ours = bytes.fromhex(res.stdout)
    ref = tmp_path / "truncated.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", img, ref)  # QEMU's read of it
    assert ours == ref.read_bytes()[offset : offset + 4096] == bytes(4096)


def _thread_faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def test_large_one_cluster_reads_stay_preadv(tmp_path: Path) -> None:
    """Once the file is mapped, a small read copies from the mapping (faulting its
    pages in) and a ``PREADV_MIN`` read does not touch it (no fault in this thread)."""
    img, ref = _image(tmp_path)
    node = open_qcow2(img, read_only=True)
    small, large = aligned_buffer(4 * KiB), aligned_buffer(PREADV_MIN)
    node.readinto(0, small)
    node.readinto(0, small)  # mapped now
    node.readinto(0, large)  # the buffer's own pages are faulted in now
    starts = [c * CLUSTER for c in range(10, 18)]  # clusters no read touched yet
    by_preadv = by_mapping = 0
    for s in starts:
        before = _thread_faults()
        node.readinto(s, large)
        by_preadv += _thread_faults() - before
        assert bytes(large) == ref[s : s + PREADV_MIN]
    for s in starts:
        before = _thread_faults()
        node.readinto(s + CLUSTER // 2, small)  # fresh pages of the same clusters
        by_mapping += _thread_faults() - before
        assert bytes(small) == ref[s + CLUSTER // 2 : s + CLUSTER // 2 + 4 * KiB]
    assert by_mapping >= len(starts) > by_preadv, (by_mapping, by_preadv)
