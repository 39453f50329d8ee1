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

Shared state: ``_clients`` and ``_lock`` belong to the server and are only
touched from its event-loop thread; ``_lock`` serialises engine calls.
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
from txgraph.qmp.engine import INTERNAL_ERROR, Engine
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
    """One connection: its parser, negotiation state and output stream."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.decoder = JSONStreamDecoder()
        self.negotiated = False
        #: the task serving this connection (cancelled by QMPServer.close)
        self.task: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.write(encode_message(message))

    def write(self, data: bytes) -> None:
        # One write per message keeps events from splitting a reply.
        if not self.writer.is_closing():
            self.writer.write(data)


class QMPServer:
    """Serve ``engine`` over QMP on a unix socket."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: what the greeting offers and qmp_capabilities may enable (a subclass may offer more)
        self.capabilities: tuple[str, ...] = OFFERED_CAPABILITIES
        self._lock = asyncio.Lock()
        self._clients: set[_Client] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._path: str | None = None

    async def start(self, path: str) -> None:
        """Listen on ``path`` (mode 0600; a stale socket file is replaced).

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
        except OSError as err:
            sock.close()
            raise ServeError(f"Failed to bind socket to {path}: {_strerror(err)}") from None
        except BaseException:
            sock.close()
            raise
        self._path = path
        self._server = await asyncio.start_unix_server(self._serve_client, sock=sock)
        self.engine.add_event_listener(self._on_event)

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening, disconnect every client, remove the socket file."""
        with contextlib.suppress(ValueError):
            self.engine.remove_event_listener(self._on_event)
        if self._server is not None:
            self._server.close()
        tasks = []
        for client in list(self._clients):
            client.writer.close()
            if client.task is not None and client.task is not asyncio.current_task():
                client.task.cancel()
                tasks.append(client.task)
        # Each connection task ends by itself once cancelled (see _serve_client).
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

    # -- events ------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        """Engine listener; may be called from the worker thread running a command."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if "data" in event:
            event = {**event, "data": order_event(event["event"], event["data"])}
        loop.call_soon_threadsafe(self._broadcast, event)

    def _broadcast(self, event: dict[str, Any]) -> None:
        for client in list(self._clients):
            if client.negotiated:
                client.send(event)

    # -- connections -------------------------------------------------------------------
    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        client = _Client(writer)
        client.task = asyncio.current_task()
        self._clients.add(client)
        try:
            version = await self._run_engine({"execute": "query-version"})
            client.send(
                {
                    "QMP": {
                        "version": order_return("query-version", version.get("return", {})),
                        "capabilities": list(self.capabilities),
                    }
                }
            )
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                for start in range(0, len(data), FEED_SLICE):
                    for message in client.decoder.feed(data[start : start + FEED_SLICE]):
                        client.write(await self._safe_reply(client, message))
                    # Let the other clients' input and commands have a turn between
                    # slices: one client's huge message costs them one slice's wait.
                    await asyncio.sleep(0)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close(): end normally, so asyncio's stream callback has no exception to log
            pass
        except Exception:  # a bug in txgraph: log it, lose this connection only
            log.exception("QMP connection failed unexpectedly")
        finally:
            self._clients.discard(client)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _safe_reply(self, client: _Client, message: Any) -> bytes:
        """The encoded :meth:`_reply`; a bug becomes a GenericError without Python text.

        Encoding happens here so that a value the encoder rejects is caught
        too; the traceback goes to the log for developers.
        """
        try:
            return encode_message(await self._reply(client, message))
        except Exception:
            log.exception("QMP message failed unexpectedly")
            reply = _error(INTERNAL_ERROR)
            if isinstance(message, dict) and "id" in message:
                reply["id"] = message["id"]
            return encode_message(reply)

    async def _reply(self, client: _Client, message: Any) -> dict[str, Any]:
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
                reply = await self._run_engine(message)
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

    async def _run_engine(self, message: dict[str, Any]) -> dict[str, Any]:
        """Execute on the engine, one command at a time across all clients.

        Commands run on the event-loop thread, as QEMU runs them in its main
        loop: a thread hop per command cost more than most commands take.
        """
        async with self._lock:
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
) -> None:
    """Serve QMP for ``engine`` on unix socket ``path`` until cancelled.

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
    try:
        for one in paths:
            server = QMPServer(engine)
            servers.append(server)
            await server.start(one)
        if on_ready is not None:
            on_ready()
        if servers:
            await asyncio.gather(*(server.serve_forever() for server in servers))
        else:
            await asyncio.Event().wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for server in servers:
            await server.close()


def run_server(
    path: str | Sequence[str], engine: Engine, on_ready: Callable[[], None] | None = None
) -> None:
    """Blocking form of :func:`serve` (``txgraph serve --qmp PATH``).

    :raise ServeError: the socket cannot be created.
    """
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(serve(path, engine, handle_signals=True, on_ready=on_ready))
