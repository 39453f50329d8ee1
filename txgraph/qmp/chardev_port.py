"""A QSD ``--chardev socket,server=on`` that no monitor serves: it accepts one client at a time.

qemu-storage-daemon's socket chardev (``char-socket.c``) accepts a client even
without a frontend, reports ``connected`` in QOM while one is attached, stops
accepting until that client hangs up (``tcp_chr_hup`` on ``G_IO_HUP``), then
takes the next one waiting in the backlog. Nothing reads for a frontend that is
not there; txgraph discards what such a client sends, so that a readable socket
does not keep waking the event loop.

Owner: the event loop of :func:`txgraph.qmp.server.serve`; every method runs on
that thread. :attr:`txgraph.ops.session.Chardev.connected` is written only here
and read by ``qom-get`` on the command thread (a bool store, no lock needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket

from txgraph.ops.session import Chardev

__all__ = ["ChardevPort"]

#: bytes discarded per wake-up from a client that writes to a chardev with no frontend
_DISCARD = 65536


class ChardevPort:
    """Accept and track the clients of one listening chardev socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, chardev: Chardev):
        self._loop = loop
        self._sock = sock
        self._chardev = chardev
        self._client: socket.socket | None = None
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        try:
            client, _addr = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the listener went away (shutdown): nothing to accept
        # one client at a time: the next waits in the backlog until this one hangs up
        self._loop.remove_reader(self._sock.fileno())
        client.setblocking(False)
        self._client = client
        self._chardev.connected = True
        self._loop.add_reader(client.fileno(), self._readable)

    def _readable(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            data = client.recv(_DISCARD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data and not self._hung_up(client):
            return  # a frontend-less chardev drops what it is sent
        self._drop()
        with contextlib.suppress(OSError, ValueError):
            self._loop.add_reader(self._sock.fileno(), self._accept)

    @staticmethod
    def _hung_up(client: socket.socket) -> bool:
        poller = select.poll()
        poller.register(client.fileno(), select.POLLRDHUP | select.POLLHUP)
        return any(ev & (select.POLLRDHUP | select.POLLHUP) for _fd, ev in poller.poll(0))

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._loop.remove_reader(client.fileno())
            client.close()
        self._chardev.connected = False

    def close(self) -> None:
        """Stop accepting and let the client go (the listening socket stays its owner's)."""
        with contextlib.suppress(OSError, ValueError):
            self._loop.remove_reader(self._sock.fileno())
        self._drop()
