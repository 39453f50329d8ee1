"""txgraph's QMP server speaks to the real qemu.qmp clients and to raw sockets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from tests.support.qmp_server import ServerThread


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    srv = ServerThread(str(tmp_path / "qmp.sock"))
    yield srv
    srv.stop()


def raw_client(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def read_line(sock: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(1)
        assert chunk, "server closed the connection"
        buf += chunk
    return buf


def test_socket_mode_is_0600(server: ServerThread) -> None:
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600


def test_qmpclient_async(server: ServerThread) -> None:
    async def go() -> None:
        client = QMPClient("t")
        await client.connect(server.path)
        version = await client.execute("query-version")
        assert version["qemu"] == {"major": 7, "minor": 2, "micro": 22}
        names = {c["name"] for c in await client.execute("query-commands")}
        assert {"query-version", "query-commands", "qmp_capabilities"} <= names
        with pytest.raises(ExecuteError) as info:
            await client.execute("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        with client.listener() as listener:
            server.engine.emit_event("TEST_EVENT", {"x": 1})
            event = await asyncio.wait_for(listener.get(), 5)
        assert event["event"] == "TEST_EVENT" and event["data"] == {"x": 1}
        await client.disconnect()

    asyncio.run(go())


def test_legacy_client(server: ServerThread) -> None:
    qmp = QEMUMonitorProtocol(server.path)
    greeting = qmp.connect()
    assert greeting["QMP"]["capabilities"] == []
    assert qmp.cmd("query-version")["qemu"]["major"] == 7
    assert {"name": "query-version"} in qmp.cmd_raw("query-commands")["return"]
    assert qmp.cmd_raw("nope")["error"]["class"] == "CommandNotFound"
    qmp.close()


def test_clients_are_independent(server: ServerThread) -> None:
    quitter = raw_client(server.path)
    read_line(quitter)
    quitter.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-ver')
    other = raw_client(server.path)
    read_line(other)
    quitter.close()  # gone in the middle of a message
    other.sendall(b'{"execute": "qmp_capabilities"}')
    assert read_line(other) == b'{"return": {}}\r\n'
    other.sendall(b'{"execute": "query-commands", "id": "x"}')
    assert b'"id": "x"' in read_line(other)
    other.close()


def test_events_only_after_negotiation(server: ServerThread) -> None:
    sock = raw_client(server.path)
    read_line(sock)
    server.engine.emit_event("EARLY")
    sock.sendall(b'{"execute": "qmp_capabilities"}')
    assert read_line(sock) == b'{"return": {}}\r\n'
    server.engine.emit_event("LATE")
    assert b'"event": "LATE"' in read_line(sock)
    sock.close()


def test_unread_replies_pause_input_and_lose_nothing(server: ServerThread) -> None:
    """A client that sends far more than it reads: the server buffers its replies,
    stops reading that client's input past the high-water mark and resumes when
    the client reads; every reply arrives whole and in order, events between them."""
    slow = raw_client(server.path)
    slow.settimeout(60)
    other = raw_client(server.path)
    other.settimeout(60)
    read_line(slow)
    read_line(other)
    slow.sendall(b'{"execute": "qmp_capabilities"}')
    assert read_line(slow) == b'{"return": {}}\r\n'
    count = 3000  # query-commands replies: several MiB, far above any socket buffer
    sender = threading.Thread(
        target=slow.sendall,
        args=(b"".join(b'{"execute": "query-commands", "id": %d}' % i for i in range(count)),),
    )
    sender.start()
    # Meanwhile the other client is served, and an event reaches the slow one in between.
    other.sendall(b'{"execute": "qmp_capabilities"}')
    assert read_line(other) == b'{"return": {}}\r\n'
    server.engine.emit_event("BETWEEN")
    stream = slow.makefile("rb")
    seen = 0
    events = 0
    while seen < count:
        line = stream.readline()
        assert line.endswith(b"\r\n")
        message = json.loads(line)
        if "event" in message:
            events += 1
            continue
        assert message["id"] == seen and "return" in message
        seen += 1
    sender.join(60)
    assert not sender.is_alive() and events == 1
    stream.close()
    slow.close()
    other.close()
