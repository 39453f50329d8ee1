"""The merged chain read map and batched translation against QEMU's own reads.

Chains are made by qemu-img/qemu-io (data, zero clusters, compressed clusters,
a raw bottom, layers of different sizes); every read through the merged view
must equal ``qemu-img convert`` of the same top image byte for byte, and equal
the plain per-layer recursion. Staleness: a swapped backing, a layer reopened
writable, a reset slot must never be served from an old view.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
from imgkit import open_chain, open_node, qemu_img, qemu_io

from txgraph.io.qcow2.l2map import UNALLOC

MiB = 1 << 20


def _chain(tmp: Path) -> Path:
    base = tmp / "base.raw"
    qemu_img("create", "-q", "-f", "raw", base, "6M")
    qemu_io(base, "write -q -P 0x11 0 6M", fmt="raw")
    mid = tmp / "mid.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base.name, "-F", "raw", mid, "5M")
    qemu_io(mid, "write -q -P 0x22 64k 640k", "write -q -z 1M 192k", "write -q -P 0x23 3M 64k")
    comp_src = tmp / "csrc.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", comp_src, "8M")
    qemu_io(comp_src, "write -q -P 0x44 2M 128k")
    top = tmp / "top.qcow2"
    qemu_img("convert", "-q", "-c", "-O", "qcow2", comp_src, top)  # compressed at 2M
    qemu_img("rebase", "-q", "-u", "-b", mid.name, "-F", "qcow2", top)
    qemu_io(top, "write -q -P 0x33 128k 64k", "write -q -P 0x34 4160k 200k", "write -q -z 320k 64k")
    return top


def _reference(tmp: Path, top: Path) -> bytes:
    out = tmp / "ref.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", top, out)
    return out.read_bytes()


def test_merged_reads_equal_qemu_and_the_plain_path(tmp_path: Path) -> None:
    top_img = _chain(tmp_path)
    ref = _reference(tmp_path, top_img)
    node: Any = open_chain(top_img)
    size = node.size()
    assert len(ref) == size
    rnd = random.Random(7)
    buf = memoryview(bytearray(2 * MiB))
    plain = memoryview(bytearray(2 * MiB))
    for _ in range(400):
        off = rnd.randrange(0, size - 1)
        n = rnd.randrange(1, min(2 * MiB, size - off) + 1)
        node.readinto(off, buf[:n])
        assert bytes(buf[:n]) == ref[off : off + n], (off, n)
        node._readinto(off, plain[:n], zeroed=False)
        assert bytes(plain[:n]) == ref[off : off + n]
        assert node.read(off, n) == ref[off : off + n]
    # the view served requests (below the mid layer's 5M end, away from the compressed
    # cluster), and requests past 5M or through the compressed one fell back
    assert node.chain_map.served > 100
    served = node.chain_map.served
    node.readinto(2 * MiB, buf[: 2 * 65536])
    node.readinto(5 * MiB, buf[:65536])
    assert node.chain_map.served == served


def test_a_swapped_backing_is_seen_at_once(tmp_path: Path) -> None:
    top_img = _chain(tmp_path)
    node: Any = open_chain(top_img)
    buf = memoryview(bytearray(MiB))
    node.readinto(0, buf)
    assert bytes(buf[64 << 10 : 65 << 10]) == b"\x22" * 1024  # from mid
    other = tmp_path / "other.raw"
    qemu_img("create", "-q", "-f", "raw", other, "8M")
    qemu_io(other, "write -q -P 0x77 0 8M", fmt="raw")
    f = open_node("file", {"filename": str(other)}, read_only=True)
    node.children["backing"] = open_node("raw", {}, {"file": f}, True)  # the Runtime's swap
    node.readinto(0, buf)
    assert bytes(buf[64 << 10 : 65 << 10]) == b"\x77" * 1024
    assert bytes(buf[128 << 10 : 129 << 10]) == b"\x33" * 1024  # top's own data stays


def test_a_layer_reopened_writable_is_not_merged(tmp_path: Path) -> None:
    top_img = _chain(tmp_path)
    node: Any = open_chain(top_img)
    buf = memoryview(bytearray(MiB))
    at = 2560 << 10  # unallocated in top and mid: the raw base's 0x11 until mid writes there
    node.readinto(at, buf)
    assert bytes(buf[:1024]) == b"\x11" * 1024
    served = node.chain_map.served
    mid = node.children["backing"]
    mid_file = mid.children["file"]
    mid_file.reopen(mid_file.options, False)  # a commit job's reopen, children first
    mid.reopen(mid.options, False)
    try:
        mid.write(at, b"\x99" * 65536)
        node.readinto(at, buf)
        assert node.chain_map.served == served
        assert bytes(buf[:1024]) == b"\x99" * 1024
    finally:
        mid.reopen(mid.options, True)
        mid_file.reopen(mid_file.options, True)
    node.readinto(at, buf)  # read-only again: merged, and the new data is in the view
    assert node.chain_map.served == served + 1
    assert bytes(buf[:1024]) == b"\x99" * 1024


def test_concurrent_readers_of_one_chain(tmp_path: Path) -> None:
    """Stress: readers share one ChainMap (built by whichever comes first)."""
    top_img = _chain(tmp_path)
    ref = _reference(tmp_path, top_img)
    node: Any = open_chain(top_img)
    errors: list[str] = []

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        buf = memoryview(bytearray(MiB))
        for _ in range(150):
            off = rnd.randrange(0, 4 * MiB)
            n = rnd.randrange(1, MiB)
            node.readinto(off, buf[:n])
            if bytes(buf[:n]) != ref[off : off + n]:
                errors.append(f"{off}+{n}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_batched_translation_equals_the_scalar_lookup(tmp_path: Path) -> None:
    top_img = _chain(tmp_path)
    node: Any = open_chain(top_img)
    size = node.size()
    rng = np.random.default_rng(5)
    offs = rng.integers(0, size + 4 * MiB, 20_000, dtype=np.uint64)
    offs = np.concatenate([offs, np.array([2**63, 2**64 - 1, size, size - 1], dtype=np.uint64)])
    got = node.translate(offs)
    cb = node.cluster_bits
    for g, h in zip(offs.tolist(), got.tolist(), strict=True):
        code = node.map.code(g >> cb) if g < size else UNALLOC
        want = code + (g & ((1 << cb) - 1)) if code >= 0 else code
        assert h == want, g
    signed = node.translate(offs[:100].astype(np.int64))
    assert signed.tolist() == got[:100].tolist()
    # a slot the writer resets is looked up again, not answered from the old flat codes
    node.map.reset_slot(0)
    assert node.map.flat_ok is not None and not node.map.flat_ok[0]
    assert int(node.translate(np.array([128 << 10], dtype=np.int64))[0]) == node.map.code(2)
    assert node.map.flat_ok[0]


def test_a_layer_that_is_never_read_fills_no_flat_map(tmp_path: Path) -> None:
    """A deep chain's open compiles nothing below the top: the flat codes of a small map
    are made by its first lookup, and then answer as the scalar lookup does."""
    img = tmp_path / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(img), "4M")
    qemu_io(img, "write -P 0x11 64k 64k")
    node: Any = open_chain(img)
    assert node.map.flat is None
    got = node.translate(np.array([0, 64 << 10, 100 << 10], dtype=np.int64)).tolist()
    assert node.map.flat is not None
    assert got == [UNALLOC, node.map.code(1), node.map.code(1) + (36 << 10)]
