"""Shared pieces of the vvfat ``rw: true`` tests: trees, peers with an NBD export, traces.

A scenario is a list of steps a guest does through a writable NBD export of a
``rw: true`` vvfat node; :func:`run` plays it on one peer (QSD 7.2 or txgraph)
and returns the trace (each step's reply: ``ok``, the data read, or the errno of
a refused request; then each node's driver and size, so the write target's file
must have grown as QEMU's) and the host directory afterwards (names, sizes,
contents).
"""

from __future__ import annotations

import errno as E
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.differential.harness import EnginePeer, Peer, QSDPeer
from txgraph.io.nbd.client import NbdClient, NbdError

SECTOR = 512
CLUSTER = 8192  # 16 sectors per cluster in every vvfat geometry


def data(seed: int, n: int) -> bytes:
    """``n`` bytes no other seed gives (so a cluster is found by its content)."""
    return bytes(((i * 131 + seed * 977) ^ (i >> 8) * 7 + seed) % 256 for i in range(n))


#: the host tree every scenario starts from (file name -> content; a dict is a directory)
TREE: dict[str, Any] = {
    "one.txt": data(1, 3000),
    "big.bin": data(2, 3 * CLUSTER + 1000),
    "empty.dat": b"",
    "sub": {"inner.txt": data(3, 700)},
}


#: a file of the tree made without write bits (QEMU's scan marks its mapping read-only)
READ_ONLY = "ro.txt"


def make_tree(root: Path, spec: dict[str, Any]) -> None:
    root.mkdir()
    for name, value in spec.items():
        if isinstance(value, dict):
            make_tree(root / name, value)
        else:
            (root / name).write_bytes(value)
            os.utime(root / name, (2_000_000_000, 1_500_000_000))
            if name == READ_ONLY:
                os.chmod(root / name, 0o444)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """The host tree: relative path -> content (None for a directory)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = None
        for f in filenames:
            out[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_bytes()
    return out


@dataclass
class Disk:
    """A guest's handle on the export: requests answer ``ok``, bytes or an errno name."""

    client: NbdClient
    #: the export's address (for more clients)
    addr: dict[str, Any]

    def write(self, offset: int, payload: bytes) -> str:
        try:
            self.client.write(offset, payload)
        except NbdError as err:
            return E.errorcode.get(err.errno, str(err.errno))
        return "ok"

    def read(self, offset: int, length: int) -> bytes | str:
        try:
            return self.client.read(offset, length)
        except NbdError as err:
            return E.errorcode.get(err.errno, str(err.errno))


Scenario = Callable[[Disk, Path], list[Any]]


def run(
    peer_cls: type[QSDPeer] | type[EnginePeer],
    workdir: Path,
    scenario: Scenario,
    tree: dict[str, Any] | None = None,
    **node: Any,
) -> tuple[list[Any], dict[str, bytes | None]]:
    """Play ``scenario`` on a fresh peer; (trace, host tree after the peer closed)."""
    workdir.mkdir()
    root = workdir / "dir"
    make_tree(root, TREE if tree is None else tree)
    sockdir = Path(tempfile.mkdtemp(prefix="txvv-"))
    addr = {"type": "unix", "data": {"path": str(sockdir / "s")}}
    peer: Peer = peer_cls(workdir)
    try:
        trace: list[Any] = [
            peer.execute({"execute": "nbd-server-start", "arguments": {"addr": addr}}),
            peer.execute(
                {
                    "execute": "blockdev-add",
                    "arguments": {"driver": "vvfat", "dir": str(root), "rw": True}
                    | {"node-name": "v"}
                    | node,
                }
            ),
            peer.execute(
                {
                    "execute": "block-export-add",
                    "arguments": {"type": "nbd", "id": "v", "node-name": "v", "writable": True},
                }
            ),
        ]
        with NbdClient(addr, "v") as client:
            trace += scenario(Disk(client, addr), root)
        # the write target's allocation: qcow's clusters and tables as QEMU lays them out
        nodes = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        trace.append(
            sorted((n["drv"], n["image"]["virtual-size"]) for n in nodes.get("return", []))
        )
    finally:
        peer.close()
        shutil.rmtree(sockdir, ignore_errors=True)
    return trace, snapshot(root)


def find(disk: Disk, needle: bytes, span: int = 4 << 20) -> int:
    """The sector offset where ``needle`` (a cluster's first bytes) sits on the disk."""
    area = disk.read(0, min(span, disk.client.size))
    assert isinstance(area, bytes)
    at = area.find(needle)
    assert at > 0 and at % SECTOR == 0, at
    return at


def differential(
    tmp_path: Path, scenario: Scenario, tree: dict[str, Any] | None = None, **node: Any
) -> list[Any]:
    """Run on QSD and on txgraph; both traces and host trees must be equal."""
    qsd = run(QSDPeer, tmp_path / "qsd", scenario, tree, **node)
    ours = run(EnginePeer, tmp_path / "txgraph", scenario, tree, **node)
    assert ours[0] == qsd[0]
    assert ours[1] == qsd[1]
    return qsd[0]


def guest_edit(disk: Disk, workdir: Path, commands: list[str]) -> list[Any]:
    """A guest that edits its FAT disk with mtools: read the whole disk through the
    export, run each ``mtools`` command line on a local copy (``IMG`` is the image,
    ``SRC`` a 9000-byte host file to copy in), then write the changed sectors back in
    sector order, one request per run of changed sectors; the runs and their replies.

    Only for a floppy (no partition table, 2.88 MB: read in a fraction of a second).
    """
    size = disk.client.size
    chunks = [disk.read(o, min(1 << 20, size - o)) for o in range(0, size, 1 << 20)]
    assert all(isinstance(c, bytes) for c in chunks)
    before = b"".join(c for c in chunks if isinstance(c, bytes))
    img = workdir / "guest.img"
    img.write_bytes(before)
    src = workdir / "src.txt"
    src.write_bytes(b"new file\n" * 1000)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for command in commands:
        argv = [str(img) if a == "IMG" else str(src) if a == "SRC" else a for a in command.split()]
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
    after = img.read_bytes()
    runs: list[Any] = []
    sector, count = 0, size // SECTOR
    while sector < count:
        end = sector
        while (
            end < count
            and before[end * SECTOR : (end + 1) * SECTOR]
            != after[end * SECTOR : (end + 1) * SECTOR]
        ):
            end += 1
        if end == sector:
            sector += 1
            continue
        runs.append(
            (
                sector,
                end - sector,
                disk.write(sector * SECTOR, after[sector * SECTOR : end * SECTOR]),
            )
        )
        sector = end
    return runs
