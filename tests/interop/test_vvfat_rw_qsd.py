"""vvfat with ``rw: true``: the control plane, QSD 7.2 against txgraph.

QEMU's facts, pinned on the real daemon and required of txgraph alike:

* the graph: the vvfat node gets a ``write-target`` child, a ``qcow`` (v1) node
  with an automatic name over a ``file`` node on a temporary ``/var/tmp/vl.XXXXXX``
  (cluster size 512, the vvfat disk's size), both with ``cache.no-flush``; the
  edge perms (write-target: write + consistent-read, sharing write-unchanged;
  qcow's file: resize + write + consistent-read, sharing write-unchanged) and
  the vvfat node's json: filename naming the write target; the temporary file is
  unlinked as soon as it is open;
* the errors: ``rw`` on a read-only node, a temporary directory that does not
  exist (checked before the host directory is read), a host directory that
  cannot be read; a floppy takes ``rw`` too;
* the data plane: a guest write into an existing file's data through an NBD
  export reads back, and reaches the host file (more in test_vvfat_rw_data.py).
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


_PEERS = {"qsd": QSDPeer, "txgraph": EnginePeer}


def _graph(tmp_path: Path, d: Path, peer_cls: type[QSDPeer] | type[EnginePeer]) -> Any:
    """blockdev-add, both queries, blockdev-del, the queries again; names masked."""
    peer: Peer = peer_cls(tmp_path)
    try:
        out = [_add(peer, driver="vvfat", dir=str(d), rw=True, **{"node-name": "v"})]
        out.append(
            peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        )
        out.append(peer.execute({"execute": "x-debug-query-block-graph"}))
        out.append(peer.execute({"execute": "query-block"}))
        out.append(peer.execute({"execute": "blockdev-del", "arguments": {"node-name": "v"}}))
        out.append(peer.execute({"execute": "query-named-block-nodes"}))
    finally:
        peer.close()
    text = json.dumps(out, sort_keys=True)
    text = re.sub(r"/var/tmp/vl\.\w{6}", "<tmp>", text)
    names = sorted(set(re.findall(r"#block\d+", text)), key=text.index)
    for i, name in enumerate(names):
        text = text.replace(name, f"#auto{i}")
    return json.loads(text)


def test_write_target_graph_is_qsds(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    qsd = _graph(tmp_path, d, QSDPeer)
    ours = _graph(tmp_path, d, EnginePeer)
    assert ours == qsd
    assert qsd[0] == {"return": {}} and qsd[-1] == {"return": []}


@pytest.mark.parametrize("label", sorted(_PEERS))
def test_write_target_graph(tmp_path: Path, label: str) -> None:
    d = _tree(tmp_path)
    peer: Peer = _PEERS[label](tmp_path)
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


@pytest.mark.parametrize("label", sorted(_PEERS))
def test_writes_a_changed_file_back(tmp_path: Path, label: str) -> None:
    d = _tree(tmp_path)
    sockdir = Path(tempfile.mkdtemp(prefix="txvv-"))
    sock = sockdir / "s"
    peer: Peer = _PEERS[label](tmp_path)
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


def _errors(tmp_path: Path, peer_cls: type[QSDPeer] | type[EnginePeer]) -> list[Any]:
    d = _tree(tmp_path)
    out: list[Any] = []
    # QSD reads $TMPDIR from its environment; txgraph from the process's, at the open
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path / "no such dir")
    try:
        peer: Peer = peer_cls(tmp_path)
        try:
            out.append(_add(peer, driver="vvfat", dir=str(d), rw=True, **{"node-name": "a"}))
            out.append(_add(peer, driver="vvfat", dir=str(d / "x"), rw=True, **{"node-name": "b"}))
            out.append(peer.execute({"execute": "query-named-block-nodes"}))
        finally:
            peer.close()
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved
    peer = peer_cls(tmp_path)
    try:
        for i, args in enumerate(
            [
                {"read-only": True},
                {"read-only": True, "auto-read-only": True},
                {"dir": str(d / "x")},
                {"floppy": True, "fat-type": 12},
                {"floppy": True, "label": "x" * 12},
            ]
        ):
            base = {"driver": "vvfat", "dir": str(d), "rw": True, "node-name": f"n{i}"}
            out.append(_add(peer, **(base | args)))
        out.append(
            peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        )
    finally:
        peer.close()
    text = json.dumps(out, sort_keys=True)
    text = re.sub(r"/vl\.\w{6}", "/vl.XXXXXX", text)
    text = re.sub(r"#block\d+", "#auto", text)
    return [json.loads(text), os.listdir(tmp_path / "dir")]


def test_errors_are_qsds(tmp_path: Path) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "t").mkdir()
    qsd = _errors(tmp_path / "q", QSDPeer)
    ours = _errors(tmp_path / "t", EnginePeer)
    qsd_text = json.dumps(qsd).replace(str(tmp_path / "q"), "<d>")
    ours_text = json.dumps(ours).replace(str(tmp_path / "t"), "<d>")
    assert json.loads(ours_text) == json.loads(qsd_text)
    replies = qsd[0]
    assert "Could not open temporary file" in replies[0]["error"]["desc"]
    assert replies[3]["error"]["desc"] == "Unable to set VVFAT to 'rw' when drive is read-only"
    assert replies[6] == {"return": {}}  # a floppy with rw
