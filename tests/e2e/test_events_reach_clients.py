"""Data-plane and block-layer events reach every QMP client, as on qemu-storage-daemon 7.2.

A quorum of three raw files, one of which disagrees, is exported over NBD; the
real ``qemu-io`` reads through the export, the quorum outvotes the odd child
and emits ``QUORUM_REPORT_BAD`` from the NBD connection thread. The event must
reach a real ``qemu.qmp`` client connected to ``txgraph serve`` *and* the
other monitor connection, in QEMU's message shape (``timestamp`` with
``seconds``/``microseconds``, ``event``, ``data``), with the same data QSD
sends for the same setup; ``BLOCK_EXPORT_DELETED`` follows on the same channel.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from txgraph.peers import QSD, QMPProcess, TxgraphDaemon


def _images(d: Path) -> None:
    for name, pattern in (("a", 1), ("b", 1), ("c", 2)):
        img = d / f"{name}.raw"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(img), "1M"], check=True)
        subprocess.run(
            ["qemu-io", "-f", "raw", "-c", f"write -P {pattern} 0 64k", str(img)],
            check=True,
            capture_output=True,
        )


def _setup(peer: QMPProcess, d: Path) -> None:
    children = [
        {
            "driver": "raw",
            "node-name": f"c{i}",
            "file": {"driver": "file", "filename": str(d / f"{n}.raw")},
        }
        for i, n in enumerate("abc")
    ]
    peer.cmd(
        "blockdev-add",
        {"driver": "quorum", "node-name": "q", "vote-threshold": 2, "children": children},
    )
    peer.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(d / "nbd.sock")}}})
    peer.cmd("block-export-add", {"type": "nbd", "id": "e", "node-name": "q"})


# block-export-del uses mode=hard: qemu-io has exited, but the server may not have seen
# the disconnect yet, and safe mode would refuse the still-connected export.
def _read(d: Path) -> None:
    res = subprocess.run(
        [
            "qemu-io",
            "-r",
            "-f",
            "raw",
            f"nbd+unix:///q?socket={d}/nbd.sock",
            "-c",
            "read -P 1 0 4k",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and "read 4096/4096" in res.stdout, res.stdout + res.stderr


def _check_shape(event: dict[str, Any]) -> None:
    assert set(event) == {"timestamp", "event", "data"}, event
    ts = event["timestamp"]
    assert set(ts) == {"seconds", "microseconds"}
    assert isinstance(ts["seconds"], int) and ts["seconds"] > 1_600_000_000
    assert isinstance(ts["microseconds"], int) and 0 <= ts["microseconds"] < 1_000_000


def _events_of(peer: QMPProcess, names: set[str]) -> list[dict[str, Any]]:
    peer.cmd("query-version")  # events sent before this reply are now in peer.events
    return [e for e in peer.events if e["event"] in names]


def _strip(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(e["event"], e.get("data")) for e in events]


def _run_qsd(d: Path) -> list[dict[str, Any]]:
    with QSD(workdir=str(d)) as qsd:
        _setup(qsd, d)
        _read(d)
        qsd.cmd("block-export-del", {"id": "e", "mode": "hard"})
        got = _events_of(qsd, {"QUORUM_REPORT_BAD", "BLOCK_EXPORT_DELETED"})
    return got


@pytest.mark.qsd
def test_quorum_report_bad_reaches_a_qemu_qmp_client(tmp_path: Path) -> None:
    qsd_dir, tx_dir = tmp_path / "qsd", tmp_path / "tx"
    for d in (qsd_dir, tx_dir):
        d.mkdir()
        _images(d)
    expected = _run_qsd(qsd_dir)
    assert [e["event"] for e in expected] == ["QUORUM_REPORT_BAD", "BLOCK_EXPORT_DELETED"]

    with TxgraphDaemon(workdir=str(tx_dir)) as daemon:

        async def client_side() -> list[dict[str, Any]]:
            client = QMPClient("events")
            await client.connect(daemon.socket_path)
            try:
                await asyncio.get_running_loop().run_in_executor(None, _setup, daemon, tx_dir)
                await asyncio.get_running_loop().run_in_executor(None, _read, tx_dir)
                await client.execute("block-export-del", {"id": "e", "mode": "hard"})
                got: list[dict[str, Any]] = []
                while len(got) < 2:
                    msg = await asyncio.wait_for(client.events.get(), 30)
                    if msg["event"] in ("QUORUM_REPORT_BAD", "BLOCK_EXPORT_DELETED"):
                        got.append(dict(msg))
                return got
            finally:
                await client.disconnect()

        seen_by_client = asyncio.run(client_side())
        seen_by_monitor = _events_of(daemon, {"QUORUM_REPORT_BAD", "BLOCK_EXPORT_DELETED"})

    for event in seen_by_client + seen_by_monitor + expected:
        _check_shape(event)
    assert _strip(seen_by_client) == _strip(expected)
    assert _strip(seen_by_monitor) == _strip(expected)
    # The data plane's event is stamped no later than the block layer's that follows it.
    t = [(e["timestamp"]["seconds"], e["timestamp"]["microseconds"]) for e in seen_by_client]
    assert t == sorted(t)
