"""NBD read replies without a fresh buffer per request.

``nbd_co_send_sparse_read`` (QEMU's ``nbd/server.c``) reads each data stretch
into the request's buffer, which QEMU allocates with ``qemu_blockalign`` from
a heap that reuses its pages. A Python ``bytes`` of 2 MiB is a fresh anonymous
mapping per request: 512 page faults and a zeroing before the copy. Here each
worker thread keeps one page-aligned buffer (:func:`read_buffer`) that every
read reply of that thread is read into and sent from; the reply is sent before
the thread takes its next request, so nothing else ever sees the buffer.

Thread discipline: the buffers live in a ``threading.local``; no state is shared.
"""

from __future__ import annotations

import threading

from txgraph.errors import IOFailure
from txgraph.io.buffers import aligned_buffer, child_readinto
from txgraph.io.chain import HoleCheckFailure, reads_as_zero
from txgraph.io.driver import DriverNode

__all__ = ["read_buffer", "sparse_readinto", "KEEP_MAX"]

#: buffers up to this size stay with their thread (16 workers x 4 MiB at most per connection)
KEEP_MAX = 4 << 20

_LOCAL = threading.local()


def read_buffer(length: int) -> memoryview:
    """A page-aligned buffer of ``length`` bytes owned by the calling thread until its next call."""
    if length > KEEP_MAX:
        return aligned_buffer(length)
    buf: memoryview | None = getattr(_LOCAL, "buf", None)
    if buf is None or len(buf) < length:
        buf = aligned_buffer(max(length, 64 << 10))
        _LOCAL.buf = buf
    return buf[:length]


def sparse_readinto(node: DriverNode, offset: int, out: memoryview) -> None:
    """:func:`txgraph.io.chain.sparse_read` into ``out``: the same requests below, the same bytes.

    Stretches that read as zeroes are zero-filled, not read; each data stretch
    is one read of ``node`` (through its ``readinto`` when it has one). Failures are
    told apart as there: :class:`~txgraph.io.chain.HoleCheckFailure` for the block
    status, a plain :class:`~txgraph.errors.IOFailure` for a data read.
    """
    pos, end = offset, offset + len(out)
    while pos < end:
        try:
            zero, n = reads_as_zero(node, pos, end - pos)
        except IOFailure as err:
            raise HoleCheckFailure(f"unable to check for holes: {err.desc}", err.errno) from err
        n = min(n, end - pos)
        view = out[pos - offset : pos - offset + n]
        if zero:
            view[:] = bytes(n)
        else:
            child_readinto(node, pos, view)
        pos += n
