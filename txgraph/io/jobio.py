"""The data-plane steps of block jobs, run by a job's thread through the request interface.

Each step is one iteration of a QEMU job loop, bracketed by
``Runtime.request()`` so that a graph change drains it like any guest
request (QEMU drains a job at its next pause point). Jobs reach the data
plane only through these functions and their own BlockBackend.
"""

from __future__ import annotations

from txgraph.errors import IOFailure
from txgraph.io.chain import allocated_above, chain, skip_filters
from txgraph.io.runtime import Runtime

__all__ = ["STREAM_CHUNK", "COMMIT_BUFFER_SIZE", "stream_step", "commit_step", "node_length",
           "backend_length"]

#: ``STREAM_CHUNK`` of block/stream.c: the most one iteration copies
STREAM_CHUNK = 512 * 1024
#: ``COMMIT_BUFFER_SIZE`` of block/commit.c
COMMIT_BUFFER_SIZE = 512 * 1024


def node_length(rt: Runtime, name: str) -> int:
    """``bdrv_getlength``."""
    with rt.request():
        return rt.node(name).size()


def stream_step(rt: Runtime, blk: str, target: str, base_overlay: str, offset: int,
                length: int) -> tuple[int, bool]:
    """One iteration of ``stream_run`` at ``offset``: ``(bytes handled, copied?)``.

    A stretch the top allocates is skipped; otherwise it is copied when some
    layer from the top's backing down to ``base_overlay`` allocates it, by a
    copy-on-read read through the job's BlockBackend (the COR filter above
    the top populates it). Past the end of the backing chain, the rest of the
    image is done at once.
    """
    with rt.request():
        top = skip_filters(rt.node(target))
        assert top is not None
        want = min(STREAM_CHUNK, length - offset)
        st = top.block_status(offset, want)
        n = max(1, min(st.length, want))
        if st.allocated:
            return n, False
        below = chain(top)[1:]
        copy = False
        if below:
            copy, n = allocated_above(below, base_overlay, offset, n)
        elif n == 0:
            n = length - offset
        if copy:
            rt.backend_root(blk).read(offset, n)
        return n, copy


def backend_length(rt: Runtime, blk: str) -> int:
    """``blk_getlength``."""
    with rt.request():
        return rt.backend_root(blk).size()


def commit_step(rt: Runtime, top_blk: str, base_blk: str, base_overlay: str, offset: int,
                length: int) -> tuple[int, bool]:
    """One iteration of ``commit_run`` at ``offset``: ``(bytes handled, copied?)``.

    What some layer from the commit's top down to ``base_overlay`` allocates is
    read through the job's top BlockBackend and written, as plain data, through
    its base BlockBackend. A failed read raises with ``is_read`` set on the
    exception's ``job_read`` attribute (the on-error policy needs to know).
    """
    with rt.request():
        top = rt.backend_root(top_blk)
        want = min(COMMIT_BUFFER_SIZE, length - offset)
        copy, n = allocated_above(chain(top), base_overlay, offset, want)
        if not copy:
            return n, False
        try:
            data = top.read(offset, n)
        except IOFailure as exc:
            exc.job_read = True  # type: ignore[attr-defined]
            raise
        try:
            rt.backend_root(base_blk).write(offset, data)
        except IOFailure as exc:
            exc.job_read = False  # type: ignore[attr-defined]
            raise
        return n, True
