"""Zero-copy read replies: page-cache ranges pinned in pipes between the read and the send.

QEMU's NBD server (``nbd_co_send_sparse_read``) reads each data stretch into a
buffer and ``sendmsg``s it: two copies of every byte on the server. When the
node a read goes to declares that the read is nothing but the bytes of one host
file (:meth:`~txgraph.io.driver.DriverNode.host_extent`: raw, pass-through
filters, the file), txgraph ``splice``s that range of the file into a pipe
inside the request bracket (the kernel takes references to the page-cache
pages, it copies nothing) and later, outside the bracket, splices the pipe
into the socket. The read still happens inside ``Runtime.request()`` (so it
sees one graph and a drain waits for it) and the network wait still happens
outside it (so a slow client never holds up a drain), as with a buffer.

What the client gets is what a read gets: splice stops at the file's end
(zeros follow, as ``preadv``'s short read in the file driver), a file
truncated underneath yields the bytes before its new end then zeros, never a
signal (no mapping is touched), and an I/O error is an errno raised inside the
bracket, before anything of the reply was sent. A pinned page is a reference,
not a snapshot: a write to the same bytes while the reply waits in the pipe or
the socket shows through, as a read overlapping a concurrent write may see
either data in QEMU too.

Each pipe holds ``slots`` pages; one splice of ``[p, p+k)`` takes at most one
slot per page it touches, so a fill never asks for more than the free slots
can take (and is non-blocking besides: a full pipe is EAGAIN, never a hang).

Lock discipline: a :class:`PipePool` belongs to one NBD server. Its ``_lock``
guards ``_free``, ``_made`` and ``_closed``; a pipe handed out by
:meth:`PipePool.acquire` belongs to that request (one thread) until
:meth:`PipePool.release`, which takes it back only when it is empty and the
pool open, and closes it otherwise.
"""

from __future__ import annotations

import errno as E
import fcntl
import mmap
import os
import threading
from dataclasses import dataclass

__all__ = ["Pipe", "PipePool", "Pinned", "PIN_MIN", "pin"]

PAGE = mmap.PAGESIZE
#: stretches shorter than this are copied: two splices cost more than a small copy
PIN_MIN = 64 << 10
#: the pipe size asked for (Linux's default ``pipe-max-size``; unprivileged users get no more)
PIPE_BYTES = 1 << 20
#: pinned capacity of one server, all connections together
POOL_BYTES = 32 << 20
#: and at most this many pipes (two descriptors each), however small the kernel makes them
MAX_PIPES = 64

_SPLICE_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)
_SPLICE_MORE = getattr(os, "SPLICE_F_MORE", 4)


def available() -> bool:
    """``splice`` and pipe sizing exist here (Linux, Python 3.10+)."""
    return hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")


class Pipe:
    """One pipe: ``used`` is an upper bound of the slots taken since it was last empty."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # over pipe-max-size or the user's pipe budget: keep the default size
        self.slots = max(1, fcntl.fcntl(self.w, fcntl.F_GETPIPE_SZ) // PAGE)
        self.used = 0
        self.queued = 0  # bytes in the pipe

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass
class Pinned:
    """``length`` bytes waiting in ``pipe`` (in order with the pipe's other runs)."""

    pipe: Pipe
    length: int


class PipePool:
    """Empty pipes for read replies: at most ``max_bytes`` of pipe capacity and
    :data:`MAX_PIPES` pipes in all."""

    def __init__(self, max_bytes: int = POOL_BYTES) -> None:
        self._lock = threading.Lock()
        self._free: list[Pipe] = []
        self._made = 0
        self._max_bytes = max_bytes
        self._capacity = 0  # bytes of all pipes made and not closed
        self._closed = False

    def acquire(self) -> Pipe | None:
        """An empty pipe, or None when the budget is spent (the caller copies instead)."""
        with self._lock:
            if self._closed:
                return None
            if self._free:
                return self._free.pop()
            if self._capacity >= self._max_bytes or self._made >= MAX_PIPES:
                return None
            self._made += 1
            self._capacity += PIPE_BYTES  # reserved now; corrected below
        try:
            pipe = Pipe()
        except OSError:  # out of descriptors: copy instead
            with self._lock:
                self._made -= 1
                self._capacity -= PIPE_BYTES
            return None
        with self._lock:
            self._capacity += pipe.slots * PAGE - PIPE_BYTES
        return pipe

    def release(self, pipe: Pipe) -> None:
        """Take ``pipe`` back; one that still holds data (a failed send) is closed."""
        with self._lock:
            if pipe.queued == 0 and not self._closed:
                pipe.used = 0
                self._free.append(pipe)
                return
            self._made -= 1
            self._capacity -= pipe.slots * PAGE
        pipe.close()

    @property
    def pipes(self) -> int:
        """Pipes open now (free or lent)."""
        with self._lock:
            return self._made

    @property
    def lent(self) -> int:
        """Pipes out with requests now."""
        with self._lock:
            return self._made - len(self._free)

    def close(self) -> None:
        """Close the free pipes; lent ones are closed when they come back."""
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
            self._made -= len(free)
            self._capacity -= sum(p.slots * PAGE for p in free)
        for pipe in free:
            pipe.close()


def pin(
    pool: PipePool, held: list[Pipe], fd: int, offset: int, length: int
) -> tuple[list[Pinned], int, bool]:
    """Splice ``[offset, offset+length)`` of ``fd`` into pipes: the runs, the bytes pinned,
    and whether the file ended before ``length``.

    ``held`` is the request's pipes (the last one may have room; new ones are
    appended). Fewer bytes than asked come back at the file's end (the rest
    reads as zeros) or when no pipe is left (the caller reads the rest). An
    I/O error is raised as ``OSError``.
    """
    runs: list[Pinned] = []
    done = 0
    fresh = False
    eof = False
    while done < length:
        pipe = held[-1] if held and held[-1].used < held[-1].slots else None
        if pipe is None:
            pipe = pool.acquire()
            if pipe is None:
                break
            held.append(pipe)
            fresh = True
        pos = offset + done
        want = min(length - done, (pipe.slots - pipe.used) * PAGE - pos % PAGE)
        try:
            k = os.splice(fd, pipe.w, want, offset_src=pos, flags=_SPLICE_NONBLOCK)
        except BlockingIOError:
            if fresh and pipe.used == 0:
                break  # an empty pipe that takes nothing: read the rest instead
            pipe.used = pipe.slots  # full after all: the next pipe
            continue
        if k == 0:
            eof = True
            break
        pipe.used += (pos + k - 1) // PAGE - pos // PAGE + 1
        pipe.queued += k
        if runs and runs[-1].pipe is pipe:
            runs[-1].length += k
        else:
            runs.append(Pinned(pipe, k))
        done += k
        fresh = False
    return runs, done, eof


def splice_out(run: Pinned, sock_fd: int, more: bool) -> None:
    """Move ``run`` from its pipe to the socket (blocking while the socket is full)."""
    left = run.length
    flags = _SPLICE_MORE if more else 0
    while left:
        k = os.splice(run.pipe.r, sock_fd, left, flags=flags)
        if k == 0:
            raise OSError(E.EPIPE, os.strerror(E.EPIPE))
        left -= k
        run.pipe.queued -= k
