"""Images written by txgraph pass ``qemu-img check`` and equal the same writes done by qemu-io.

For each image flavour, the same random workload (pattern writes, write-zeroes,
discards) is applied to two copies: one through txgraph's qcow2 driver and one
through ``qemu-io``. Then ``qemu-img check`` must find no corruption and no
leak on txgraph's copy, and ``qemu-img compare`` must find the two equal.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from interop_kit import open_chain, qemu_img, qemu_io

Flavour = Callable[[Path], Path]


def _mk(d: Path, name: str, size: int, opts: str = "", backing: Path | None = None) -> Path:
    p = d / name
    args: list[str | Path] = ["create", "-q", "-f", "qcow2"]
    if opts:
        args += ["-o", opts]
    if backing is not None:
        args += ["-b", backing.name, "-F", "qcow2"]
    qemu_img(*args, p, str(size))
    return p


def f_default(d: Path) -> Path:
    return _mk(d, "img.qcow2", 16 << 20)


def f_small_clusters_rb64(d: Path) -> Path:
    # 512-byte clusters with 64-bit refcounts: a refcount table cluster covers
    # only 2 MiB of host space, so the workload forces refcount table growth.
    return _mk(d, "img.qcow2", 16 << 20, "cluster_size=512,refcount_bits=64")


def f_refcount_bits_1(d: Path) -> Path:
    return _mk(d, "img.qcow2", 16 << 20, "cluster_size=4096,refcount_bits=1")


def f_v2(d: Path) -> Path:
    p = _mk(d, "img.qcow2", 16 << 20, "compat=0.10")
    qemu_io(p, "write -q -P 0x3 1M 3M")
    return p


def f_backing(d: Path) -> Path:
    base = _mk(d, "base.qcow2", 8 << 20)
    qemu_io(base, "write -q -P 0xbb 0 8M")
    return _mk(d, "img.qcow2", 16 << 20, "", backing=base)


def f_extl2(d: Path) -> Path:
    base = _mk(d, "base.qcow2", 16 << 20)
    qemu_io(base, "write -q -P 0xcc 0 16M")
    p = _mk(d, "img.qcow2", 16 << 20, "extended_l2=on", backing=base)
    qemu_io(p, "write -q -P 0x1 4096 2048", "write -q -z 65536 8192")
    return p


def f_snapshot(d: Path) -> Path:
    p = _mk(d, "img.qcow2", 16 << 20)
    qemu_io(p, "write -q -P 0x44 0 6M")
    qemu_img("snapshot", "-c", "s1", p)
    return p


def f_compressed(d: Path) -> Path:
    src = _mk(d, "src.qcow2", 16 << 20)
    qemu_io(src, "write -q -P 0x55 0 10M")
    p = d / "img.qcow2"
    qemu_img("convert", "-c", "-O", "qcow2", src, p)
    return p


def f_lazy(d: Path) -> Path:
    p = _mk(d, "img.qcow2", 16 << 20, "lazy_refcounts=on")
    qemu_io(p, "write -q -P 0x66 0 1M")
    return p


def f_data_file(d: Path) -> Path:
    return _mk(d, "img.qcow2", 16 << 20, f"data_file={d / 'img.data'}")


FLAVOURS: list[Flavour] = [
    f_default,
    f_small_clusters_rb64,
    f_refcount_bits_1,
    f_v2,
    f_backing,
    f_extl2,
    f_snapshot,
    f_compressed,
    f_lazy,
    f_data_file,
]


def _workload(seed: int, size: int, n: int = 50) -> list[tuple[str, int, int, int]]:
    rnd = random.Random(seed)
    ops = []
    for _ in range(n):
        off = rnd.randrange(size)
        ln = min(size - off, rnd.choice([1, 511, 4096, 65536, 100000, 1 << 20]))
        k = rnd.random()
        kind = "write" if k < 0.6 else "zero" if k < 0.8 else "discard"
        ops.append((kind, off, ln, rnd.randrange(1, 256)))
    return ops


def _qemu_cmd(op: tuple[str, int, int, int]) -> str:
    kind, off, ln, pat = op
    return {
        "write": f"write -q -P {pat} {off} {ln}",
        "zero": f"write -q -z {off} {ln}",
        "discard": f"discard -q {off} {ln}",
    }[kind]


def _check(img: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)


#: workloads per flavour: fixed seeds (a str hash would change with PYTHONHASHSEED from
#: run to run); three of them, since one 512-byte-cluster workload in four needed a
#: refcount block for a new refcount block's own refcount, which once landed on the same
#: cluster as that block
_SEEDS = range(3)


@pytest.mark.parametrize("seed", _SEEDS)
@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f.__name__ for f in FLAVOURS])
def test_writes_pass_check_and_match_qemu_io(flavour: Flavour, seed: int, tmp_path: Path) -> None:
    ours_dir, peer_dir = tmp_path / "ours", tmp_path / "peer"
    ours_dir.mkdir()
    img = flavour(ours_dir)
    shutil.copytree(ours_dir, peer_dir)
    peer = peer_dir / img.name
    if (peer_dir / "img.data").exists():  # the data file name in the header is absolute
        qemu_img("amend", "-f", "qcow2", "-o", f"data_file={peer_dir / 'img.data'}", peer)
    size = 16 << 20
    ops = _workload(zlib.crc32(flavour.__name__.encode()) + seed, size)
    node = open_chain(img, read_only=False)
    node.reopen({**node.options, "discard": "unmap"}, node.read_only)  # BDRV_O_UNMAP
    for kind, off, ln, pat in ops:
        if kind == "write":
            node.write(off, bytes([pat]) * ln)
        elif kind == "zero":
            node.write_zeroes(off, ln)
        else:
            node.discard(off, ln)
    node.flush()
    # txgraph's reads see its own writes before the image is closed ...
    mid = node.read(0, size)
    node.close()
    res = _check(img)
    assert res.returncode == 0, res.stdout + res.stderr
    qemu_io(peer, *[_qemu_cmd(op) for op in ops])
    cmp = subprocess.run(
        ["qemu-img", "compare", str(img), str(peer)], capture_output=True, text=True
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    # ... and they are what QEMU reads back.
    assert mid == open_chain(img).read(0, size)
