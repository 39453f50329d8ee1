"""qcow2 reads and info: images made by qemu-img/qemu-io, compared with QEMU's own view.

Every recipe builds an image with the real tools; txgraph must read it byte for
byte like ``qemu-img convert -O raw`` (whole image and random sub-ranges) and
report the same ``query-named-block-nodes`` image facts as qemu-storage-daemon.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from interop_kit import convert_raw, open_chain, poke, qemu_img, qemu_io

from tests.support.qsd import QSD
from txgraph.errors import IOFailure
from txgraph.io.qcow2.l2map import UNALLOC, ZERO

Recipe = Callable[[Path], Path]


def _create(
    d: Path, name: str, size: str, *opts: str, backing: Path | None = None, bfmt: str = "qcow2"
) -> Path:
    p = d / name
    args: list[Any] = ["create", "-q", "-f", "qcow2"]
    if opts:
        args += ["-o", ",".join(opts)]
    if backing is not None:
        args += ["-b", backing.name, "-F", bfmt]
    qemu_img(*args, p, size)
    return p


def _mixed_writes(p: Path, cs: int) -> None:
    qemu_io(
        p,
        f"write -q -P 0x11 0 {3 * cs}",
        f"write -q -P 0x22 {cs // 2} 1000",
        f"write -q -z {5 * cs} {2 * cs}",
        f"write -q -P 0x33 {9 * cs + 100} {cs}",
        f"write -q -P 0x44 {2 * cs} {cs}",
        f"write -q -z {cs} {cs}",
        f"discard -q {2 * cs} {cs}",
    )


def r_v2(d: Path) -> Path:
    p = _create(d, "v2.qcow2", "8M", "compat=0.10")
    _mixed_writes(p, 65536)
    return p


def r_clusters(cs: int, rb: int) -> Recipe:
    def recipe(d: Path) -> Path:
        p = _create(
            d,
            f"c{cs}_{rb}.qcow2",
            str(max(16 << 20, 16 * cs)),
            f"cluster_size={cs}",
            f"refcount_bits={rb}",
        )
        _mixed_writes(p, cs)
        return p

    recipe.__name__ = f"cs{cs}_rb{rb}"
    return recipe


def r_compressed(ctype: str) -> Recipe:
    def recipe(d: Path) -> Path:
        src = d / "src.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", src, "4M")
        rnd = random.Random(5)
        qemu_io(src, "write -q -P 0x5a 0 1M", "write -q -P 0x17 2M 300k")
        data = bytes(rnd.getrandbits(4) for _ in range(200000))
        (d / "blob").write_bytes(data)
        qemu_io(src, f"write -q -s {d / 'blob'} 1200000 200000")
        p = d / f"comp_{ctype}.qcow2"
        qemu_img("convert", "-c", "-O", "qcow2", "-o", f"compression_type={ctype}", src, p)
        qemu_io(p, "write -q -P 0x99 65536 4096")  # a normal cluster among compressed ones
        return p

    recipe.__name__ = f"compressed_{ctype}"
    return recipe


def r_extl2(d: Path) -> Path:
    base = _create(d, "eb.qcow2", "4M")
    qemu_io(base, "write -q -P 0xbb 0 4M")
    p = _create(d, "ext.qcow2", "4M", "extended_l2=on", "cluster_size=65536", backing=base)
    qemu_io(
        p,
        "write -q -P 0x01 4096 2048",
        "write -q -z 16384 8192",
        "write -q -P 0x02 131072 65536",
        "write -q -z 262144 65536",
        "write -q -P 0x03 393216 100",
        "discard -q 131072 2048",
    )
    return p


def r_chain(d: Path) -> Path:
    base = _create(d, "base.qcow2", "1M")  # backing shorter than the overlays
    qemu_io(base, "write -q -P 0xa1 0 1M")
    mid = _create(d, "mid.qcow2", "3M", backing=base)
    qemu_io(
        mid, "write -q -P 0xa2 65536 65536", "write -q -z 196608 65536", "write -q -P 0xa3 2M 8192"
    )
    top = _create(d, "top.qcow2", "4M", backing=mid)
    qemu_io(top, "write -q -P 0xa4 0 4096", "write -q -P 0xa5 3M 65536")
    return top


def r_raw_backing(d: Path) -> Path:
    base = d / "b.raw"
    qemu_img("create", "-q", "-f", "raw", base, "2M")
    qemu_io(base, "write -q -P 0x61 0 2M", fmt="raw")
    top = _create(d, "over_raw.qcow2", "2M", backing=base, bfmt="raw")
    qemu_io(top, "write -q -P 0x62 1000 5000")
    return top


def r_snapshots(d: Path) -> Path:
    p = _create(d, "snap.qcow2", "4M")
    qemu_io(p, "write -q -P 0x71 0 1M")
    qemu_img("snapshot", "-c", "s1", p)
    qemu_io(p, "write -q -P 0x72 65536 65536", "write -q -z 0 4096")
    qemu_img("snapshot", "-c", "s2", p)
    qemu_io(p, "write -q -P 0x73 2M 65536")
    return p


def r_data_file(d: Path) -> Path:
    p = _create(d, "df.qcow2", "4M", f"data_file={d / 'df.raw'}", "data_file_raw=on")
    qemu_io(p, "write -q -P 0x81 0 100k", "write -q -P 0x82 2M 64k")
    return p


def r_unaligned(d: Path) -> Path:
    p = _create(d, "un.qcow2", "1000000")
    qemu_io(p, "write -q -P 0x91 0 999936")
    return p


RECIPES: list[Recipe] = [
    r_v2,
    r_clusters(512, 16),
    r_clusters(4096, 1),
    r_clusters(65536, 64),
    r_clusters(2 << 20, 16),
    r_clusters(65536, 8),
    r_compressed("zlib"),
    r_compressed("zstd"),
    r_extl2,
    r_chain,
    r_raw_backing,
    r_snapshots,
    r_data_file,
    r_unaligned,
]


@pytest.fixture(scope="module")
def peer() -> Iterator[QSD]:
    with QSD() as q:
        yield q


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.__name__ for r in RECIPES])
def test_reads_match_qemu_img_convert(recipe: Recipe, tmp_path: Path) -> None:
    img = recipe(tmp_path)
    ref = convert_raw(img, tmp_path / "ref.raw")
    node = open_chain(img)
    assert node.size() == len(ref)
    assert node.read(0, len(ref)) == ref
    rnd = random.Random(1)
    for _ in range(200):
        off = rnd.randrange(len(ref))
        n = rnd.randrange(1, 300000)
        assert node.read(off, n) == (ref[off : off + n] + bytes(n))[:n]
        buf = bytearray(n)
        node.readinto(off, memoryview(buf))  # type: ignore[attr-defined]
        assert buf == (ref[off : off + n] + bytes(n))[:n]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.__name__ for r in RECIPES])
def test_info_matches_qsd(recipe: Recipe, tmp_path: Path, peer: QSD) -> None:
    img = recipe(tmp_path)
    reply = peer.execute(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": "i",
            "read-only": True,
            "file": {"driver": "file", "filename": str(img)},
        },
    )
    assert "return" in reply, reply
    nodes = peer.execute("query-named-block-nodes", {"flat": True})["return"]
    theirs = next(n["image"] for n in nodes if n["node-name"] == "i")
    peer.execute("blockdev-del", {"node-name": "i"})
    info = open_chain(img).info()
    assert info.virtual_size == theirs["virtual-size"]
    assert info.filename == theirs["filename"]
    assert info.cluster_size == theirs["cluster-size"]
    assert info.format_specific == theirs["format-specific"]
    assert info.dirty == theirs["dirty-flag"]
    assert info.backing_file == theirs.get("backing-filename")
    assert info.backing_format == theirs.get("backing-filename-format")
    assert info.extra.get("full-backing-filename") == theirs.get("full-backing-filename")
    assert info.extra.get("snapshots") == theirs.get("snapshots")
    assert info.actual_size == theirs["actual-size"]


def test_block_status_and_translate(tmp_path: Path) -> None:
    img = _create(tmp_path, "bs.qcow2", "4M")
    qemu_io(img, "write -q -P 1 0 128k", "write -q -z 1M 64k")
    node = open_chain(img)
    st = node.block_status(0, 4 << 20)
    assert st.allocated and not st.zero and st.length == 128 << 10 and st.host_offset
    assert node.block_status(1 << 20, 65536).zero
    st = node.block_status(2 << 20, 65536)
    assert not st.allocated and st.zero
    offs = np.array([0, 70000, 1 << 20, 3 << 20], dtype=np.uint64)
    host = node.translate(offs)  # type: ignore[attr-defined]
    assert host[0] == st_host(node, 0) and host[1] == st_host(node, 70000)
    assert host[2] == ZERO and host[3] == UNALLOC
    ref = img.read_bytes()
    assert ref[host[1] : host[1] + 4] == b"\1" * 4


def st_host(node: Any, off: int) -> int:
    return int(node.block_status(off, 1).host_offset)


def test_unaligned_l2_entry_fails_with_eio_like_qemu_io(tmp_path: Path) -> None:
    img = _create(tmp_path, "bad.qcow2", "64M")
    qemu_io(img, "write -q -P 1 0 192k")
    shutil.copy(img, tmp_path / "orig.qcow2")
    l1 = int.from_bytes(img.read_bytes()[40:48], "big")
    l2 = int.from_bytes(img.read_bytes()[l1 : l1 + 8], "big") & ((1 << 56) - 512)
    entry = int.from_bytes(img.read_bytes()[l2 : l2 + 8], "big")
    poke(img, l2, ">Q", entry + 512)
    res = subprocess.run(
        ["qemu-io", "-r", "-f", "qcow2", "-c", "read 0 512", str(img)],
        capture_output=True,
        text=True,
    )
    assert "Input/output error" in res.stdout + res.stderr
    node = open_chain(img)
    with pytest.raises(IOFailure) as e:
        node.read(0, 512)
    assert e.value.errno == 5 and node.corrupt  # type: ignore[attr-defined]
    assert "unaligned" in node.corruption_events[0]  # type: ignore[attr-defined]
    assert node.read(65536, 512) == b"\1" * 512
