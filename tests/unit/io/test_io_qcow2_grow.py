"""Growing nodes (``bdrv_co_truncate`` → qcow2/raw/file), checked against ``qemu-img``.

Each case grows an image with txgraph's driver stack, writes past the old end,
closes it, and asks QEMU's tools: ``qemu-img check`` is clean, the virtual
size is the new one, and the data equals a copy grown by ``qemu-img resize``
and written by ``qemu-io`` the same way (``qemu-img compare``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from imgkit import open_node, open_qcow2, qemu_img, qemu_io

from txgraph.errors import IOFailure
from txgraph.io.truncate import truncate

pytestmark = pytest.mark.timeout(120)


def _check(path: Path) -> dict[str, int]:
    res = subprocess.run(
        ["qemu-img", "check", "--output=json", str(path)], capture_output=True, text=True
    )
    out = json.loads(res.stdout)
    return {k: out.get(k, 0) for k in ("check-errors", "leaks", "corruptions")}


def _vsize(path: Path) -> int:
    return int(json.loads(qemu_img("info", "--output=json", path))["virtual-size"])


def _same(a: Path, b: Path) -> None:
    res = subprocess.run(["qemu-img", "compare", str(a), str(b)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("opts", "new"),
    [
        ("cluster_size=65536", 4 << 20),  # the L1 table still fits
        ("cluster_size=65536", 1 << 30),  # a second L1 entry: qcow2_grow_l1_table
        ("cluster_size=4096", 64 << 20),  # 4k clusters: 2 MiB per L1 entry, the table grows
        ("cluster_size=65536,extended_l2=on", 3 << 30),
        ("cluster_size=65536,lazy_refcounts=on", 1 << 30),
    ],
)
def test_qcow2_grows_like_qemu_img_resize(tmp_path: Path, opts: str, new: int) -> None:
    ours, ref = tmp_path / "ours.qcow2", tmp_path / "ref.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, ours, "1M")
    qemu_io(ours, "write -P 0xaa 0 512k")
    shutil.copy(ours, ref)
    node = open_qcow2(ours)
    truncate(node, new)
    assert node.size() == new
    node.write(new - (1 << 20), b"\xbb" * 65536)
    node.write(4096, b"\xcc" * 4096)
    assert node.read(new - (1 << 20), 65536) == b"\xbb" * 65536
    assert node.read(1 << 20, 4096) == bytes(4096)
    node.close()
    qemu_img("resize", "-q", ref, str(new))
    qemu_io(ref, f"write -P 0xbb {new - (1 << 20)} 64k", "write -P 0xcc 4096 4096")
    assert _check(ours) == {"check-errors": 0, "leaks": 0, "corruptions": 0}
    assert _vsize(ours) == new
    _same(ours, ref)


def test_qcow2_over_a_longer_backing_zeroes_the_new_area(tmp_path: Path) -> None:
    """The block layer adds ZERO_WRITE: the backing's data past the old end stays hidden."""
    back, top = tmp_path / "back.qcow2", tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", back, "4M")
    qemu_io(back, "write -P 0x11 0 4M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "back.qcow2", "-F", "qcow2", top, "1M")
    b = open_qcow2(back, read_only=True)
    f = open_node("file", {"filename": str(top)})
    node = open_node("qcow2", {}, {"file": f, "backing": b})
    truncate(node, 4 << 20)
    assert node.read(0, 4096) == b"\x11" * 4096
    assert node.read(1 << 20, 3 << 20) == bytes(3 << 20)
    node.close()
    assert _check(top) == {"check-errors": 0, "leaks": 0, "corruptions": 0}
    out = json.loads(qemu_img("map", "--output=json", top))
    grown = [m for m in out if m["start"] >= 1 << 20]
    assert grown and all(m["zero"] and m["depth"] == 0 for m in grown), out


def test_refusals_change_nothing(tmp_path: Path) -> None:
    img = tmp_path / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    ro = open_qcow2(img, read_only=True)
    with pytest.raises(IOFailure) as err:
        truncate(ro, 2 << 20)
    assert (err.value.errno, err.value.desc) == (13, "Image is read-only")
    ro.close()
    node = open_qcow2(img)
    with pytest.raises(IOFailure) as err:
        truncate(node, (2 << 20) + 1)
    assert err.value.desc == "The new size must be a multiple of 512"
    node.close()
    raw = tmp_path / "a.raw"
    raw.write_bytes(bytes(1 << 20))
    f = open_node("file", {"filename": str(raw)})
    fixed = open_node("raw", {"size": 1 << 20}, {"file": f})
    with pytest.raises(IOFailure) as err:
        truncate(fixed, 2 << 20)
    assert (err.value.errno, err.value.desc) == (95, "Cannot resize fixed-size raw disks")
    assert _vsize(img) == 1 << 20 and raw.stat().st_size == 1 << 20


def test_raw_grows_its_file(tmp_path: Path) -> None:
    raw = tmp_path / "a.raw"
    raw.write_bytes(b"\xaa" * (1 << 20))
    f = open_node("file", {"filename": str(raw)})
    node = open_node("raw", {}, {"file": f})
    truncate(node, 3 << 20)
    assert node.size() == 3 << 20 and raw.stat().st_size == 3 << 20
    assert node.read((1 << 20) - 1, 2) == b"\xaa\x00"
