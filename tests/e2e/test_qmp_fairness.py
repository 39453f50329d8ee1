"""One client's huge input does not stall the other clients (QEMU's monitor reads incrementally).

Client A sends a message of half a megabyte (or 16 MiB of string) in one
``sendall`` through a small send buffer; while that call is still blocked (the
server has not yet read A's bytes), client B must get five commands answered. The ordering is the assertion: B's replies
happen before A's send returns. Every wait has a deadline; nothing is timed.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.qmp_server import ServerThread

DEADLINE = 120.0


class Client:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        assert b"QMP" in self.file.readline()
        assert self.command('{"execute": "qmp_capabilities"}') == {"return": {}}

    def command(self, text: str) -> dict[str, object]:
        self.sock.sendall(text.encode())
        reply: dict[str, object] = json.loads(self.file.readline())
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    srv = ServerThread(str(tmp_path / "qmp.sock"))
    yield srv
    srv.stop()


@pytest.mark.parametrize("payload", ["numbers", "string"])
def test_huge_input_does_not_stall_other_clients(server: ServerThread, payload: str) -> None:
    if payload == "numbers":  # token-heavy: the slow path of the lexer
        value = b"[" + b"1," * 250_000 + b"1]"
    else:  # 16 MiB string: the bulk path
        value = b'"' + b"x" * (16 << 20) + b'"'
    big = b'{"execute": "query-version", "id": "big", "arguments": {"x": ' + value + b"}}"
    a, b = Client(server.path), Client(server.path)
    # A small send buffer: A's sendall returns only once the server read nearly all of it.
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = threading.Event()
    failure: list[BaseException] = []

    def send_big() -> None:
        try:
            a.sock.sendall(big)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
        finally:
            sent.set()

    sender = threading.Thread(target=send_big)
    answered_during_send = 0
    try:
        sender.start()
        while not sent.is_set() and answered_during_send < 5:
            reply = b.command('{"execute": "query-version", "id": %d}' % answered_during_send)
            assert reply["id"] == answered_during_send and "return" in reply
            answered_during_send += not sent.is_set()
        sender.join(DEADLINE)
        assert not sender.is_alive() and not failure, failure
        reply = json.loads(a.file.readline())
        assert reply == {
            "id": "big",
            "error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"},
        }
        assert b.command('{"execute": "query-version", "id": "after"}')["id"] == "after"
    finally:
        a.close()
        b.close()
    assert answered_during_send == 5
