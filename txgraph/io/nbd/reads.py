"""NBD read replies: built inside the request bracket, sent outside it.

``nbd_do_cmd_read`` / ``nbd_co_send_sparse_read`` (QEMU's ``nbd/server.c``):
with structured replies and no ``DF`` flag, each stretch of the request that
reads as zeroes (``bdrv_block_status_above``'s ZERO bit) is an OFFSET_HOLE
chunk and is not read; every other stretch is read and sent as an OFFSET_DATA
chunk of its own; the last chunk carries DONE. A failed block status ends the
reply with an ERROR chunk ("unable to check for holes: ..."); a failed read of
a stretch drops the connection after the chunks before it (QEMU 7.2). With
``DF`` or simple replies the whole range is one read: a failure is an error
reply, success one data chunk (a zero-length structured read: a NONE chunk).

Where the bytes of a data stretch are kept until the send: a stretch of at
least :data:`~txgraph.io.nbd.pipes.PIN_MIN` bytes whose node answers
:meth:`~txgraph.io.driver.DriverNode.host_extent` is pinned in pipes (zero
copy, :mod:`txgraph.io.nbd.pipes`); anything else is read into the thread's
page-aligned buffer (:func:`read_buffer`), as is the part of a stretch no pipe
is left for. QEMU allocates that buffer with ``qemu_blockalign`` from a heap
that reuses its pages; a Python ``bytes`` of 2 MiB would be a fresh mapping per
request (512 page faults and a zeroing before the copy), so each worker thread
keeps one and its reply is sent before the thread takes its next request.

Thread discipline: the buffers live in a ``threading.local``; a :class:`ReadReply`
belongs to the one request that builds and sends it.
"""

from __future__ import annotations

import errno as E
import os
import socket
import struct
import threading
from dataclasses import dataclass, field

from txgraph.errors import IOFailure
from txgraph.io.buffers import aligned_buffer, child_readinto
from txgraph.io.chain import HoleCheckFailure, reads_as_zero
from txgraph.io.driver import DriverNode
from txgraph.io.nbd import protocol as P
from txgraph.io.nbd.pipes import PIN_MIN, Pinned, Pipe, PipePool, pin, splice_out
from txgraph.io.nbd.wire import Disconnected, sendmsg_all

__all__ = ["read_buffer", "ReadReply", "KEEP_MAX"]

#: buffers up to this size stay with their thread (16 workers x 4 MiB at most per connection)
KEEP_MAX = 4 << 20

_LOCAL = threading.local()
#: zeros past a file's end inside a pinned stretch are sent from here (never written)
_ZEROS = memoryview(bytes(1 << 20))

Part = memoryview | bytes | Pinned


def read_buffer(length: int) -> memoryview:
    """A page-aligned buffer of ``length`` bytes owned by the calling thread until its next call."""
    if length > KEEP_MAX:
        return aligned_buffer(length)
    buf: memoryview | None = getattr(_LOCAL, "buf", None)
    if buf is None or len(buf) < length:
        buf = aligned_buffer(max(length, 64 << 10))
        _LOCAL.buf = buf
    return buf[:length]


def _zeros(n: int) -> list[Part]:
    step = len(_ZEROS)
    return [_ZEROS[: min(step, n - i)] for i in range(0, n, step)]


@dataclass
class ReadReply:
    """One read's reply: chunks ``(offset, length, parts or None for a hole)``, then maybe
    an error chunk (``error``) or a dropped connection (``broken``)."""

    pool: PipePool | None
    chunks: list[tuple[int, int, list[Part] | None]] = field(default_factory=list)
    error: IOFailure | None = None
    broken: bool = False
    pipes: list[Pipe] = field(default_factory=list)

    # -- built inside Runtime.request() ----------------------------------------------------
    def _read(self, node: DriverNode, offset: int, out: memoryview) -> list[Part]:
        """The bytes of ``[offset, offset+len(out))`` as a read of ``node`` gives them."""
        n, pool = len(out), self.pool
        ext = node.host_extent(offset, n) if pool is not None and n >= PIN_MIN else None
        if ext is None or pool is None:
            child_readinto(node, offset, out)
            return [out]
        fd, host = ext
        try:
            runs, got, eof = pin(pool, self.pipes, fd, host, n)
        except OSError as e:
            err = e.errno or E.EIO
            raise IOFailure(os.strerror(err), err) from None
        parts: list[Part] = list(runs)
        if got < n:
            if eof:  # past the file's end: zeros, as the file driver's short read
                parts += _zeros(n - got)
            else:  # no pipe left: the rest is read the ordinary way
                child_readinto(node, offset + got, out[got:])
                parts.append(out[got:])
        return parts

    def sparse(self, node: DriverNode, offset: int, out: memoryview) -> None:
        """``nbd_co_send_sparse_read``'s reads (structured, no DF, non-empty)."""
        pos, end = offset, offset + len(out)
        while pos < end:
            try:
                zero, n = reads_as_zero(node, pos, end - pos)
            except IOFailure as err:
                self.error = HoleCheckFailure(f"unable to check for holes: {err.desc}", err.errno)
                return
            n = min(n, end - pos)
            if zero:
                self.chunks.append((pos, n, None))
            else:
                try:
                    parts = self._read(node, pos, out[pos - offset : pos - offset + n])
                except IOFailure:
                    self.broken = True
                    return
                self.chunks.append((pos, n, parts))
            pos += n

    def whole(self, node: DriverNode, offset: int, out: memoryview) -> None:
        """One read of the whole range (DF, simple replies); a failure raises ``IOFailure``."""
        self.chunks.append((offset, len(out), self._read(node, offset, out) if len(out) else []))

    # -- sent outside it ---------------------------------------------------------------------
    def wire(self, cookie: int, structured: bool) -> list[Part]:
        """The reply's bytes in order (headers, payloads, pinned runs)."""
        if not structured:
            (_, _, parts) = self.chunks[0]
            return [P.SIMPLE_REPLY.pack(P.SIMPLE_REPLY_MAGIC, 0, cookie), *(parts or [])]
        out: list[Part] = []
        last = len(self.chunks) - 1
        for i, (off, n, parts) in enumerate(self.chunks):
            done = P.REPLY_FLAG_DONE if i == last and self.error is None and not self.broken else 0
            if parts is None:
                out.append(
                    _chunk(done, P.REPLY_TYPE_OFFSET_HOLE, cookie, struct.pack(">QI", off, n))
                )
            elif n == 0:
                out.append(_chunk(done, P.REPLY_TYPE_NONE, cookie, b""))
            else:
                out.append(
                    _chunk(done, P.REPLY_TYPE_OFFSET_DATA, cookie, struct.pack(">Q", off), n)
                )
                out += parts
        if self.error is not None:
            text = self.error.desc.encode()[:4096]
            err = P.errno_to_nbd(self.error.errno)
            payload = struct.pack(">IH", err, len(text)) + text
            out.append(_chunk(P.REPLY_FLAG_DONE, P.REPLY_TYPE_ERROR, cookie, payload))
        return out

    def release(self) -> None:
        """Hand the pipes back (emptied ones are reused, others closed)."""
        if self.pool is not None:
            for pipe in self.pipes:
                self.pool.release(pipe)
        self.pipes.clear()


def _chunk(flags: int, rtype: int, cookie: int, head: bytes, extra: int = 0) -> bytes:
    hdr = P.STRUCTURED_HDR.pack(P.STRUCTURED_REPLY_MAGIC, flags, rtype, cookie, len(head) + extra)
    return hdr + head


def send_mixed(sock: socket.socket, parts: list[Part]) -> None:
    """Send memory parts with ``sendmsg`` (scatter-gather) and pinned runs with ``splice``."""
    fd = sock.fileno()
    pending: list[memoryview] = []
    try:
        for i, part in enumerate(parts):
            if isinstance(part, Pinned):
                if pending:
                    sendmsg_all(sock, pending, socket.MSG_MORE)
                    pending = []
                splice_out(part, fd, more=i + 1 < len(parts))
            elif len(part):
                pending.append(memoryview(part).cast("B"))
        if pending:
            sendmsg_all(sock, pending, 0)
    except OSError as e:
        raise Disconnected(str(e)) from None
