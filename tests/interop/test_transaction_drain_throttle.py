"""A transaction-based command releases a guest request waiting in a throttle group.

``qmp_transaction`` begins with ``bdrv_drain_all``, and a drained throttle node
lets its queued requests go at once (``throttle_co_drain_begin``). So even a
refused ``blockdev-snapshot-sync`` completes a guest write that would otherwise
wait minutes for its budget; afterwards the limits apply again. (Found by the
fuzzer: QSD deleted an export whose client had gone, txgraph still held the
throttled request and answered "still in use", fuzz 48b24ce8ec.)
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest

from txgraph.io.nbd.client import NbdClient
from txgraph.oracle.peers import EnginePeer

pytestmark = pytest.mark.timeout(120)

_DEADLINE = 30.0


def _ok(peer: EnginePeer, execute: str, **arguments: object) -> None:
    reply = peer.execute({"execute": execute, "arguments": arguments})
    assert reply == {"return": {}}, (execute, reply)


def test_refused_snapshot_releases_a_throttled_write(tmp_path: Path) -> None:
    sockdir = Path(tempfile.mkdtemp(prefix="txtd-"))
    addr = {"type": "unix", "path": str(sockdir / "nbd.sock")}
    peer = EnginePeer(tmp_path)
    try:
        _ok(
            peer,
            "object-add",
            **{"qom-type": "throttle-group", "id": "tg", "limits": {"bps-write": 4096}},
        )
        _ok(
            peer,
            "blockdev-add",
            driver="throttle",
            **{"node-name": "thr", "throttle-group": "tg"},
            file={"driver": "null-co", "size": 4 << 20},
        )
        _ok(peer, "nbd-server-start", addr={"type": "unix", "data": {"path": addr["path"]}})
        _ok(
            peer,
            "block-export-add",
            type="nbd",
            id="e",
            **{"node-name": "thr"},
            writable=True,
            name="vm",
        )
        group = peer._engine.context.session.runtime.throttle_groups.get("tg")
        done: list[str] = []

        def guest() -> None:
            with NbdClient(addr, "vm") as client:
                client.write(0, b"\x11" * (1 << 20))  # within the empty bucket: at once
                client.write(1 << 20, b"\x22" * 4096)  # 256 s of budget behind the first
                done.append("written")

        th = threading.Thread(target=guest)
        th.start()
        deadline = time.monotonic() + _DEADLINE
        while group.waiting() == 0:
            assert th.is_alive() and time.monotonic() < deadline, "the write never queued"
            time.sleep(0.01)
        reply = peer.execute(
            {
                "execute": "blockdev-snapshot-sync",
                "arguments": {"node-name": "nowhere", "snapshot-file": str(tmp_path / "s.qcow2")},
            }
        )
        assert reply["error"]["desc"] == "Cannot find device='' nor node-name='nowhere'"
        th.join(_DEADLINE)
        assert not th.is_alive() and done == ["written"], "the drain did not release the write"
        assert group.waiting() == 0
    finally:
        peer.close()
