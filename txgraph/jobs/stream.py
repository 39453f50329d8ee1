"""``block-stream``: copy a backing chain's data into the top and drop the chain (block/stream.c).

The command (``qmp_block_stream`` + ``stream_start`` of QEMU 7.2) checks its
arguments in QEMU's order, inserts a ``copy-on-read`` filter above the top
(``bottom`` = the overlay of the base; implicit unless ``filter-node-name``
is given; its open freezes the chain down to the bottom), creates the job
with its own BlockBackend on the filter (consistent-read, sharing
consistent-read, write-unchanged and write), and holds the top as
``"active node"`` and every node above the base as ``"intermediate node"``
— all in one transaction, so a refusal at any step leaves nothing behind.

The job copies through its BlockBackend what the top does not allocate but a
layer down to the base's overlay does, in chunks of 512 KiB, rate-limited by
``speed``. ``prepare`` drops the filter, points the top's backing at the base
and rewrites the top's backing string; the dropped layers go when the job
lets go of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgraph.errors import BlockError, IOFailure
from txgraph.io.jobio import STREAM_CHUNK, node_length, stream_step
from txgraph.jobs.blockjob import (
    GraphJob,
    add_job_blk,
    add_job_child,
    add_job_vertex,
    default_job_id,
)
from txgraph.jobs.chain import (
    chain_contains,
    cow_bs,
    filter_bs,
    find_backing_image,
    find_overlay,
    is_filter,
    skip_filters,
)
from txgraph.jobs.job import ErrorAction
from txgraph.jobs.manager import JobManager, manager_of
from txgraph.model.node import OpenFlag
from txgraph.model.perm_bits import PERM_ALL, Perm
from txgraph.ops.blockdev import op_blocker
from txgraph.ops.filters import stage_insert_node
from txgraph.ops.freeze import chain_links, freeze_backing_chain, unfreeze_backing_chain
from txgraph.ops.open import lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.query import filter_or_cow_child
from txgraph.ops.replace import replace_node_noperm
from txgraph.ops.session import Session
from txgraph.ops.snapshot import reopen_set_read_only, set_read_only_ignoring_errors

if TYPE_CHECKING:
    from txgraph.ops.undo_log import Transaction

__all__ = ["block_stream", "StreamJob"]

_BASIC = Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED


class StreamJob(GraphJob):
    """The stream job (``StreamBlockJob``)."""

    job_type = "stream"

    def __init__(
        self,
        manager: JobManager,
        job_id: str,
        *,
        target: str,
        base_overlay: str,
        above_base: str,
        backing_file: str | None,
        bs_read_only: bool,
        **kw: Any,
    ) -> None:
        super().__init__(manager, job_id, **kw)
        self.target = target
        self.base_overlay = base_overlay
        self.above_base = above_base
        self.backing_file = backing_file
        self.bs_read_only = bs_read_only
        self.cor: str = ""
        self.blk: str = ""

    def run(self) -> int:
        """``stream_run``."""
        rt = self.manager.session.runtime
        if self.nothing_to_stream:
            return 0
        length = node_length(rt, self.target)
        with self.manager.mutex:
            self.progress_total = length
        offset, delay, error = 0, 0, 0
        while offset < length:
            self.sleep(delay)
            if self.is_cancelled:
                break
            try:
                n, copied = stream_step(
                    rt, self.blk, self.target, self.base_overlay, offset, length
                )
            except IOFailure as exc:
                ret = self.io_error(exc)
                action = self.error_action(True, -ret)
                if action == ErrorAction.STOP:
                    delay = 0
                    continue
                error = error or ret
                if action == ErrorAction.REPORT:
                    break
                n, copied = min(STREAM_CHUNK, length - offset), False
            self.progress(n)
            with self.manager.mutex:
                delay = self.limit.delay_ns(n) if copied else 0
            offset += n
        # An error that was ignored still keeps the backing file.
        return error

    def _drop_cor(self, session: Session, tx: Transaction) -> None:
        """``bdrv_cor_filter_drop``: unfreeze, the filter's parents go to the top."""
        if not self.cor or self.cor not in session.graph.nodes:
            return
        cor = self.cor
        unfreeze_backing_chain(session, tx, cor, self.base_overlay)
        replace_node_noperm(session, tx, cor, self.target, auto_skip=True)
        # bdrv_drop_filter detaches the filter's own child too; the filter stays
        # (the job holds it as its main node) until the job lets go of it.
        if session.graph.child_edge(cor, "file") is not None:
            tx.detach(cor, "file")
        refresh_perms(session, tx, [self.target])
        self.cor = ""
        tx.undo(lambda: setattr(self, "cor", cor))

    def prepare(self, session: Session, tx: Transaction) -> None:
        """``stream_prepare``: drop the filter, set the top's backing to the base, rewrite
        the header's backing string."""
        self.unprotect(session, tx)
        self._drop_cor(session, tx)
        graph = session.graph
        unfiltered = skip_filters(graph, self.target)
        assert unfiltered is not None
        base = (
            filter_or_cow_child(graph, self.above_base) if self.above_base in graph.nodes else None
        )
        unfiltered_base = skip_filters(graph, base)
        if cow_bs(graph, unfiltered) is None:
            return
        base_id: str | None = None
        base_fmt: str | None = None
        if unfiltered_base is not None:
            base_node = graph.nodes[unfiltered_base]
            base_id = self.backing_file or base_node.filename
            base_fmt = base_node.driver
        set_backing_hd(session, tx, unfiltered, base)
        change_backing_file(session, tx, unfiltered, base_id, base_fmt)

    def clean(self, session: Session, tx: Transaction) -> None:
        """``stream_clean``: drop the filter if still there, the job's BlockBackend, and
        make the top read-only again if the job had made it writable."""
        self._drop_cor(session, tx)
        self.release_blk(session, tx)
        if self.bs_read_only:
            set_read_only_ignoring_errors(session, tx, self.target)

    @property
    def nothing_to_stream(self) -> bool:
        """``stream_run``'s early return: the top, filters skipped, is the base's overlay
        (no backing to pull from), so the job ends before it sets its progress (0/0)."""
        return skip_filters(self.manager.session.graph, self.target) == self.base_overlay


def change_backing_file(
    session: Session, tx: Transaction, name: str, backing_file: str | None, backing_fmt: str | None
) -> None:
    """``bdrv_change_backing_file``: the header, then the node's idea of it
    (``backing_file``, ``backing_format``, ``auto_backing_file``)."""
    node = session.graph.nodes[name]
    tx.rt.change_backing_file(
        name, backing_file, backing_fmt, node.backing_file or None, node.backing_format or None
    )
    tx.set(node, "backing_file", backing_file or "")
    tx.set(node, "backing_format", backing_fmt or "")
    tx.set(node, "auto_backing_file", backing_file or "")


def set_backing_hd(session: Session, tx: Transaction, node: str, base: str | None) -> None:
    """``bdrv_set_backing_hd``: the node's backing link now points at ``base`` (or nowhere).

    The old backing keeps its other references (a job still holding it as an
    intermediate node lets go of it later).
    """
    from txgraph.ops.blockdev import unref_node

    graph = session.graph
    found = graph.child_edge(node, "backing")
    if found is None:
        return
    old, _edge = found
    if base is None:
        tx.detach(node, "backing")
    elif old != base:
        tx.retarget(node, "backing", base)
    else:
        return
    # Only the node's subtree is refreshed (bdrv_set_backing_noperm + bdrv_refresh_perms(bs)):
    # a dropped layer that someone still holds keeps its children's permissions as they were.
    refresh_perms(session, tx, [node, *([base] if base else [])])
    if graph.refcount(old) == 0:
        unref_node(session, tx, old)


def _check_arguments(session: Session, args: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """``qmp_block_stream``'s checks up to ``stream_start``: (top, base, bottom)."""
    base_name, base_node, bottom = args.get("base"), args.get("base-node"), args.get("bottom")
    if base_name is not None and base_node is not None:
        raise BlockError("'base' and 'base-node' cannot be specified at the same time")
    if base_name is not None and bottom is not None:
        raise BlockError("'base' and 'bottom' cannot be specified at the same time")
    if bottom is not None and base_node is not None:
        raise BlockError("'bottom' and 'base-node' cannot be specified at the same time")
    device = args["device"]
    graph = session.graph
    bs = lookup_bs(session, device, device)
    base_bs: str | None = None
    if base_name is not None:
        base_bs = find_backing_image(graph, bs, base_name)
        if base_bs is None:
            raise BlockError(f"Can't find '{base_name}' in the backing chain")
    if base_node is not None:
        base_bs = lookup_bs(session, None, base_node)
        if bs == base_bs or not chain_contains(graph, bs, base_bs):
            raise BlockError(f"Node '{base_node}' is not a backing image of '{device}'")
    bottom_bs: str | None = None
    if bottom is not None:
        bottom_bs = lookup_bs(session, None, bottom)
        if is_filter(graph, bottom_bs):
            raise BlockError(f"Node '{bottom}' is a filter, use a non-filter node as 'bottom'")
        if not chain_contains(graph, bs, bottom_bs):
            raise BlockError(f"Node '{bottom}' is not in a chain starting from '{device}'")
    cur: str | None = bs
    while cur is not None and cur != base_bs:
        reason = op_blocker(session, cur, "stream")
        if reason is not None:
            raise BlockError(f"Node '{cur}' is busy: {reason}", rule="op-blocker", subjects=(cur,))
        cur = filter_or_cow_child(graph, cur)
    if base_bs is None and args.get("backing-file") is not None:
        raise BlockError("backing file specified, but streaming the entire chain")
    return bs, base_bs, bottom_bs


def _above_base(session: Session, bs: str, base: str | None, bottom: str | None) -> tuple[str, str]:
    """``stream_start``: the overlay of the base and the node directly above the base."""
    graph = session.graph
    if bottom is not None:
        return bottom, bottom
    overlay = find_overlay(graph, bs, base)
    if overlay is None:
        raise BlockError(f"'{base}' is not in the backing chain of '{bs}'")
    above = overlay
    if cow_bs(graph, above) != base:
        nxt = cow_bs(graph, above)
        while nxt is not None and filter_bs(graph, nxt) != base:
            nxt = filter_bs(graph, nxt)
        above = nxt or above
    return overlay, above


def stage_block_stream(
    session: Session, tx: Transaction, manager: JobManager, args: dict[str, Any]
) -> StreamJob:
    bs, base, bottom = _check_arguments(session, args)
    overlay, above = _above_base(session, bs, base, bottom)
    graph = session.graph
    bs_read_only = graph.nodes[bs].read_only
    if bs_read_only:
        # The top is written by the job: reopened read-write, the chain held meanwhile.
        freeze_backing_chain(session, tx, bs, above)
        reopen_set_read_only(
            session, tx, bs, False, detail="made writable by block-stream (stream_start)"
        )
        unfreeze_backing_chain(session, tx, bs, above)
    options: dict[str, Any] = {"driver": "copy-on-read", "file": bs, "bottom": overlay}
    if args.get("filter-node-name") is not None:
        options["node-name"] = args["filter-node-name"]
    cor = stage_insert_node(session, tx, bs, options, OpenFlag.RDWR)
    if "node-name" not in options:
        tx.set(graph.nodes[cor], "implicit", True)
    job_id = manager.check_new_id(args.get("job-id", default_job_id(session, bs)))
    job = StreamJob(
        manager,
        job_id,
        target=bs,
        base_overlay=overlay,
        above_base=above,
        backing_file=args.get("backing-file"),
        bs_read_only=bs_read_only,
        auto_finalize=args.get("auto-finalize", True),
        auto_dismiss=args.get("auto-dismiss", True),
        on_error=args.get("on-error", "report"),
    )
    add_job_vertex(session, tx, job_id, job.job_type)
    # What the job's outcome rests on: every link from the top down into the base.
    job.protect(session, tx, [(p, e.name, c) for p, c, e in chain_links(session, bs, base)])
    manager.create(tx, job, args.get("speed", 0))
    add_job_child(session, tx, job_id, "main node", cor, Perm.NONE, PERM_ALL)
    job.cor = cor
    job.blk = add_job_blk(session, tx, job_id, cor, Perm.CONSISTENT_READ, _BASIC | Perm.WRITE)
    add_job_child(session, tx, job_id, "active node", bs, Perm.NONE, _BASIC | Perm.WRITE)
    stop = filter_or_cow_child(graph, above)
    cur = filter_or_cow_child(graph, bs)
    while cur is not None and cur != stop:
        add_job_child(session, tx, job_id, "intermediate node", cur, Perm.NONE, _BASIC)
        cur = filter_or_cow_child(graph, cur)
    return job


def block_stream(session: Session, args: dict[str, Any]) -> None:
    """QMP ``block-stream``: one transaction builds the job's graph, then the job starts."""
    manager = manager_of(session)
    with session.transaction() as tx:
        job = stage_block_stream(session, tx, manager, args)
    manager.start(job)
