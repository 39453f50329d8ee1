"""Socket helpers shared by the NBD server and client, plus address parsing."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Disconnected", "recv_exact", "send_parts", "sendmsg_all", "parse_address", "connect"]


class Disconnected(Exception):
    """The peer closed the connection (or broke the protocol badly enough to close it)."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes or raise Disconnected."""
    if n == 0:
        return b""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        try:
            k = sock.recv_into(view[got:], n - got)
        except OSError as e:
            raise Disconnected(str(e)) from None
        if k == 0:
            raise Disconnected("connection closed by peer")
        got += k
    return bytes(buf)


def send_parts(sock: socket.socket, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    """Send buffers back to back without joining them (``sendmsg``, resumed on short writes)."""
    try:
        sendmsg_all(sock, [memoryview(p).cast("B") for p in parts if len(p)], 0)
    except OSError as e:
        raise Disconnected(str(e)) from None


#: buffers per sendmsg (Linux's UIO_MAXIOV is 1024)
IOV_MAX = 512


def sendmsg_all(sock: socket.socket, views: list[memoryview], flags: int) -> None:
    """``sendmsg`` of ``views`` until all is sent, at most :data:`IOV_MAX` per call (the
    calls before the last add ``MSG_MORE``); consumes ``views``. Raises ``OSError``."""
    while views:
        more = flags | socket.MSG_MORE if len(views) > IOV_MAX else flags
        sent = sock.sendmsg(views[:IOV_MAX], [], more)
        while sent and views:
            head = views[0]
            if sent >= len(head):
                sent -= len(head)
                views.pop(0)
            else:
                views[0] = head[sent:]
                sent = 0


def parse_address(addr: Mapping[str, Any]) -> tuple[str, Any]:
    """A QMP ``SocketAddress`` (flat) or ``SocketAddressLegacy`` (``data`` member) → (family, addr).

    Returns ``("unix", path)`` or ``("inet", (host, port))``.
    """
    kind = str(addr.get("type", ""))
    data = addr.get("data", addr)
    if kind == "unix":
        return "unix", str(data["path"])
    if kind == "inet":
        return "inet", (str(data.get("host", "127.0.0.1")), int(data.get("port", 10809)))
    raise ValueError(f"unsupported socket address type '{kind}'")


def connect(family: str, where: Any, timeout: float | None = None) -> socket.socket:
    if family == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        # A numeric IPv6 host (an nbd://[::1]/x URI resolves to one) needs AF_INET6.
        inet6 = ":" in str(where[0])
        sock = socket.socket(socket.AF_INET6 if inet6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    try:
        sock.connect(where)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock
