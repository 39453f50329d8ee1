"""The QMP socket server: QEMU's QMP monitor in front of a txgraph :class:`Engine`.

Reproduces what a client of qemu-storage-daemon 7.2's ``--monitor`` sees
(QEMU's ``monitor/qmp.c``): a greeting, capabilities negotiation, one reply per
message in order, CRLF-terminated output, ``id`` echoed verbatim, parse errors
answered without ``id``, and events written between replies once a client has
negotiated. Input needs no delimiter and may arrive in any fragments
(:class:`~txgraph.qobject.decoder.JSONStreamDecoder`).

Several clients may be connected; commands from all of them run one at a time
on the engine, in the event loop (QEMU runs them serially in its main loop).
Each client's input is decoded in slices of :data:`FEED_SLICE` bytes with a
turn of the loop between them, so one client's huge or slow message delays
the others by at most one slice or one command, never by the whole message.
A client that goes away, even in the middle of a message, affects nobody else.

No Python text reaches a client: an unexpected exception while answering a
message becomes a ``GenericError`` with :data:`~txgraph.qmp.engine.INTERNAL_ERROR`
as its desc, and the traceback goes to the log (stderr under ``txgraph serve``).

Shared state: ``_clients``, ``_gc_timer`` and every :class:`_Client` belong to the
server and are only touched from its event-loop thread (events from other threads are
handed over with ``call_soon_threadsafe``); commands run as loop callbacks,
one at a time, each under the session lock the engine takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from txgraph.errors import QMPError, TxgraphError
from txgraph.qmp.chardev_port import ChardevPort
from txgraph.qmp.engine import INTERNAL_ERROR, Engine
from txgraph.qmp.idle_gc import COLLECTOR
from txgraph.qmp.polling import DEFAULT_POLL_MAX_NS, polling_loop
from txgraph.qmp.qapi import (
    check_message,
    order_event,
    order_return,
    validate_arguments,
)
from txgraph.qobject.decoder import JSONParseError, JSONStreamDecoder
from txgraph.qobject.encoder import encode_message

__all__ = ["QMPServer", "ServeError", "serve", "run_server"]

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
#: Output a client leaves unread before the server stops reading its input
#: (asyncio's default write high-water mark, which the stream server drained to).
OUTPUT_HIGH_WATER = 64 * 1024
LISTEN_BACKLOG = 128
#: Bytes decoded per turn of the event loop for one client (see _serve_client).
FEED_SLICE = 16 * 1024
# txgraph offers no capability: ``exec-oob`` is not implemented, and QMPClient
# enables every capability a server advertises.
OFFERED_CAPABILITIES: tuple[str, ...] = ()


#: Python frames allowed while answering (see QMPServer.start).
RECURSION_LIMIT = 20_000

#: The longest unix socket path: Linux's ``sun_path`` holds 108 bytes; QEMU
#: takes all 108 (unterminated), Python's socket module keeps one for the NUL.
SUN_PATH_MAX = 107


class ServeError(Exception):
    """The QMP socket cannot be created; the message is one line for the user."""


def _strerror(err: OSError) -> str:
    """The C library's text for ``err`` (QEMU's error_setg_errno), without Python's prefix."""
    return os.strerror(err.errno) if err.errno else "Unknown error"


def _error(desc: str, error_class: str = "GenericError") -> dict[str, Any]:
    return {"error": {"class": error_class, "desc": desc}}


class _Client:
    """One connection: its socket, parser, negotiation state and output buffer.

    Owned by the server's event-loop thread; nothing else touches it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.decoder = JSONStreamDecoder()
        self.negotiated = False
        self.closed = False
        #: input read but not yet decoded (decoded FEED_SLICE bytes per turn)
        self.pending = memoryview(b"")
        #: output the socket did not take yet (written when it is writable again)
        self.out = bytearray()
        #: the loop watches the socket for input (off while input is pending or output piles up)
        self.reading = False

    def send(self, message: dict[str, Any]) -> None:
        self.write(encode_message(message))

    def write(self, data: bytes) -> None:
        """Queue one whole message: nothing is written between its bytes (see _flush)."""
        if self.closed:
            return
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the client went away; its input end notices and closes
            self.closed = True
            return
        if sent < len(data):
            self.out += data[sent:]


class QMPServer:
    """Serve ``engine`` over QMP on a unix socket.

    The connections are non-blocking sockets watched by the running event
    loop (``add_reader``/``add_writer``), without asyncio's stream objects: a
    command costs one wake-up, one ``recv`` and one ``send``. Everything below
    runs as loop callbacks on the loop's thread, so commands of all clients run
    one at a time (the engine takes the session lock for each as well).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: what the greeting offers and qmp_capabilities may enable (a subclass may offer more)
        self.capabilities: tuple[str, ...] = OFFERED_CAPABILITIES
        self._clients: set[_Client] = set()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._path: str | None = None
        self._done: asyncio.Future[None] | None = None
        #: this server's pending look at the collector's pause (``_idle``), at most one
        self._gc_timer: asyncio.TimerHandle | None = None

    async def start(self, path: str, listening: socket.socket | None = None) -> None:
        """Listen on ``path`` (mode 0600; a stale socket file is replaced), or serve
        ``listening``, the socket a QSD ``--chardev`` already listens on at ``path``.

        Reproduces QEMU's ``unix_listen_saddr`` checks and error texts: a
        path longer than ``sun_path`` (108 bytes) is refused before anything
        is touched, a failing bind names the path and the errno text.

        :raise ServeError: the socket cannot be created (one-line message).
        """
        self._loop = asyncio.get_running_loop()
        # QEMU's visitors follow a message as deep as the streamer lets it nest
        # (1024 levels); txgraph's QAPI visitor takes about five frames a level.
        sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            raise ServeError(
                f"UNIX socket path '{path}' is too long "
                f"(path must be less than {SUN_PATH_MAX + 1} bytes)"
            )
        if listening is not None:
            # a QSD --chardev already listens on the path (its connections wait in the
            # backlog until now): serve that socket rather than bind the path again
            sock = listening
            sock.setblocking(False)
        else:
            sock = self._bind(path)
        self._path = path
        self._sock = sock
        self._done = self._loop.create_future()
        self._loop.add_reader(sock.fileno(), self._accept)
        self.engine.add_event_listener(self._on_event)

    @staticmethod
    def _bind(path: str) -> socket.socket:
        """``unix_listen_saddr``: unlink a stale file, bind, restrict to the owner, listen."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise ServeError(f"Failed to unlink socket {path}: {_strerror(err)}") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            # Restrict before listen(): nobody can connect in between.
            os.chmod(path, 0o600)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise ServeError(f"Failed to bind socket to {path}: {_strerror(err)}") from None
        except BaseException:
            sock.close()
            raise
        return sock

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (or until the awaiting task is cancelled)."""
        assert self._done is not None
        await asyncio.shield(self._done)

    async def close(self) -> None:
        """Stop listening, disconnect every client, remove the socket file."""
        with contextlib.suppress(ValueError):
            self.engine.remove_event_listener(self._on_event)
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for client in list(self._clients):
            self._drop(client)
        if self._gc_timer is not None:
            self._gc_timer.cancel()
            self._gc_timer = None
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None

    # -- events ------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        """Engine listener; may be called from the worker thread running a command."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if "data" in event:
            event = {**event, "data": order_event(event["event"], event["data"])}
        # Delivered at the next turn of the loop: after the reply being written,
        # never inside a message.
        loop.call_soon_threadsafe(self._broadcast, event)

    def _broadcast(self, event: dict[str, Any]) -> None:
        data: bytes | None = None
        for client in list(self._clients):
            if client.negotiated:
                data = data if data is not None else encode_message(event)
                client.write(data)
                self._watch(client)

    # -- connections -------------------------------------------------------------------
    def _accept(self) -> None:
        """The listening socket is readable: take every waiting connection."""
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE: the connection waits in the backlog
                log.exception("QMP accept failed")
                return
            conn.setblocking(False)
            client = _Client(conn)
            self._clients.add(client)
            try:
                version = self._run_engine({"execute": "query-version"})
                client.send(
                    {
                        "QMP": {
                            "version": order_return("query-version", version.get("return", {})),
                            "capabilities": list(self.capabilities),
                        }
                    }
                )
            except Exception:
                log.exception("QMP greeting failed unexpectedly")
                self._drop(client)
                continue
            self._watch(client)

    def _watch(self, client: _Client) -> None:
        """Read when nothing is pending and the output has room; write while output waits."""
        loop = self._loop
        if client.closed or loop is None:
            if client in self._clients:
                self._drop(client)
            return
        want_read = not client.pending and len(client.out) < OUTPUT_HIGH_WATER
        if want_read != client.reading:
            if want_read:
                loop.add_reader(client.fd, self._readable, client)
            else:
                loop.remove_reader(client.fd)
            client.reading = want_read
        if client.out:
            loop.add_writer(client.fd, self._writable, client)

    def _drop(self, client: _Client) -> None:
        """Forget a connection: its watches, its socket (the others go on)."""
        self._clients.discard(client)
        client.closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed() and client.fd >= 0:
            loop.remove_reader(client.fd)
            loop.remove_writer(client.fd)
        client.reading = False
        client.fd = -1
        client.sock.close()

    def _readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            data = b""
        if not data:
            self._drop(client)
            return
        client.pending = memoryview(data)
        self._feed(client)

    def _feed(self, client: _Client) -> None:
        """Decode one slice of the pending input and answer what it completes.

        One slice per turn of the loop: another client's input and commands
        get a turn in between, so one client's huge message costs them one
        slice's wait, never the whole message.
        """
        if client.closed:
            return
        chunk, client.pending = client.pending[:FEED_SLICE], client.pending[FEED_SLICE:]
        try:
            for message in client.decoder.feed(bytes(chunk)):
                client.write(self._safe_reply(client, message))
                COLLECTOR.answered()
        except Exception:  # a bug in txgraph: log it, lose this connection only
            log.exception("QMP connection failed unexpectedly")
            self._drop(client)
            return
        if self._loop is not None:
            # More input of this client, or an idle moment for the collector (idle_gc.py)
            self._loop.call_soon(self._feed if client.pending else self._idle, client)
        self._watch(client)

    def _idle(self, _client: _Client | None) -> None:
        """Runs after the ready callbacks, and when the collector's pause has lasted:
        collect if no client has input pending and the pause is long enough, else look
        again when it will be (idle_gc.py)."""
        if self._loop is None or self._has_pending():
            return
        left = COLLECTOR.pause_left()
        if left == 0:
            COLLECTOR.idle()
        elif left is not None and self._gc_timer is None:
            self._gc_timer = self._loop.call_later(left, self._pause_over)

    def _pause_over(self) -> None:
        self._gc_timer = None
        self._idle(None)

    def _has_pending(self) -> bool:
        return any(c.pending for c in self._clients)

    def _writable(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        del client.out[:sent]
        if not client.out and self._loop is not None:
            self._loop.remove_writer(client.fd)
        self._watch(client)

    def _safe_reply(self, client: _Client, message: Any) -> bytes:
        """The encoded :meth:`_reply`; a bug becomes a GenericError without Python text.

        Encoding happens here so that a value the encoder rejects is caught
        too; the traceback goes to the log for developers.
        """
        try:
            return encode_message(self._reply(client, message))
        except Exception:
            log.exception("QMP message failed unexpectedly")
            reply = _error(INTERNAL_ERROR)
            if isinstance(message, dict) and "id" in message:
                reply["id"] = message["id"]
            return encode_message(reply)

    def _reply(self, client: _Client, message: Any) -> dict[str, Any]:
        """The reply to one decoded message (monitor_qmp_dispatch + qmp_dispatch)."""
        if isinstance(message, JSONParseError):
            return _error(message.desc)
        try:
            name, arguments = check_message(message)
            if name == "qmp_capabilities":
                reply = {"return": self._capabilities(client, arguments)}
            elif not client.negotiated:
                raise QMPError(
                    "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound"
                )
            else:
                reply = self._run_engine(message)
                if "return" in reply:
                    reply["return"] = order_return(name, reply["return"])
                return reply
        except TxgraphError as err:
            reply = {"error": err.to_qmp()}
        if isinstance(message, dict) and "id" in message:
            reply["id"] = message["id"]
        return reply

    def _capabilities(self, client: _Client, arguments: dict[str, Any]) -> dict[str, Any]:
        """``qmp_capabilities``: the only command before negotiation, refused after it."""
        typed = validate_arguments("qmp_capabilities", arguments)
        if client.negotiated:
            raise QMPError(
                "Capabilities negotiation is already complete, command ignored", "CommandNotFound"
            )
        for cap in typed.get("enable", []):
            if cap not in self.capabilities:
                raise QMPError(f"Capability '{cap}' not available")
        client.negotiated = True
        return {}

    def _run_engine(self, message: dict[str, Any]) -> dict[str, Any]:
        """Execute on the engine; one command at a time across all clients.

        Commands run on the event-loop thread, as QEMU runs them in its main
        loop (a thread hop per command cost more than most commands take); the
        loop runs one callback at a time, so no two commands ever overlap.
        """
        try:
            return self.engine.execute(message)
        except Exception:  # a bug in a handler must not cost the connection
            log.exception("QMP command failed unexpectedly")
            reply = _error(INTERNAL_ERROR)
            if "id" in message:
                reply["id"] = message["id"]
            return reply


async def serve(
    path: str | Sequence[str],
    engine: Engine,
    *,
    handle_signals: bool = False,
    on_ready: Callable[[], None] | None = None,
    listening: dict[str, socket.socket] | None = None,
) -> None:
    """Serve QMP for ``engine`` on unix socket ``path`` until cancelled.

    ``listening`` maps paths that already listen (QSD's ``--chardev``) to their
    sockets; a server on such a path takes its socket out of the map.

    ``path`` may also be several paths (one monitor each, sharing the engine,
    as QSD's repeated ``--monitor``) or none (QSD without a monitor: it runs
    until a signal). With ``handle_signals`` (the main thread of ``txgraph
    serve``), SIGTERM and SIGINT end the server the way they end
    qemu-storage-daemon: cleanly, the socket files removed. ``on_ready`` runs
    once the handlers are installed and every monitor listens (QSD writes its
    ``--pidfile`` only then, so a SIGTERM sent as soon as the file appears
    always finds the handler; an exception from it stops the server).
    """
    paths = [path] if isinstance(path, str) else list(path)
    servers: list[QMPServer] = []
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals and task is not None else ()
    for sig in signals:
        assert task is not None
        loop.add_signal_handler(sig, task.cancel)
    ports: list[ChardevPort] = []
    try:
        for one in paths:
            server = QMPServer(engine)
            servers.append(server)
            await server.start(one, (listening or {}).pop(one, None))
        chardevs = engine.context.session.chardevs.values()
        for path, sock in (listening or {}).items():
            # the chardevs no monitor serves still take clients, one at a time
            ports += [ChardevPort(loop, sock, c) for c in chardevs if c.path == path][:1]
        if on_ready is not None:
            on_ready()
        if servers:
            await asyncio.gather(*(server.serve_forever() for server in servers))
        else:
            await asyncio.Event().wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for port in ports:
            port.close()
        for server in servers:
            await server.close()


def run_server(
    path: str | Sequence[str],
    engine: Engine,
    on_ready: Callable[[], None] | None = None,
    listening: dict[str, socket.socket] | None = None,
    poll_max_ns: int = DEFAULT_POLL_MAX_NS,
) -> None:
    """Blocking form of :func:`serve` (``txgraph serve --qmp PATH``).

    The loop polls adaptively for up to ``poll_max_ns`` before it sleeps
    (:mod:`txgraph.qmp.polling`; 0 turns it off).

    :raise ServeError: the socket cannot be created.
    """
    with (
        contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError),
        asyncio.Runner(loop_factory=lambda: polling_loop(poll_max_ns)) as runner,
    ):
        runner.run(serve(path, engine, handle_signals=True, on_ready=on_ready, listening=listening))
