"""The FAT disk a guest reads from vvfat, byte for byte against QEMU 7.2.

For each directory tree and FAT shape, ``qemu-img convert -O raw fat:...`` (QEMU's
own vvfat) must give exactly the bytes txgraph's vvfat node serves: MBR and
partition table (hard disk), boot sector, both FATs, directory entries with long
and short names and the host's times, file data - including the tail of a
file's last cluster, which QEMU 7.2 leaves as the previous file cluster's
bytes. The trees fix every mtime (and put the atime in the future so reading
does not move it); ``ctime`` is whatever the host says, the same for both
readers of one tree. Through NBD exports (QSD's and txgraph's) the guest view
must be the same too, also after a file vanished or shrank under the node.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer
from tests.differential.scenarios.vvfat import hostile_tree, tree

pytestmark = pytest.mark.qsd

_RNG = bytes((i * 7919 + 13) % 251 for i in range(200_000))

TREES: dict[str, dict[str, Any]] = {
    "empty": {},
    "sizes": {
        f"s{n}.bin": _RNG[n % 97 : n % 97 + n]
        for n in (1, 511, 512, 513, 8191, 8192, 8193, 16384, 20000, 100_000)
    }
    | {"zero.len": b""},
    "nested": {
        "top.txt": b"top\n",
        "dir one": {
            "a.c": b"int a;\n" * 300,
            "deeper": {"b.h": b"#pragma once\n", "empty dir": {}, "c.txt": _RNG[:9000]},
        },
        "dir two": {"z": b"z" * 8193},
        "last.bin": _RNG[5:30005],
    },
    "names": {
        **{f"same name {i}.txt": bytes([65 + i]) * (i + 1) for i in range(12)},
        **{f"ABCDEFGHIJ{i:02d}": b"y" for i in range(11)},
        "a.b.c.d": b"dots",
        ".dotfile": b"dot",
        "...": b"three dots",
        "UPPER.TXT": b"U",
        "upper.txt": b"u",
        "Mixed Case Name.Extension": b"m",
        "x" * 255: b"longest",
        "\u65e5\u672c\u8a9e\u306e\u30d5\u30a1\u30a4\u30eb.txt": b"j",
        "\u0124\u0124\u0124.\u0124\u0124": b"low byte $",
        "\u0100b": b"low byte 0",
        "\u1e9e\u00df.txt": b"sharp s",
        "\ufb00": b"ligature",
        "r\u00e9sum\u00e9.doc": b"r",
        "name with spaces and [brackets] + = ; ,": b"punct",
        "QEMU VVFAT": b"like the label",
        "sub": {"x.txt": b"x", "X.TXT ": b"trailing space"},
    },
}

#: the shapes: (fat-type, floppy); 0 is QEMU's default for the shape
FLOPPIES = [(0, True), (12, True), (16, True), (32, True)]
DISKS = [(12, False), (16, False), (32, False)]


def _spec(d: Path, fat: int, floppy: bool) -> str:
    return "fat:" + ("floppy:" if floppy else "") + (f"{fat}:" if fat else "") + str(d)


def _qemu_image(d: Path, fat: int, floppy: bool, out: Path) -> None:
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", _spec(d, fat, floppy), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _txgraph_chunks(d: Path, fat: int, floppy: bool) -> Iterator[bytes]:
    """The whole device read through txgraph's vvfat node, in 2 MiB sequential reads."""
    peer = EnginePeer(d.parent)
    try:
        args: dict[str, Any] = {"driver": "vvfat", "node-name": "v", "dir": str(d)}
        args |= {"read-only": True, "floppy": floppy, "fat-type": fat}
        reply = peer.execute({"execute": "blockdev-add", "arguments": args})
        assert reply == {"return": {}}, reply
        node = peer._engine.context.session.runtime.node("v")
        size = node.size()
        for off in range(0, size, 2 << 20):
            yield node.read(off, min(2 << 20, size - off))
    finally:
        peer.close()


def _compare(d: Path, fat: int, floppy: bool, tmp: Path) -> int:
    out = tmp / f"q-{fat}-{floppy}.raw"
    _qemu_image(d, fat, floppy, out)
    offset = 0
    with open(out, "rb") as f:
        for chunk in _txgraph_chunks(d, fat, floppy):
            want = f.read(len(chunk))
            if want != chunk:
                at = next(i for i in range(len(chunk)) if i >= len(want) or want[i] != chunk[i])
                pytest.fail(f"{_spec(d, fat, floppy)}: first difference at byte {offset + at}")
            offset += len(chunk)
        assert f.read(1) == b"", "qemu-img's image is longer"
    out.unlink()
    return offset


@pytest.mark.parametrize(
    "shape", [*FLOPPIES, (12, False)], ids=lambda s: f"fat{s[0]}-{'fd' if s[1] else 'hd'}"
)
@pytest.mark.parametrize("name", sorted(TREES))
def test_image_matches_qemu(name: str, shape: tuple[int, bool], tmp_path: Path) -> None:
    tree(tmp_path, "t", TREES[name])
    assert _compare(tmp_path / "t", *shape, tmp_path) > 0


@pytest.mark.parametrize("shape", DISKS[1:], ids=lambda s: f"fat{s[0]}-hd")
def test_big_disk_matches_qemu(shape: tuple[int, bool], tmp_path: Path) -> None:
    """The 504 MB hard disks (FAT16 and the FAT32 QEMU has not tested) of a mixed tree."""
    tree(tmp_path, "t", {**TREES["nested"], **TREES["sizes"]})
    assert _compare(tmp_path / "t", *shape, tmp_path) == 528482304


@pytest.mark.parametrize("kind", ["root_just_fits", "floppy_full", "loop", "dangling"])
def test_hostile_trees_match_qemu(kind: str, tmp_path: Path) -> None:
    """Trees at the edges: a root one entry short of full, 2 MiB on a 2.88 MB floppy,
    a symlink loop (cut by the kernel's ELOOP), a dangling link (skipped)."""
    tree(tmp_path, "t", hostile_tree(kind))
    assert _compare(tmp_path / "t", 0, True, tmp_path) == 2949120


def test_invalid_utf8_names_match_qemu(tmp_path: Path) -> None:
    """Names that are not UTF-8: no long-name entries, a short name from GLib's lax walk.

    A multi-byte sequence cut by the end of the name is left out: GLib's walk then
    steps past the string's end and QEMU reads whatever memory follows (undefined;
    txgraph ends the name there)."""
    d = tmp_path / "t"
    d.mkdir()
    for raw in (b"\xff\xfe.txt", b"\xc3(bad", b"\x80\x80.\x80", b"\xe2\x82(x.\xc3\xa9\xff"):
        (d / os.fsdecode(raw)).write_bytes(raw)
    assert _compare(d, 0, True, tmp_path) == 2949120


# ---- through NBD exports ----------------------------------------------------------------


def _ok(peer: Peer, execute: str, **args: Any) -> None:
    reply = peer.execute({"execute": execute, "arguments": args})
    assert "error" not in reply, (execute, reply)


def _export_digest(uri: str) -> str:
    """sha256 of the export read by ``qemu-img convert -m 1`` (one request at a time: the
    order of reads decides what a last cluster's tail holds, as in QEMU)."""
    with tempfile.TemporaryDirectory(prefix="txvv-") as tmp:
        out = os.path.join(tmp, "v.raw")
        subprocess.run(
            ["qemu-img", "convert", "-m", "1", "-f", "raw", "-O", "raw", uri, out],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return hashlib.sha256(Path(out).read_bytes()).hexdigest()


def _after_open(kind: str, d: Path) -> None:
    if kind == "vanished":
        (d / "dir one" / "a.c").unlink()
    elif kind == "shrunk":
        with open(d / "last.bin", "r+b") as f:
            f.truncate(100)
    elif kind == "grown":
        with open(d / "top.txt", "ab") as f:
            f.write(b"more" * 5000)


@pytest.mark.parametrize("kind", ["unchanged", "vanished", "shrunk", "grown"])
def test_nbd_export_matches_qsd(kind: str, tmp_path: Path) -> None:
    """One tree exported by QSD and by txgraph (each its own vvfat node on the same
    directory, so the host times agree) reads the same, before and after a change under
    the open nodes: a host file that vanished reads as zeroes (QEMU opens a file at its
    first read), one that shrank keeps stale tails, one that grew shows the new bytes
    inside its clusters."""
    tree(tmp_path, "t", TREES["nested"])
    sockdir = Path(tempfile.mkdtemp(prefix="txvv-"))
    peers: dict[str, Peer] = {}
    uris: dict[str, str] = {}
    try:
        for factory in (QSDPeer, EnginePeer):
            work = tmp_path / factory.label
            work.mkdir()
            peer: Peer = factory(work)
            peers[factory.label] = peer
            _ok(
                peer,
                "blockdev-add",
                driver="vvfat",
                dir=str(tmp_path / "t"),
                floppy=True,
                **{"node-name": "v", "read-only": True},
            )
            sock = sockdir / f"{factory.label}.sock"
            _ok(peer, "nbd-server-start", addr={"type": "unix", "data": {"path": str(sock)}})
            _ok(peer, "block-export-add", type="nbd", id="e", name="e", **{"node-name": "v"})
            uris[factory.label] = f"nbd+unix:///e?socket={sock}"
        # two reads before the change: the second starts with the cluster buffer the first
        # left behind (so a first file's tail may differ between them)
        digests = {label: [_export_digest(uri), _export_digest(uri)] for label, uri in uris.items()}
        _after_open(kind, tmp_path / "t")
        for label, uri in uris.items():
            digests[label].append(_export_digest(uri))
    finally:
        for peer in peers.values():
            peer.close()
        for s in sockdir.iterdir():
            s.unlink()
        sockdir.rmdir()
    assert digests["txgraph"] == digests["qsd"]
    _first, second, third = digests["qsd"]
    # the change under the node is visible to the guest (zeroes, stale tails, more data)
    assert (second == third) == (kind == "unchanged")
