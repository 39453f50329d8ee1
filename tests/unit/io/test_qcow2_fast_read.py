"""The one-cluster read closure (:mod:`txgraph.io.qcow2.fast_read`) against its checks.

The closure binds the L2 map, the virtual size and the file child once; every
test here changes one of those under it and asks for what QEMU reads then
(``qemu-img convert`` of the image as it is on disk):

* it serves: after the first small read the general method is not called again
  for one-cluster data reads, and every read equals QEMU's;
* a resize makes a new map: the grown area reads zeros, old data stays, and the
  closure is bound to the new map;
* a child swapped under the node (as the Runtime's edge swap does) reads the new
  child's data, never the old file's mapping;
* a node made unusable by fatal corruption fails with ENOMEDIUM, not data;
* after close the closure is gone (it refers to the node).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from imgkit import open_node, open_qcow2, qemu_img, qemu_io

from txgraph.errors import IOFailure
from txgraph.io.buffers import aligned_buffer
from txgraph.io.qcow2.driver import Qcow2Node
from txgraph.io.truncate import truncate

KiB, MiB = 1 << 10, 1 << 20
CLUSTER = 64 * KiB
SIZE = 4 * MiB


def _image(tmp: Path, name: str, pattern_base: int) -> Path:
    img = tmp / name
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size={CLUSTER}", img, str(SIZE))
    cmds = [f"write -q -P {pattern_base + i} {i * CLUSTER} {CLUSTER}" for i in range(0, 40, 2)]
    qemu_io(img, *cmds, "write -q -z 128k 64k")  # cluster 2: a zero cluster
    return img


def _qemu_read(img: Path, tmp: Path) -> bytes:
    ref = tmp / f"{img.stem}.ref.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", img, ref)
    return ref.read_bytes()


def _small_reads(seed: int, size: int, count: int = 300) -> list[tuple[int, int]]:
    """One-cluster reads (data, zero and unallocated clusters) and a few that span two."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        length = rnd.choice([1, 512, 4 * KiB, 4 * KiB + 5, 2 * CLUSTER])
        start = rnd.randrange(size - length + 1)
        out.append((start, length))
    return out


def _read(node: Any, offset: int, length: int) -> bytes:
    buf = aligned_buffer(length)
    node.readinto(offset, buf)
    return bytes(buf)


def _with_closure(img: Path, read_only: bool) -> Qcow2Node:
    """``img`` opened, with the closure installed: the first small read compiles the
    L2 slot (and maps the file), the second installs it."""
    node = open_qcow2(img, read_only=read_only)
    assert isinstance(node, Qcow2Node)
    _read(node, 0, 4 * KiB)
    _read(node, 0, 4 * KiB)
    assert "readinto" in vars(node)
    return node


class _CountingGeneral:
    """Wraps ``Qcow2Node.readinto`` before a node is opened, so the closure binds the
    wrapper as its general path and the calls that fall back can be counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original: Callable[[Qcow2Node, int, memoryview], None] = Qcow2Node.readinto

        def counted(node: Qcow2Node, offset: int, out: memoryview) -> None:
            self.calls += 1
            original(node, offset, out)

        monkeypatch.setattr(Qcow2Node, "readinto", counted)


def test_closure_serves_one_cluster_reads_as_qemu_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = _image(tmp_path, "a.qcow2", 0x20)
    ref = _qemu_read(img, tmp_path)
    general = _CountingGeneral(monkeypatch)
    node = open_qcow2(img, read_only=True)
    assert "readinto" not in vars(node)
    _read(node, 0, 4 * KiB)  # compiles the L2 slot (and maps the file)
    _read(node, 0, 4 * KiB)  # installs the closure
    assert "readinto" in vars(node)
    before = general.calls
    data_reads = 0
    for offset, length in _small_reads(7, SIZE):
        assert _read(node, offset, length) == ref[offset : offset + length], (offset, length)
        c = offset // CLUSTER
        if c == (offset + length - 1) // CLUSTER and c < 40 and c % 2 == 0 and c != 2:
            data_reads += 1
    assert data_reads > 50
    # only reads that are not one data cluster reach the general path
    assert general.calls - before == 300 - data_reads


def test_resize_rebinds_to_the_new_map(tmp_path: Path) -> None:
    img = _image(tmp_path, "a.qcow2", 0x30)
    node = _with_closure(img, read_only=False)
    old_map = node.map
    new_size = SIZE + 64 * MiB  # needs a larger L1 table: a new map
    truncate(node, new_size)
    assert node.map is not old_map
    # only the new map knows cluster 0 reads zeros now; the old one still says data
    node.write_zeroes(0, CLUSTER)
    assert _read(node, 0, 4 * KiB) == bytes(4 * KiB)
    node.write(SIZE + 3 * CLUSTER, b"\x5a" * 4 * KiB)
    node.flush()
    reads = _small_reads(3, new_size)
    reads += [(SIZE + 3 * CLUSTER, 4 * KiB), (SIZE + 9 * CLUSTER + 17, 4 * KiB)]
    got = [_read(node, o, n) for o, n in reads]
    assert node._one_cluster_for is not None and node._one_cluster_for[1] is node.map
    node.close()
    ref = _qemu_read(img, tmp_path)
    assert len(ref) == new_size
    for (offset, length), data in zip(reads, got, strict=True):
        assert data == ref[offset : offset + length], (offset, length)


def test_swapped_file_child_reads_the_new_child(tmp_path: Path) -> None:
    img = _image(tmp_path, "a.qcow2", 0x40)
    other = tmp_path / "b.qcow2"
    shutil.copyfile(img, other)
    rewrite = [f"write -q -P {0x70 + i} {i * CLUSTER} {CLUSTER}" for i in range(4, 40, 2)]
    qemu_io(other, *rewrite)  # the same clusters, other data: the same metadata
    ref_other = _qemu_read(other, tmp_path)
    node = _with_closure(img, read_only=True)
    assert _read(node, 4 * CLUSTER, 4 * KiB) == bytes([0x44]) * 4 * KiB
    # the Runtime's edge swap (``_swap_undoable``) stores into the same children dict;
    # both images have the same metadata layout, so the map stays valid
    node.children["file"] = open_node("file", {"filename": str(other)}, read_only=True)
    for offset, length in _small_reads(11, SIZE):
        assert _read(node, offset, length) == ref_other[offset : offset + length]
    assert node._one_cluster_for is not None
    assert node._one_cluster_for[0] is node.children["file"]


def test_dead_node_fails_with_no_medium(tmp_path: Path) -> None:
    img = _image(tmp_path, "a.qcow2", 0x50)
    node = _with_closure(img, read_only=False)
    node.signal_corruption("test: made unusable on purpose")
    assert node.dead
    with pytest.raises(IOFailure) as e:
        _read(node, 4 * CLUSTER, 4 * KiB)
    assert e.value.desc == "No medium found"


def test_close_drops_the_closure(tmp_path: Path) -> None:
    img = _image(tmp_path, "a.qcow2", 0x60)
    node = _with_closure(img, read_only=True)
    node.close()
    assert "readinto" not in vars(node)
    assert node._one_cluster_for is None
