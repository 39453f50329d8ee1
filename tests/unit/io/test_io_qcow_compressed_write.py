"""Compressed cluster writes of txgraph's qcow (version 1) driver against ``qemu-io write -c``.

qemu-img makes qcow images of 4 KiB clusters (512 bytes with a backing file);
``qcow_co_pwritev_compressed`` takes whole clusters only, so a qcow of 64 KiB
clusters is written by hand here (its header is valid for ``qcow_open``). The
same compressed writes, one at a time, on two copies of it: one by ``qemu-io``,
one by :meth:`txgraph.io.formats.qcow.QcowNode.write_compressed`. The files
must be byte for byte the same (the streams appended unaligned at the end of
the file, the L2 entries with their lengths), and qemu-img must read back the
data that was written.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from imgkit import open_node, qemu_img, qemu_io

from txgraph.errors import IOFailure

pytestmark = pytest.mark.timeout(120)


def _qcow(path: Path, size: int, cluster_bits: int = 16, l2_bits: int = 13) -> None:
    """A qcow header (version 1, no backing, no encryption) and its zeroed L1 table."""
    l1_size = -(-size // (1 << (cluster_bits + l2_bits)))
    header = b"QFI\xfb" + struct.pack(
        ">IQIIQBBHIQ", 1, 0, 0, 0, size, cluster_bits, l2_bits, 0, 0, 48
    )
    path.write_bytes(header + bytes(8 * l1_size))


def _open(path: Path) -> object:
    return open_node("qcow", {}, {"file": open_node("file", {"filename": str(path)})})


def test_same_file_as_qemu_io(tmp_path: Path) -> None:
    ours, ref = tmp_path / "ours.qcow", tmp_path / "ref.qcow"
    _qcow(ours, 4 << 20)
    ref.write_bytes(ours.read_bytes())
    cs = 65536
    writes = [(0, "aa"), (3, "bb"), (1, "cc"), (40, "11"), (2, "5a")]
    node = _open(ours)
    for c, pat in writes:
        data = bytes([int(pat, 16)]) * cs
        node.write_compressed(c * cs, data)  # type: ignore[attr-defined]
        assert node.read(c * cs, cs) == data  # type: ignore[attr-defined]
    node.close()  # type: ignore[attr-defined]
    qemu_io(ref, *[f"write -c -P 0x{pat} {c * cs} {cs}" for c, pat in writes], fmt="qcow")
    assert ours.read_bytes() == ref.read_bytes()
    for c, pat in writes:
        qemu_io(ours, f"read -P 0x{pat} {c * cs} {cs}", fmt="qcow")
    mapped = qemu_img("map", "--output=json", "-f", "qcow", ours)
    assert '"offset"' not in mapped.split('"start": 0,')[1].split("}")[0]  # no host offset


def test_only_whole_clusters_and_incompressible_data_written_plain(tmp_path: Path) -> None:
    """A part of a cluster is EINVAL (what a backup's 64 KiB chunks meet on a 4 KiB-cluster
    qcow); random data does not shrink and becomes a normal, aligned cluster."""
    img = tmp_path / "a.qcow"
    qemu_img("create", "-q", "-f", "qcow", img, "1M")  # 4 KiB clusters
    node = _open(img)
    with pytest.raises(IOFailure) as err:
        node.write_compressed(0, bytes(65536))  # type: ignore[attr-defined]
    assert err.value.errno == 22
    node.write_compressed(4096, b"\x5a" * 4096)  # type: ignore[attr-defined]
    packed_end = img.stat().st_size
    assert packed_end % 4096 != 0  # the stream is appended unaligned
    rnd = random.Random(7).randbytes(4096)
    node.write_compressed(8192, rnd)  # type: ignore[attr-defined]
    assert node.read(8192, 4096) == rnd  # type: ignore[attr-defined]
    node.close()  # type: ignore[attr-defined]
    # the random cluster went in as a normal one: aligned, after the stream
    assert img.stat().st_size == -(-packed_end // 4096) * 4096 + 4096
    qemu_io(img, "read -P 0x5a 4096 4096", "read -P 0 0 4096", fmt="qcow")
