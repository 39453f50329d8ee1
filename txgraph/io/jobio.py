"""The data-plane steps of block jobs, run by a job's thread through the request interface.

Each step is one iteration of a QEMU job loop, bracketed by
``Runtime.request()`` so that a graph change drains it like any guest
request (QEMU drains a job at its next pause point). Jobs reach the data
plane only through these functions and their own BlockBackend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from txgraph.errors import IOFailure
from txgraph.io.chain import allocated_above, chain, skip_filters, status_above
from txgraph.io.drivers.copy_before_write import CopyBeforeWriteNode
from txgraph.io.drivers.job_filters import MirrorTopNode
from txgraph.io.mirror import DirtyBitmap, MirrorSink
from txgraph.io.runtime import Runtime

__all__ = [
    "STREAM_CHUNK",
    "COMMIT_BUFFER_SIZE",
    "stream_step",
    "commit_step",
    "node_length",
    "backend_length",
    "mirror_install",
    "mirror_set_active",
    "mirror_dirty_init",
    "mirror_copy",
    "mirror_flush",
    "DirtyBitmap",
    "backup_init",
    "backup_step",
    "backup_remaining",
]

#: ``STREAM_CHUNK`` of block/stream.c: the most one iteration copies
STREAM_CHUNK = 512 * 1024
#: ``COMMIT_BUFFER_SIZE`` of block/commit.c
COMMIT_BUFFER_SIZE = 512 * 1024


def node_length(rt: Runtime, name: str) -> int:
    """``bdrv_getlength``."""
    with rt.request():
        return rt.node(name).size()


def stream_step(
    rt: Runtime, blk: str, target: str, base_overlay: str, offset: int, length: int
) -> tuple[int, bool]:
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
        if below and offset >= below[0].size():
            # the backing (the first layer asked) ends here: stream_run's "finish early
            # if end of backing file has been reached" -- nothing more to copy
            n = length - offset
        elif below:
            n = min(n, below[0].size() - offset)
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


def commit_step(
    rt: Runtime, top_blk: str, base_blk: str, base_overlay: str, offset: int, length: int
) -> tuple[int, bool]:
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


# -- mirror ---------------------------------------------------------------------------------
def mirror_install(
    rt: Runtime, mirror_top: str, target_blk: str, granularity: int, length: int
) -> DirtyBitmap:
    """Give ``mirror_top`` its job's sink (under drain: no write is half tracked)."""
    bitmap = DirtyBitmap(granularity, length)
    with rt.drained():
        node = rt.node(mirror_top)
        assert isinstance(node, MirrorTopNode)
        node.sink = MirrorSink(bitmap, lambda: rt.backend_root(target_blk))
    return bitmap


def mirror_set_active(
    rt: Runtime,
    mirror_top: str,
    bitmap: DirtyBitmap,
    active: bool,
    on_write: Callable[[int], None] | None = None,
) -> int:
    """Switch mirror_top to (or from) writing guest data to the target synchronously
    (``on_write`` counts each such write); returns the dirty bytes seen under the same
    drain (0: source and target are in sync now)."""
    with rt.drained():
        node = rt.node(mirror_top) if rt.has_node(mirror_top) else None
        if isinstance(node, MirrorTopNode) and node.sink is not None:
            node.sink.active = active
            node.sink.on_active_write = on_write if active else None
        return bitmap.count()


def mirror_dirty_init(
    rt: Runtime,
    mirror_top: str,
    target_blk: str,
    bitmap: DirtyBitmap,
    base_overlay: str | None,
    zero_target: bool,
    write_zeroes_ok: bool,
) -> None:
    """``mirror_dirty_init``: for sync=full, zero the target if it can write zeroes with
    unmap, else mark everything dirty; then mark what the source's chain allocates above
    the base (``base_overlay`` None: nothing, sync=none)."""
    length = bitmap.length
    if zero_target and not write_zeroes_ok:
        bitmap.mark(0, length)
        return
    with rt.request():
        source = rt.node(mirror_top)
        assert isinstance(source, MirrorTopNode)
        if zero_target:
            target = rt.backend_root(target_blk)
            pos = 0
            while pos < length:
                n = min(1 << 30, length - pos)
                target.write_zeroes(pos, n, may_unmap=True)
                pos += n
        if base_overlay is None:
            return
        layers = chain(source.filtered)
        pos = 0
        while pos < length:
            copy, n = allocated_above(layers, base_overlay, pos, length - pos)
            if copy:
                bitmap.mark(pos, n)
            pos += n


def mirror_copy(
    rt: Runtime,
    mirror_top: str,
    target_blk: str,
    bitmap: DirtyBitmap,
    max_bytes: int,
    write_zeroes_ok: bool,
) -> tuple[int, int]:
    """One ``mirror_iteration``: copy the first dirty run; ``(bytes done, bytes counted
    for the rate limit)`` — zero runs are written as zeroes, and not counted when the
    target can write zeroes with unmap.

    A failure marks the run dirty again and raises (``job_read`` on the exception says
    which side failed).
    """
    run = bitmap.take(max_bytes)
    if run is None:
        return 0, 0
    offset, n = run
    counted = 0
    try:
        with rt.request():
            source = rt.node(mirror_top)
            assert isinstance(source, MirrorTopNode)
            src = source.filtered
            target = rt.backend_root(target_blk)
            pos, end = offset, offset + n
            # The run is split where the source's block status changes (mirror_iteration).
            while pos < end:
                st = status_above(src, pos, end - pos)
                m = max(1, min(st.length, end - pos))
                # zeroed only where block status says ZERO without DATA: a DATA|ZERO
                # stretch (a file hole found by BDRV_BLOCK_RECURSE) is copied
                if st.zero and not st.data:
                    _target_op(target.write_zeroes, pos, m, may_unmap=True)
                    counted += 0 if write_zeroes_ok else m
                else:
                    try:
                        data = src.read(pos, m)
                    except IOFailure as exc:
                        exc.job_read = True  # type: ignore[attr-defined]
                        raise
                    _target_op(target.write, pos, data)
                    counted += m
                pos += m
            return n, counted
    except IOFailure:
        bitmap.mark(offset, n)
        raise


def _target_op(op: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a target write; its failure is the job's *write* error."""
    try:
        op(*args, **kwargs)
    except IOFailure as exc:
        exc.job_read = False  # type: ignore[attr-defined]
        raise


def mirror_flush(rt: Runtime, target_blk: str) -> None:
    """``mirror_flush``: the target's data reaches its image."""
    with rt.request():
        rt.backend_root(target_blk).flush()


# -- backup ---------------------------------------------------------------------------------
def _cbw(rt: Runtime, name: str) -> CopyBeforeWriteNode:
    node = rt.node(name)
    assert isinstance(node, CopyBeforeWriteNode)
    return node


def backup_init(rt: Runtime, cbw: str, skip_unallocated: bool, compress: bool = False) -> int:
    """``backup_init_bcs_bitmap``: with sync=top, what the source node itself does not
    allocate is not to be copied; returns the bytes left to copy (the job's length).
    ``compress``: the block-copy state writes compressed clusters from now on
    (``block_copy_set_copy_opts``)."""
    with rt.request():
        node = _cbw(rt, cbw)
        if compress:
            with node._lock:
                node.compress = True
        if skip_unallocated:
            src = node.filtered
            pos, length = 0, src.size()
            while pos < length:
                st = src.block_status(pos, length - pos)
                n = max(1, min(st.length, length - pos))
                if not st.allocated:
                    node.skip(pos, n)
                pos += n
        return node.to_copy.count()


def backup_step(rt: Runtime, cbw: str, offset: int, length: int) -> int:
    """Copy what is still to be copied in a range through the filter's block-copy state;
    the bytes copied (a failure raises with ``job_read`` telling the side)."""
    with rt.request():
        node = _cbw(rt, cbw)
        try:
            return node.copy_range(offset, length)
        except IOFailure as exc:
            if not hasattr(exc, "job_read"):
                exc.job_read = True  # type: ignore[attr-defined]
            raise


def backup_remaining(rt: Runtime, cbw: str) -> int:
    """Bytes still to be copied (by the job or by copy-before-write)."""
    with rt.request():
        return _cbw(rt, cbw).to_copy.count()
