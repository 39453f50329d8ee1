"""Exports follow the graph: guest I/O through an NBD export after graph changes, vs QSD 7.2.

QEMU's exports are BlockBackends: ``bdrv_append`` (blockdev-snapshot) and
``bdrv_replace_child_bs`` (blockdev-replace) move them like any other parent,
so the guest's writes land in the overlay / the new node and reads come from
there. Each scenario runs the same QMP steps and the same ``qemu-io`` client
on qemu-storage-daemon 7.2 and on txgraph, then compares the qemu-io outcomes,
``query-block-exports`` and ``qemu-img map --output=json`` of every image
(host offsets dropped). ``x-blockdev-replace`` (the upstream v9 proposal) is
compared with the recipe QEMU 7.2 has for the same result: delete the export
and add it again on the new node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer

pytestmark = pytest.mark.qsd

_SOCKET_DIRS: list[Path] = []


@pytest.fixture(autouse=True)
def _socket_dirs() -> Any:
    yield
    while _SOCKET_DIRS:
        shutil.rmtree(_SOCKET_DIRS.pop(), ignore_errors=True)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def _qemu_io(sock: Path, export: str, *commands: str) -> list[str]:
    """qemu-io as the guest, over NBD; timing lines dropped (they differ run to run)."""
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += ["-c", c]
    res = _run(*argv, f"nbd+unix:///{export}?socket={sock}")
    lines = [line for line in (res.stdout + res.stderr).splitlines() if " sec (" not in line]
    return [f"rc={res.returncode}", *lines]


def _map(image: Path) -> list[dict[str, Any]]:
    """``qemu-img map --output=json`` minus host offsets (they depend on allocation order)."""
    res = _run("qemu-img", "map", "--output=json", "-f", "qcow2", str(image))
    assert res.returncode == 0, res.stderr
    return [{k: v for k, v in e.items() if k != "offset"} for e in json.loads(res.stdout)]


def _ok(peer: Peer, execute: str, **arguments: Any) -> Any:
    reply = peer.execute({"execute": execute, "arguments": arguments})
    assert "return" in reply, f"{peer.label} {execute}: {reply}"
    return reply["return"]


Scenario = Callable[[Peer, Path], list[Any]]


def _compare(tmp_path: Path, images: list[str], scenario: Scenario) -> None:
    results: dict[str, Any] = {}
    for factory in (QSDPeer, EnginePeer):
        work = tmp_path / factory.label
        work.mkdir()
        peer: Peer = factory(work)
        try:
            observed = scenario(peer, work)
        finally:
            peer.close()
        maps = {name: _map(work / name) for name in images}
        text = json.dumps(observed).replace(str(work), "WORK")
        for d in _SOCKET_DIRS:
            text = text.replace(str(d), "SOCKDIR")
        results[factory.label] = json.loads(text), maps
    assert results["txgraph"][0] == results["qsd"][0]
    assert results["txgraph"][1] == results["qsd"][1]


def _base(work: Path) -> None:
    _run("qemu-img", "create", "-q", "-f", "qcow2", str(work / "base.qcow2"), "1M")
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 128k", str(work / "base.qcow2"))


def _start_export(peer: Peer, work: Path, node: str) -> Path:
    # A short directory of its own: unix socket paths are limited to 107 bytes.
    short = Path(tempfile.mkdtemp(prefix="txg-nbd-"))
    _SOCKET_DIRS.append(short)
    sock = short / "nbd.sock"
    _ok(peer, "nbd-server-start", addr={"type": "unix", "data": {"path": str(sock)}})
    _ok(
        peer,
        "block-export-add",
        type="nbd",
        id="vm0",
        name="vm0",
        **{"node-name": node},
        writable=True,
    )
    return sock


def _qcow2(peer: Peer, work: Path, name: str, **extra: Any) -> None:
    _ok(
        peer,
        "blockdev-add",
        driver="qcow2",
        **{"node-name": name},
        file={"driver": "file", "filename": str(work / f"{name}.qcow2")},
        **extra,
    )


def test_snapshot_under_writable_export_moves_the_export(tmp_path: Path) -> None:
    """blockdev-snapshot of an exported node: writes go to the overlay, reads fall through."""

    def scenario(peer: Peer, work: Path) -> list[Any]:
        _base(work)
        _run("qemu-img", "create", "-q", "-f", "qcow2", str(work / "ovl.qcow2"), "1M")
        _qcow2(peer, work, "base")
        sock = _start_export(peer, work, "base")
        seen: list[Any] = [_qemu_io(sock, "vm0", "write -P 0x33 128k 64k")]
        _qcow2(peer, work, "ovl", backing=None)
        _ok(peer, "blockdev-snapshot", node="base", overlay="ovl")
        seen.append(_ok(peer, "query-block-exports"))
        seen.append(
            _qemu_io(
                sock,
                "vm0",
                "write -P 0x22 64k 64k",
                "read -P 0x11 0 64k",
                "read -P 0x22 64k 64k",
                "read -P 0x33 128k 64k",
                "write -z 512k 64k",
                "read -P 0 512k 64k",
                "flush",
            )
        )
        seen.append(_ok(peer, "query-named-block-nodes", flat=True)[0]["node-name"])
        return seen

    _compare(tmp_path, ["base.qcow2", "ovl.qcow2"], scenario)


def test_snapshot_sync_under_writable_export_moves_the_export(tmp_path: Path) -> None:
    def scenario(peer: Peer, work: Path) -> list[Any]:
        _base(work)
        _qcow2(peer, work, "base")
        sock = _start_export(peer, work, "base")
        _ok(
            peer,
            "blockdev-snapshot-sync",
            **{"node-name": "base", "snapshot-node-name": "sn"},
            **{"snapshot-file": str(work / "sn.qcow2")},
            format="qcow2",
        )
        seen: list[Any] = [_ok(peer, "query-block-exports")]
        seen.append(
            _qemu_io(
                sock, "vm0", "write -P 0x44 0 64k", "read -P 0x44 0 64k", "read -P 0x11 64k 64k"
            )
        )
        return seen

    _compare(tmp_path, ["base.qcow2", "sn.qcow2"], scenario)


def test_replace_export_root_matches_the_7_2_recipe(tmp_path: Path) -> None:
    """``x-blockdev-replace parent-type=export`` vs block-export-del + block-export-add on QSD."""

    def scenario(peer: Peer, work: Path) -> list[Any]:
        _base(work)
        _run("qemu-img", "create", "-q", "-f", "qcow2", str(work / "other.qcow2"), "1M")
        _run("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 64k", str(work / "other.qcow2"))
        _qcow2(peer, work, "base")
        _qcow2(peer, work, "other")
        sock = _start_export(peer, work, "base")
        seen: list[Any] = [_qemu_io(sock, "vm0", "read -P 0x11 0 64k")]
        if isinstance(peer, EnginePeer):
            _ok(
                peer,
                "x-blockdev-replace",
                **{"parent-type": "export", "export-id": "vm0", "new-child": "other"},
            )
        else:
            _ok(peer, "block-export-del", id="vm0")
            _ok(
                peer,
                "block-export-add",
                type="nbd",
                id="vm0",
                name="vm0",
                **{"node-name": "other"},
                writable=True,
            )
        seen.append(_ok(peer, "query-block-exports"))
        seen.append(
            _qemu_io(
                sock, "vm0", "read -P 0x55 0 64k", "write -P 0x66 64k 64k", "read -P 0x66 64k 64k"
            )
        )
        return seen

    _compare(tmp_path, ["base.qcow2", "other.qcow2"], scenario)


def test_replace_of_a_missing_export_answers_like_the_proposal() -> None:
    """blk_by_export_id: "Export '%s' not found" only when there is no such export."""
    peer = EnginePeer()
    try:
        reply = peer.execute(
            {
                "execute": "x-blockdev-replace",
                "arguments": {"parent-type": "export", "export-id": "nope", "new-child": "x"},
            }
        )
        assert reply["error"]["desc"] == "Export 'nope' not found"
    finally:
        peer.close()


def test_reopen_filter_insertion_under_a_writable_export(tmp_path: Path) -> None:
    """QEMU 7.2's recipe: blockdev-add a throttle over the file node, reopen the format onto it,
    guest I/O through the export, then reopen back and delete the filter."""

    def scenario(peer: Peer, work: Path) -> list[Any]:
        _base(work)
        _ok(peer, "object-add", **{"qom-type": "throttle-group", "id": "tg"})
        _ok(
            peer,
            "blockdev-add",
            driver="qcow2",
            **{"node-name": "base"},
            file={"driver": "file", "node-name": "base-file", "filename": str(work / "base.qcow2")},
        )
        sock = _start_export(peer, work, "base")
        _ok(
            peer,
            "blockdev-add",
            driver="throttle",
            **{"node-name": "thr", "throttle-group": "tg"},
            file="base-file",
        )
        _ok(
            peer,
            "blockdev-reopen",
            options=[{"driver": "qcow2", "node-name": "base", "file": "thr", "backing": None}],
        )
        seen: list[Any] = [_ok(peer, "query-block-exports")]
        seen.append(
            _qemu_io(
                sock, "vm0", "write -P 0x77 256k 64k", "read -P 0x77 256k 64k", "read -P 0x11 0 64k"
            )
        )
        _ok(
            peer,
            "blockdev-reopen",
            options=[
                {"driver": "qcow2", "node-name": "base", "file": "base-file", "backing": None}
            ],
        )
        _ok(peer, "blockdev-del", **{"node-name": "thr"})
        seen.append(_qemu_io(sock, "vm0", "read -P 0x77 256k 64k"))
        seen.append(sorted(n["node-name"] for n in _ok(peer, "query-named-block-nodes")))
        return seen

    _compare(tmp_path, ["base.qcow2"], scenario)
