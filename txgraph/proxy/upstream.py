"""The proxy's one connection to the real QEMU monitor.

QEMU serialises a monitor's commands and a socket chardev serves one client
at a time, so the proxy holds a single upstream connection for all of its
clients. Ownership and locking: the reader thread owns the socket's read
side and is the only one to read it; it hands replies to :meth:`execute`
through a :class:`queue.Queue` and events to the listeners. The write side
and the request/reply pairing belong to whoever holds :attr:`lock` (one
command in flight at a time); ``_listeners`` is guarded by ``_listeners_lock``.
Every wait has a deadline (:attr:`reply_timeout`).
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any

from txgraph.errors import TxgraphError

__all__ = ["Upstream", "UpstreamError"]

EventListener = Callable[[dict[str, Any]], None]


class UpstreamError(TxgraphError, RuntimeError):
    """The upstream QEMU cannot be reached, refused negotiation, or went away."""


class Upstream:
    """A negotiated QMP connection to QEMU with a reader thread (see module doc)."""

    reply_timeout = 120.0

    def __init__(self, path: str, timeout: float = 20.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self._rfile = self.sock.makefile("rb")
            self.greeting: dict[str, Any] = json.loads(self._rfile.readline() or b"{}")
        except (OSError, ValueError) as err:
            self.sock.close()
            reason = (
                err.strerror if isinstance(err, OSError) and err.strerror else "no QMP greeting"
            )
            raise UpstreamError(
                f"cannot connect to the upstream QMP socket {path}: {reason}"
            ) from None
        if "QMP" not in self.greeting:
            self.sock.close()
            raise UpstreamError(f"{path} did not greet as a QMP server")
        self.sock.settimeout(None)
        #: held by the one caller that has a command in flight
        self.lock = threading.Lock()
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._listeners: list[EventListener] = []
        self._listeners_lock = threading.Lock()
        self.closed = False
        self._reader = threading.Thread(target=self._read_loop, name="qmp-upstream", daemon=True)
        self._reader.start()
        # oob enabled when offered, so a client's exec-oob can be passed on (ProxyServer)
        offered = self.greeting["QMP"].get("capabilities", [])
        reply = self.execute("qmp_capabilities", {"enable": ["oob"]} if "oob" in offered else None)
        if "return" not in reply:
            self.close()
            raise UpstreamError(f"the upstream refused qmp_capabilities: {reply}")

    def add_listener(self, listener: EventListener) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        with self._listeners_lock:
            self._listeners.remove(listener)

    def _read_loop(self) -> None:
        try:
            for line in self._rfile:
                message = json.loads(line)
                if "event" in message:
                    with self._listeners_lock:
                        listeners = list(self._listeners)
                    for listener in listeners:
                        listener(message)
                else:
                    self._replies.put(message)
        except (OSError, ValueError):
            pass
        finally:
            self.closed = True
            self._replies.put(None)  # wakes a waiting execute: the upstream is gone

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and return its reply; the caller holds :attr:`lock`."""
        if self.closed:
            return {"error": {"class": "GenericError", "desc": "The upstream QEMU went away"}}
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\r\n")
            reply = self._replies.get(timeout=self.reply_timeout)
        except OSError:
            reply = None
        except queue.Empty:
            desc = f"The upstream QEMU did not answer within {self.reply_timeout:.0f} s"
            return {"error": {"class": "GenericError", "desc": desc}}
        if reply is None:
            return {"error": {"class": "GenericError", "desc": "The upstream QEMU went away"}}
        return reply

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """One command (takes :attr:`lock`; not for a caller already holding it)."""
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        with self.lock:
            return self.send(message)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(10)


class Locked:
    """The client interface of :func:`txgraph.plan.client.capture_graph` for a caller
    that already holds the upstream's lock."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        return self.upstream.send(message)

    def cmd(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        reply = self.execute(command, arguments)
        if "error" in reply:
            raise UpstreamError(f"{command}: {reply['error'].get('desc')}")
        return reply["return"]
