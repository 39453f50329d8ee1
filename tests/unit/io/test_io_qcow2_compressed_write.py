"""Compressed cluster writes of txgraph's qcow2 driver against ``qemu-io write -c``.

The same writes, in the same order, on two copies of one image: one by
``qemu-io -c 'write -c ...'`` (QEMU's ``qcow2_co_pwritev_compressed_part``),
one by :func:`txgraph.io.qcow2.compressed_write.write_compressed`. Written one
at a time, QEMU packs the streams exactly as txgraph does, so the files must be
byte for byte the same (streams, descriptors, refcounts); ``qemu-img check``
must be clean and count the compressed clusters.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from imgkit import open_qcow2, qemu_img, qemu_io

from txgraph.errors import IOFailure
from txgraph.io.qcow2.compressed_write import write_compressed

pytestmark = pytest.mark.timeout(120)

_RND = random.Random(5)


def _pattern(kind: str, n: int) -> bytes:
    if kind == "rnd":
        return _RND.randbytes(n)
    return bytes([int(kind, 16)]) * n


def _check(path: Path) -> dict[str, int]:
    res = subprocess.run(
        ["qemu-img", "check", "--output=json", str(path)], capture_output=True, text=True
    )
    out = json.loads(res.stdout)
    return {
        k: out.get(k, 0) for k in ("check-errors", "leaks", "corruptions", "compressed-clusters")
    }


@pytest.mark.parametrize(
    "opts",
    [
        "cluster_size=65536",
        "cluster_size=4096",
        "cluster_size=65536,compression_type=zstd",
        "cluster_size=65536,extended_l2=on",
        "cluster_size=65536,compat=0.10",
    ],
)
def test_same_file_as_qemu_io(tmp_path: Path, opts: str) -> None:
    """Streams packed one after the other (several per host cluster, one running into
    the next cluster), descriptors, L2 tables and refcounts: all as QEMU writes them."""
    ours, ref = tmp_path / "ours.qcow2", tmp_path / "ref.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, ours, "8M")
    shutil.copy(ours, ref)
    cs = int(json.loads(qemu_img("info", "--output=json", ours))["cluster-size"])
    writes = [(0, "aa"), (3, "bb"), (1, "cc"), (20, "aa"), (5, "11"), (2, "5a"), (9, "00")]
    node = open_qcow2(ours)
    for c, pat in writes:
        data = bytes([int(pat, 16)]) * cs
        write_compressed(node, c * cs, data)
        assert node.read(c * cs, cs) == data
    node.close()
    qemu_io(ref, *[f"write -c -P 0x{pat} {c * cs} {cs}" for c, pat in writes])
    assert _check(ours) == {
        "check-errors": 0,
        "leaks": 0,
        "corruptions": 0,
        "compressed-clusters": len(writes),
    }
    assert ours.read_bytes() == ref.read_bytes()


def test_incompressible_becomes_a_normal_cluster_and_no_overwrite(tmp_path: Path) -> None:
    img = tmp_path / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "4M")
    qemu_io(img, "write -P 0x77 1M 64k")
    node = open_qcow2(img)
    data = _pattern("rnd", 65536)
    write_compressed(node, 0, data)
    assert node.read(0, 65536) == data
    with pytest.raises(IOFailure) as err:
        write_compressed(node, 1 << 20, bytes(65536))  # allocated: compression never overwrites
    assert err.value.errno == 5
    with pytest.raises(IOFailure) as err:
        write_compressed(node, 512, bytes(65536))
    assert err.value.errno == 22
    node.close()
    assert _check(img) == {
        "check-errors": 0,
        "leaks": 0,
        "corruptions": 0,
        "compressed-clusters": 0,
    }
    qemu_io(img, "read -P 0x77 1M 64k")
