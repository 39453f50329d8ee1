"""vvfat with ``rw: true``: what QEMU 7.2 does, pinned for the write-back txgraph lacks.

txgraph refuses ``rw: true`` on a writable vvfat node (txgraph.ops.drivers.vvfat,
``RW_UNSUPPORTED``): QEMU's write target and its write-back into the host
directory are not built. These tests pin, against the real daemon, the facts a
faithful implementation has to reproduce, and that txgraph's refusal changes
nothing:

* the graph: the vvfat node gets a ``write-target`` child, a ``qcow`` (v1) node
  with an automatic name over a ``file`` node on a temporary ``/var/tmp/vl.XXXXXX``
  (cluster size 512, the vvfat disk's size), both with ``cache.no-flush``; the
  edge perms (write-target: write + consistent-read, sharing write-unchanged;
  qcow's file: resize + write + consistent-read, sharing write-unchanged) and
  the vvfat node's json: filename naming the write target;
* the data plane: a guest write into an existing file's data through an NBD
  export reads back, and reaches the host file (the file is rewritten).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer
from txgraph.io.nbd.client import NbdClient
from txgraph.ops.drivers.vvfat import RW_UNSUPPORTED

pytestmark = pytest.mark.qsd

_CONTENT = bytes((i * 131 + 7) % 253 for i in range(3000))


def _tree(root: Path) -> Path:
    d = root / "dir"
    d.mkdir()
    (d / "data.bin").write_bytes(_CONTENT)
    (d / "note.txt").write_bytes(b"a note\n")
    return d


def _add(peer: Peer, **args: Any) -> dict[str, Any]:
    return peer.execute({"execute": "blockdev-add", "arguments": args})


def test_qsd_write_target_graph(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    peer: Peer = QSDPeer(tmp_path)
    try:
        assert _add(peer, driver="vvfat", dir=str(d), rw=True, **{"node-name": "v"}) == {
            "return": {}
        }
        nodes = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        graph = peer.execute({"execute": "x-debug-query-block-graph"})
    finally:
        peer.close()
    by_drv = {n["drv"]: n for n in nodes["return"]}
    assert sorted(by_drv) == ["file", "qcow", "vvfat"]
    qcow, file, vvfat = by_drv["qcow"], by_drv["file"], by_drv["vvfat"]
    assert re.fullmatch(r"#block\d+", qcow["node-name"])
    assert re.fullmatch(r"#block\d+", file["node-name"])
    assert re.fullmatch(r"/var/tmp/vl\.\w{6}", file["file"])
    assert qcow["image"]["cluster-size"] == 512
    assert qcow["image"]["virtual-size"] == vvfat["image"]["virtual-size"] == 528482304
    assert qcow["cache"]["no-flush"] and file["cache"]["no-flush"]
    assert not vvfat["cache"]["no-flush"] and not vvfat["ro"]
    name = json.loads(vvfat["file"][len("json:") :])
    assert name == {
        "dir": str(d),
        "driver": "vvfat",
        "rw": True,
        "write-target": {"driver": "qcow", "file": {"driver": "file", "filename": file["file"]}},
    }
    ids = {n["id"]: n["name"] for n in graph["return"]["nodes"]}
    edges = {
        (ids[e["parent"]], e["name"]): (sorted(e["perm"]), e["shared-perm"])
        for e in graph["return"]["edges"]
    }
    assert edges == {
        ("v", "write-target"): (["consistent-read", "write"], ["write-unchanged"]),
        (qcow["node-name"], "file"): (["consistent-read", "resize", "write"], ["write-unchanged"]),
    }
    # the temporary image is gone once the daemon is
    assert not os.path.exists(file["file"])


def test_qsd_writes_a_changed_file_back(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    sockdir = Path(tempfile.mkdtemp(prefix="txvv-"))
    sock = sockdir / "s"
    peer: Peer = QSDPeer(tmp_path)
    try:
        addr = {"type": "unix", "data": {"path": str(sock)}}
        assert (
            peer.execute({"execute": "nbd-server-start", "arguments": {"addr": addr}})["return"]
            == {}
        )
        assert _add(peer, driver="vvfat", dir=str(d), rw=True, **{"node-name": "v"}) == {
            "return": {}
        }
        export = {"type": "nbd", "id": "v", "node-name": "v", "writable": True}
        assert peer.execute({"execute": "block-export-add", "arguments": export}) == {"return": {}}
        with NbdClient(addr, "v") as client:
            # the file's first cluster: search the data area for its bytes
            area = client.read(0, 4 << 20)
            at = area.find(_CONTENT[:512])
            assert at > 0 and at % 512 == 0
            changed = bytes(b ^ 0xFF for b in _CONTENT[:512])
            client.write(at, changed)
            assert client.read(at, 512) == changed
            client.flush()
    finally:
        peer.close()
        for s in sockdir.iterdir():
            s.unlink()
        sockdir.rmdir()
    assert (d / "data.bin").read_bytes() == changed + _CONTENT[512:]
    assert (d / "note.txt").read_bytes() == b"a note\n"


def test_txgraph_refuses_rw_and_changes_nothing(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    peer: Peer = EnginePeer(tmp_path)
    try:
        reply = _add(peer, driver="vvfat", dir=str(d), rw=True, **{"node-name": "v"})
        nodes = peer.execute({"execute": "query-named-block-nodes"})
    finally:
        peer.close()
    assert reply == {"error": {"class": "GenericError", "desc": RW_UNSUPPORTED}}
    assert nodes == {"return": []}
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
