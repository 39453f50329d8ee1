"""Compressed clusters: QEMU's inflate semantics, and the parallel inflate of one request.

QEMU inflates a cluster with window bits -12 in one call; zlib then accepts a
back-reference anywhere in the output so far, so a hand-made stream with a
20 KiB distance reads fine in QEMU 7.2 (checked with qemu-img here). txgraph
must read it alike, and must fail the same reads QEMU fails.
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from imgkit import open_chain, qemu_img, run

from txgraph.errors import IOFailure
from txgraph.io.qcow2.compress import PARALLEL_MIN_STORED, decompress_many

CS = 65536


def _point_cluster0_at(img: Path, stream: bytes) -> None:
    """Append ``stream`` and make guest cluster 0 a compressed cluster reading it."""
    with open(img, "r+b") as f:
        h = f.read(104)
        l1 = struct.unpack(">Q", h[40:48])[0]
        f.seek(l1)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        end = -(-f.seek(0, 2) // CS) * CS
        f.seek(end)
        f.write(stream + bytes(-len(stream) % 512 + 512))
        nsec = -(-len(stream) // 512)
        f.seek(l2)
        f.write(struct.pack(">Q", (1 << 62) | ((nsec - 1) << (62 - 8)) | end))


def _compressed_image(tmp: Path) -> Path:
    src = tmp / "src.raw"
    qemu_img("create", "-q", "-f", "raw", src, "64K")
    src.write_bytes(bytes(range(256)) * 256)
    img = tmp / "c.qcow2"
    qemu_img("convert", "-q", "-c", "-O", "qcow2", src, img)
    return img


def _qemu_raw(tmp: Path, img: Path) -> bytes | None:
    out = tmp / "got.raw"
    try:
        run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, out)
    except AssertionError:
        return None
    return out.read_bytes()


def test_far_back_references_read_as_in_qemu(tmp_path: Path) -> None:
    rnd = os.urandom(8192)
    want = rnd + bytes(12288) + rnd  # the second copy refers 20 KiB back
    want += bytes(CS - len(want))
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = co.compress(want) + co.flush()
    img = _compressed_image(tmp_path)
    _point_cluster0_at(img, stream)
    assert _qemu_raw(tmp_path, img) == want  # QEMU 7.2 reads it
    node: Any = open_chain(img)
    assert node.read(0, CS) == want


def test_a_broken_stream_fails_in_both(tmp_path: Path) -> None:
    img = _compressed_image(tmp_path)
    _point_cluster0_at(img, b"\xff" * 600)  # not deflate
    assert _qemu_raw(tmp_path, img) is None
    node: Any = open_chain(img)
    with pytest.raises(IOFailure):
        node.read(0, CS)


def test_parallel_inflate_equals_qemu_and_keeps_errors(tmp_path: Path) -> None:
    # 16 symbols per byte: each cluster stores about 32 KiB, long enough to go to the pool
    src = tmp_path / "s.raw"
    sixteen = bytes(b"0123456789abcdef"[i & 15] for i in range(256))
    src.write_bytes(random.Random(7).randbytes(4 << 20).translate(sixteen))
    img = tmp_path / "c.qcow2"
    qemu_img("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", src, img)
    want = _qemu_raw(tmp_path, img)
    assert want is not None
    node: Any = open_chain(img)
    extents = [node.map.compressed_extent(node.map.raw_entry(c)[0]) for c in range(16)]
    assert all(length >= PARALLEL_MIN_STORED for _, length in extents)
    pooled = decompress_many(0, extents, node._fread, CS)
    assert pooled == [want[c * CS : (c + 1) * CS] for c in range(16)]
    assert node.read(0, 4 << 20) == want  # one request, many compressed clusters
    node.cache.clear()
    buf = memoryview(bytearray(1 << 20))
    for off in range(0, 4 << 20, 1 << 20):
        node.readinto(off, buf)
        assert bytes(buf) == want[off : off + (1 << 20)]
    # a corrupt stream among them: the request fails with EIO, as QEMU's read does
    _point_cluster0_at(img, b"\xff" * 600)
    assert _qemu_raw(tmp_path, img) is None
    node2: Any = open_chain(img)
    with pytest.raises(IOFailure):
        node2.read(0, 1 << 20)
    assert node2.read(CS, 1 << 20) == want[CS : CS + (1 << 20)]


def test_references_across_the_32k_output_block_read_as_in_qemu(tmp_path: Path) -> None:
    """A match 16 KiB back that starts past 32 KiB of output: QEMU's one inflate call
    reads it; Python's ``zlib.decompressobj(-12)`` refuses it (its second output block
    starts a second inflate call, and the 4 KiB window no longer reaches back)."""
    rnd = os.urandom(8192)
    want = os.urandom(24576) + rnd + os.urandom(8192) + rnd  # rnd again at 40 KiB
    want += os.urandom(CS - len(want))
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = co.compress(want) + co.flush()
    with pytest.raises(zlib.error, match="too far back"):
        zlib.decompressobj(-12).decompress(stream, CS)
    img = _compressed_image(tmp_path)
    _point_cluster0_at(img, stream)
    assert _qemu_raw(tmp_path, img) == want  # QEMU 7.2 reads it
    node: Any = open_chain(img)
    assert node.read(0, CS) == want
