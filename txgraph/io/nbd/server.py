"""An NBD export server over the live data plane.

What the QMP layer calls (QEMU's ``nbd-server-start``, ``block-export-add
type=nbd``, ``block-export-del``, ``nbd-server-stop``)::

    server = NbdServer(runtime)
    server.start({"type": "unix", "path": "/run/x.sock"})      # or inet 127.0.0.1:port
    server.add_export("disk0", "node-name", writable=True)     # a BlockBackend of its own
    server.add_export("vm0", None, True, backend="bb:export:vm0")   # the model's backend
    server.remove_export("disk0", "safe")                      # or "hard"
    server.stop()

Transmission reproduces the behaviour of QEMU's ``nbd_trip`` /
``nbd_co_receive_request`` / ``nbd_handle_request`` (nbd/server.c):

* a bad request magic, a short read or NBD_CMD_DISC ends the connection;
* READ/WRITE longer than 32 MiB: EINVAL; for WRITE the payload cannot be
  skipped safely, so the connection is closed after the reply;
* a WRITE payload is read in full before any check, then: EPERM on a
  read-only export (WRITE, TRIM, WRITE_ZEROES), EINVAL past the end of the
  export or for unknown flags or commands;
* with structured replies negotiated, READ answers as ``nbd_co_send_sparse_read``
  does (an OFFSET_HOLE chunk per stretch that reads as zeroes, an OFFSET_DATA
  chunk per other stretch; one OFFSET_DATA chunk with DF; see reads.py),
  BLOCK_STATUS with a BLOCK_STATUS chunk, errors with an ERROR chunk; other
  successes use simple replies.

Read data is pinned in pipes without a copy when the node maps the range onto
a host file (``DriverNode.host_extent``; pipes.py), else read into the worker's
buffer; either way inside the request bracket, and sent after it.

The server is owned above the data plane (by the Session) and reaches nodes
only through the Runtime's request interface: every export is bound to a
Runtime BlockBackend and each request resolves the backend's current root
(``Runtime.backend_root``, QEMU's ``blk_bs(exp->blk)``), so an export follows
every graph change (snapshot, filter insertion, replace) that retargets its
root edge. Each request runs inside ``Runtime.request()``, so a graph swap
committed by ``Runtime.apply`` falls between requests; network waits (payload, reply) stay
outside that bracket so a slow or vanished client never holds up a drain.

Several requests of one connection are in flight together, as in QEMU's
export (``nbd_client_receive_next_request``, ``NBD_MAX_REQUESTS`` = 16): the
connection's thread reads a request (with its payload) and hands it to one
of up to 16 worker threads of that connection, then reads the next one as
long as fewer than 16 are in flight. Replies go out in completion order, each
one whole under the connection's send lock (``send_lock``). When the
connection ends (NBD_CMD_DISC, a protocol error, the client vanishing) the
requests already read are still completed before the socket is closed.
"""

from __future__ import annotations

import errno as E
import logging
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from txgraph.errors import BlockError, IOFailure
from txgraph.io.chain import status_above
from txgraph.io.driver import DriverNode
from txgraph.io.layer import fua
from txgraph.io.nbd import protocol as P
from txgraph.io.nbd.negotiate import Session, negotiate
from txgraph.io.nbd.pipes import PipePool, available
from txgraph.io.nbd.reads import ReadReply, read_buffer, send_mixed
from txgraph.io.nbd.wire import Disconnected, parse_address, recv_exact, send_parts
from txgraph.io.runtime import Runtime

__all__ = ["NbdServer", "NbdExport"]

_MAX_EXTENTS = 2048
#: requests of one connection in flight at once (QEMU's NBD_MAX_REQUESTS)
MAX_REQUESTS = 16
#: send buffer asked for per connection
SNDBUF = 4 << 20

log = logging.getLogger(__name__)

#: the text of an I/O error reply per command (``nbd_handle_request``); the errno goes alongside
_IO_ERROR_TEXT = {
    P.CMD_READ: "reading from file failed",
    P.CMD_WRITE: "writing to file failed",
    P.CMD_WRITE_ZEROES: "writing to file failed",
    P.CMD_FLUSH: "flush failed",
    P.CMD_TRIM: "discard failed",
    P.CMD_BLOCK_STATUS: "can't get block status",
}


@dataclass(eq=False)
class NbdExport:
    """One named export (QEMU's ``NBDExport``) over a Runtime BlockBackend."""

    name: str
    backend: str
    writable: bool
    description: str | None
    runtime: Runtime
    clients: set[_Connection] = field(default_factory=set)
    #: the backend was created for this export (standalone use) and goes with it
    owns_backend: bool = False

    @property
    def node_name(self) -> str | None:
        """The node the export serves now."""
        return self.runtime.backend_root_name(self.backend)

    def node(self) -> DriverNode:
        """The current root; call inside ``Runtime.request()``."""
        return self.runtime.backend_root(self.backend)

    def size(self) -> int:
        with self.runtime.request():
            return self.node().size()


class NbdServer:
    """The process-wide NBD server: one listening socket, many exports, a thread per client."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._exports: dict[str, NbdExport] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._unix_path: str | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: set[_Connection] = set()
        #: pipes of zero-copy read replies (reads.py); None where splice is missing
        self._pipes: PipePool | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._listener is not None

    @property
    def address(self) -> Any:
        """Bound address: a unix path or ``(host, port)`` (useful with port 0)."""
        if self._listener is None:
            return None
        return self._unix_path or self._listener.getsockname()

    def start(self, addr: Mapping[str, Any]) -> None:
        """``nbd-server-start``: listen on a unix socket or TCP address."""
        if self._listener is not None:
            raise BlockError("NBD server already running")
        family, where = parse_address(addr)
        if family == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                if os.path.exists(where):
                    os.unlink(where)
                sock.bind(where)
            except OSError as e:
                sock.close()
                raise BlockError(f"Failed to bind socket to {where}: {os.strerror(e.errno or 0)}")
            self._unix_path = where
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(where)
            except OSError as e:
                sock.close()
                raise BlockError(f"Failed to bind socket: {os.strerror(e.errno or 0)}")
            self._unix_path = None
        sock.listen(64)
        self._pipes = PipePool() if available() else None
        self._listener = sock
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(sock,), name="nbd-accept", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """``nbd-server-stop``: stop listening, drop every client, forget every export."""
        sock, self._listener = self._listener, None
        if sock is None:
            raise BlockError("NBD server not running")
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        for conn in list(self._conns):
            conn.kill()
        for conn in list(self._conns):
            conn.join(5)
        with self._lock:
            owned = [e.backend for e in self._exports.values() if e.owns_backend]
            self._exports.clear()
        for key in owned:
            self.runtime.close_backend(key)
        if self._pipes is not None:
            self._pipes.close()
            self._pipes = None
        if self._unix_path:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass
            self._unix_path = None

    # -- exports ---------------------------------------------------------------------------------
    def add_export(
        self,
        name: str,
        node_name: str | None,
        writable: bool,
        description: str | None = None,
        *,
        backend: str | None = None,
    ) -> NbdExport:
        """``block-export-add type=nbd``; ``name`` is the export name clients ask for.

        With ``backend`` the export serves that Runtime BlockBackend (the
        Session's exports); otherwise a backend rooted at ``node_name`` is
        created for it.
        """
        if self._listener is None:
            raise BlockError("NBD server not running")
        if backend is None and (node_name is None or not self.runtime.has_node(node_name)):
            raise BlockError(f"Cannot find device='' nor node-name='{node_name}'")
        if backend is not None and not self.runtime.has_backend(backend):
            raise BlockError(f"Block backend '{backend}' not found")
        if len(name.encode()) > P.MAX_STRING_SIZE:
            raise BlockError(f"export name '{name}' too long")
        with self._lock:
            if name in self._exports:
                raise BlockError(f"NBD server already has export named '{name}'")
        owns = backend is None
        if owns:
            backend = f"nbd-export:{name}"
            self.runtime.open_backend(backend, node_name)
        assert backend is not None
        exp = NbdExport(name, backend, writable, description, self.runtime, owns_backend=owns)
        with self._lock:
            self._exports[name] = exp
        return exp

    def check_remove(self, name: str, mode: str = "safe") -> None:
        """The refusals of :meth:`remove_export`, without removing anything."""
        with self._lock:
            exp = self._exports.get(name)
            if exp is None:
                raise BlockError(f"Export '{name}' is not found")
            if mode == "safe" and exp.clients:
                raise BlockError(f"export '{name}' still in use")

    def remove_export(self, name: str, mode: str = "safe") -> None:
        """``block-export-del``: ``safe`` refuses while clients use it, ``hard`` drops them."""
        with self._lock:
            exp = self._exports.get(name)
            if exp is None:
                raise BlockError(f"Export '{name}' is not found")
            if mode == "safe" and exp.clients:
                raise BlockError(f"export '{name}' still in use")
            del self._exports[name]
            victims = list(exp.clients)
        for conn in victims:
            conn.kill()
        if exp.owns_backend:
            self.runtime.close_backend(exp.backend)

    def exports(self) -> list[NbdExport]:
        with self._lock:
            return list(self._exports.values())

    def _lookup(self, name: str) -> NbdExport | None:
        with self._lock:
            return self._exports.get(name)

    # -- connections -----------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                # Room for a few whole 2 MiB replies (the kernel caps it at wmem_max): with
                # the default ~200 KiB a reply is written in many wakeups of this side.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            except OSError:
                pass
            conn = _Connection(self, sock)
            with self._lock:
                self._conns.add(conn)
            conn.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)
            if conn.export is not None:
                conn.export.clients.discard(conn)


class _Workers:
    """Up to ``limit`` daemon threads running one connection's requests.

    Owner: the connection's receiving thread, the only caller of ``submit``
    and ``close``. ``_slots`` bounds the requests in flight: ``submit`` waits
    for a free slot (never while holding a request bracket), a finished task
    frees its slot. Threads are started on demand, so an idle connection
    costs one thread.
    """

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._lock = threading.Lock()  # guards _busy and _threads
        self._limit = limit

    def submit(self, task: Callable[[], None]) -> None:
        self._slots.acquire()
        with self._lock:
            self._busy += 1
            if self._busy > len(self._threads) and len(self._threads) < self._limit:
                t = threading.Thread(target=self._loop, name="nbd-request", daemon=True)
                self._threads.append(t)
                t.start()
        self._queue.put(task)

    def _loop(self) -> None:
        while (task := self._queue.get()) is not None:
            try:
                task()
            finally:
                with self._lock:
                    self._busy -= 1
                self._slots.release()

    def close(self, timeout: float) -> None:
        """Let every submitted request finish, then stop the threads."""
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        for t in threads:
            t.join(timeout)


class _Connection:
    """One client: negotiation, then requests served concurrently (see the module docstring).

    ``send_lock`` is owned by the connection: every reply is written whole
    while holding it, so replies of concurrent requests never interleave.
    """

    def __init__(self, server: NbdServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.export: NbdExport | None = None
        self.session: Session | None = None
        self.size = 0
        self.send_lock = threading.Lock()
        self._workers = _Workers(MAX_REQUESTS)
        self._thread = threading.Thread(target=self._run, name="nbd-client", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def kill(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _attach(self, export: object) -> bool:
        srv = self.server
        with srv._lock:
            if not isinstance(export, NbdExport) or srv._exports.get(export.name) is not export:
                return False  # removed while we negotiated
            self.export = export
            export.clients.add(self)
            return True

    def _run(self) -> None:
        try:
            srv = self.server
            session = negotiate(self.sock, srv._lookup, srv.exports, self._attach)
            if session is None:
                return
            self.session = session
            self.size = session.export.size()
            while self._one_request():
                pass
        except (Disconnected, OSError):
            pass  # the client went away; nothing of the server's state depends on it
        except IOFailure:
            pass  # the export lost its medium while the client negotiated (it was removed)
        finally:
            self._workers.close(30)  # requests already read still complete
            self.server._forget(self)
            try:
                self.sock.close()
            except OSError:
                pass

    # -- replies -------------------------------------------------------------------------------
    def _send(self, parts: list[bytes | memoryview]) -> None:
        """Send one whole reply; concurrent requests take turns (``send_lock``)."""
        with self.send_lock:
            send_parts(self.sock, parts)

    def _simple(self, cookie: int, err: int, data: bytes | memoryview = b"") -> None:
        self._send([P.SIMPLE_REPLY.pack(P.SIMPLE_REPLY_MAGIC, err, cookie), data])

    def _error(self, cookie: int, errno_: int, msg: str) -> None:
        err = P.errno_to_nbd(errno_)
        assert self.session is not None
        if self.session.structured:
            text = msg.encode()[:4096]
            payload = struct.pack(">IH", err, len(text)) + text
            self._send(
                [
                    P.STRUCTURED_HDR.pack(
                        P.STRUCTURED_REPLY_MAGIC,
                        P.REPLY_FLAG_DONE,
                        P.REPLY_TYPE_ERROR,
                        cookie,
                        len(payload),
                    ),
                    payload,
                ]
            )
        else:
            self._simple(cookie, err)

    # -- requests ------------------------------------------------------------------------------
    def _one_request(self) -> bool:
        """Read one request and start serving it; False ends the connection."""
        magic, flags, cmd, cookie, offset, length = P.REQUEST.unpack(
            recv_exact(self.sock, P.REQUEST.size)
        )
        if magic != P.REQUEST_MAGIC or cmd == P.CMD_DISC:
            return False
        exp, session = self.export, self.session
        assert exp is not None and session is not None
        payload = b""
        if cmd in (P.CMD_READ, P.CMD_WRITE) and length > P.MAX_BUFFER_SIZE:
            self._error(
                cookie, E.EINVAL, f"len ({length}) is larger than max len ({P.MAX_BUFFER_SIZE})"
            )
            return bool(cmd != P.CMD_WRITE)  # an unread payload would be parsed as requests
        if cmd == P.CMD_WRITE:
            payload = recv_exact(self.sock, length)
        if cmd in (P.CMD_WRITE, P.CMD_TRIM, P.CMD_WRITE_ZEROES) and not exp.writable:
            self._error(cookie, E.EPERM, "Export is read-only")
            return True
        if cmd != P.CMD_FLUSH and (offset > self.size or length > self.size - offset):
            self._error(
                cookie,
                E.EINVAL,
                f"operation past EOF; From: {offset}, Len: {length}, Size: {self.size}",
            )
            return True
        if flags & ~_valid_flags(cmd, session.structured):
            self._error(cookie, E.EINVAL, f"unsupported flags 0x{flags:x} for command {cmd}")
            return True
        self._workers.submit(
            lambda: self._serve(exp, session, cmd, flags, cookie, offset, length, payload)
        )
        return True

    def _serve(
        self,
        exp: NbdExport,
        session: Session,
        cmd: int,
        flags: int,
        cookie: int,
        offset: int,
        length: int,
        payload: bytes,
    ) -> None:
        """Run one request on a worker thread and reply (``nbd_handle_request``)."""
        try:
            try:
                self._dispatch(exp, session, cmd, flags, cookie, offset, length, payload)
            except IOFailure as e:
                self._error(cookie, e.errno, _IO_ERROR_TEXT.get(cmd, e.desc))
            except Disconnected:
                raise  # the client hung up while its reply was being sent; not a driver fault
            except Exception as e:  # a driver bug must not cost the client its connection
                # One line for the operator; the traceback only for whoever debugs txgraph.
                log.error("NBD request %d failed: internal error (%s)", cmd, type(e).__name__)
                log.debug("NBD request %d failed", cmd, exc_info=True)
                self._error(cookie, E.EIO, "Input/output error")
        except (Disconnected, OSError):
            self.kill()  # the reply cannot be delivered: end the connection

    def _dispatch(
        self,
        exp: NbdExport,
        session: Session,
        cmd: int,
        flags: int,
        cookie: int,
        offset: int,
        length: int,
        payload: bytes,
    ) -> bool:
        rt = exp.runtime
        if cmd == P.CMD_READ:
            if flags & P.CMD_FLAG_FUA:
                # nbd_do_cmd_read: a READ with FUA flushes the export's node first, and a
                # failed flush is the whole reply (the protocol defines FUA for writes only)
                try:
                    with rt.request():
                        exp.node().flush()
                except IOFailure as e:
                    self._error(cookie, e.errno, "flush failed")
                    return True
            reply = ReadReply(self.server._pipes)
            try:
                data = read_buffer(length)  # this thread's until the reply is sent (reads.py)
                with rt.request():
                    node = exp.node()
                    if session.structured and not flags & P.CMD_FLAG_DF and length:
                        # A failed block status ends in an ERROR chunk, a failed read drops
                        # the connection after the chunks before it (ReadReply.sparse).
                        reply.sparse(node, offset, data)
                    else:
                        reply.whole(node, offset, data)  # a failure: an error reply
                with self.send_lock:
                    send_mixed(self.sock, reply.wire(cookie, session.structured))
            finally:
                reply.release()
            if reply.broken:
                self.kill()
            return True
        if cmd == P.CMD_WRITE:
            with rt.request():
                node = exp.node()
                if flags & P.CMD_FLAG_FUA:
                    fua(node, lambda: node.write(offset, payload))
                else:
                    node.write(offset, payload)
        elif cmd == P.CMD_WRITE_ZEROES:
            with rt.request():
                node = exp.node()
                unmap = not flags & P.CMD_FLAG_NO_HOLE
                if flags & P.CMD_FLAG_FUA:
                    fua(node, lambda: node.write_zeroes(offset, length, may_unmap=unmap))
                else:
                    node.write_zeroes(offset, length, may_unmap=unmap)
        elif cmd == P.CMD_TRIM:
            with rt.request():
                node = exp.node()
                node.discard(offset, length)
                if flags & P.CMD_FLAG_FUA:
                    node.flush()
        elif cmd == P.CMD_FLUSH:
            with rt.request():
                exp.node().flush()
        elif cmd == P.CMD_CACHE:
            pass  # prefetching a page-cache-backed node buys nothing
        elif cmd == P.CMD_BLOCK_STATUS:
            return self._block_status(exp, session, flags, cookie, offset, length)
        else:
            self._error(cookie, E.EINVAL, f"unsupported command {cmd}")
            return True
        self._simple(cookie, 0)
        return True

    def _block_status(
        self, exp: NbdExport, session: Session, flags: int, cookie: int, offset: int, length: int
    ) -> bool:
        """``nbd_co_send_block_status`` for ``base:allocation``."""
        if not session.meta or not length:
            self._error(cookie, E.EINVAL, "CMD_BLOCK_STATUS not negotiated")
            return True
        descs: list[bytes] = []
        rt = exp.runtime
        with rt.request():
            node = exp.node()
            pos, end = offset, offset + length
            while pos < end and len(descs) < _MAX_EXTENTS:
                st = status_above(node, pos, end - pos)  # through the backing chain
                n = max(1, min(st.length, end - pos))
                hole = st.zero if st.data is None else not st.data
                state = (P.STATE_HOLE if hole else 0) | (P.STATE_ZERO if st.zero else 0)
                descs.append(struct.pack(">II", n, state))
                pos += n
                if flags & P.CMD_FLAG_REQ_ONE:
                    break
        ctx_id = next(iter(session.meta))
        body = struct.pack(">I", ctx_id) + b"".join(descs)
        self._send(
            [
                P.STRUCTURED_HDR.pack(
                    P.STRUCTURED_REPLY_MAGIC,
                    P.REPLY_FLAG_DONE,
                    P.REPLY_TYPE_BLOCK_STATUS,
                    cookie,
                    len(body),
                ),
                body,
            ]
        )
        return True


def _valid_flags(cmd: int, structured: bool) -> int:
    """Command flags QEMU accepts per command (``nbd_co_receive_request``)."""
    valid = P.CMD_FLAG_FUA
    if cmd == P.CMD_READ and structured:
        valid |= P.CMD_FLAG_DF
    elif cmd == P.CMD_WRITE_ZEROES:
        valid |= P.CMD_FLAG_NO_HOLE | P.CMD_FLAG_FAST_ZERO
    elif cmd == P.CMD_BLOCK_STATUS:
        valid |= P.CMD_FLAG_REQ_ONE
    return valid
