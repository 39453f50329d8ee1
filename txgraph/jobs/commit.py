"""``block-commit`` of an intermediate layer: copy top..base_overlay into base (block/commit.c).

The command (``qmp_block_commit`` + ``commit_start`` of QEMU 7.2) checks in QEMU's
order (the device lookup first: libvirt probes the DeviceNotFound class),
creates the job on the device's node (``"main node"``), reopens the base
read-write if needed, appends a ``commit_top`` filter above the commit's top
(implicit unless ``filter-node-name``; never frozen), holds every node from
the top down to the base as ``"intermediate node"`` (sharing write and
write-unchanged, so nobody else may read them consistently), freezes the chain
from commit_top into the base, holds the base as ``"base"`` and opens two
BlockBackends: on the base (consistent-read + write, + resize when the base
is smaller; sharing consistent-read and write-unchanged) and on the top
(nothing taken, everything shared).

A base shorter than the top first grows to the top's length
(``blk_truncate``, :mod:`txgraph.io.truncate`); a failure ends the job with
its errno. The job then copies what the layers from the top down to the base's overlay
allocate, in 512 KiB chunks, reading through the top BlockBackend and writing
through the base's. ``prepare`` drops everything between the overlay and the
base (``bdrv_drop_intermediate``: the overlay's backing string names the base);
``abort`` takes the filter out again; ``clean`` makes the base read-only again.

Active commit (the top is the device's node) is a mirror job of type
``commit`` (:mod:`txgraph.jobs.mirror`): it becomes READY and needs
``job-complete`` to pivot onto the base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgraph.errors import BlockError, IOFailure
from txgraph.io.jobio import backend_length, commit_step
from txgraph.io.truncate import blk_truncate
from txgraph.jobs.blockjob import (
    GraphJob,
    add_job_blk,
    add_job_child,
    add_job_vertex,
    default_job_id,
    remove_job_blk,
    remove_job_children,
    unref_unused,
)
from txgraph.jobs.chain import chain_contains, find_backing_image, find_overlay, skip_filters
from txgraph.jobs.job import ErrorAction
from txgraph.jobs.manager import JobManager, manager_of
from txgraph.jobs.stream import change_backing_file
from txgraph.model.node import ParentKind
from txgraph.model.perm_bits import PERM_ALL, Perm, Role
from txgraph.model.perm_refresh import cumulative_perms
from txgraph.ops.blockdev import op_blocker
from txgraph.ops.filters import stage_append_job_filter
from txgraph.ops.freeze import chain_links, freeze_backing_chain, unfreeze_backing_chain
from txgraph.ops.open import lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.query import filter_or_cow_child
from txgraph.ops.replace import replace_node_noperm
from txgraph.ops.session import Session
from txgraph.ops.snapshot import reopen_set_read_only, set_read_only_ignoring_errors

if TYPE_CHECKING:
    from txgraph.ops.undo_log import Transaction

__all__ = ["block_commit", "CommitJob"]


class DeviceNotFound(BlockError):
    error_class = "DeviceNotFound"


class CommitJob(GraphJob):
    """The (intermediate) commit job (``CommitBlockJob``)."""

    job_type = "commit"

    def __init__(
        self,
        manager: JobManager,
        job_id: str,
        *,
        top: str,
        base: str,
        base_overlay: str,
        backing_file: str | None,
        base_read_only: bool,
        **kw: Any,
    ) -> None:
        super().__init__(manager, job_id, **kw)
        self.top = top
        self.base = base
        self.base_overlay = base_overlay
        self.backing_file = backing_file
        self.base_read_only = base_read_only
        self.commit_top = ""
        self.top_blk = ""
        self.base_blk = ""
        self.chain_frozen = False

    def run(self) -> int:
        """``commit_run``."""
        rt = self.manager.session.runtime
        length = backend_length(rt, self.top_blk)
        with self.manager.mutex:
            self.progress_total = length
        if backend_length(rt, self.base_blk) < length:
            # the base grows to the top's length first (its BlockBackend took resize)
            try:
                blk_truncate(rt, self.base_blk, length)
            except IOFailure as exc:
                return self.io_error(exc)
        offset, delay = 0, 0
        while offset < length:
            self.sleep(delay)
            if self.is_cancelled:
                break
            try:
                n, copied = commit_step(
                    rt, self.top_blk, self.base_blk, self.base_overlay, offset, length
                )
            except IOFailure as exc:
                ret = self.io_error(exc)
                action = self.error_action(bool(getattr(exc, "job_read", True)), -ret)
                if action == ErrorAction.REPORT:
                    return ret
                delay = 0
                continue  # stop or ignore: the same chunk again (n = 0)
            self.progress(n)
            with self.manager.mutex:
                delay = self.limit.delay_ns(n) if copied else 0
            offset += n
        return 0

    def simulate(self) -> int:
        """A dry run: the base grows to the top's length at the start, as in :meth:`run`
        (its image is not written; later steps see the new length)."""
        rt = self.manager.session.runtime
        length = rt.size(self.top)
        if rt.size(self.base) < length:
            rt.simulate_growth(self.base, length)
        return super().simulate()

    def _set_frozen(self, session: Session, tx: Transaction, frozen: bool) -> None:
        old = self.chain_frozen
        if frozen:
            freeze_backing_chain(session, tx, self.commit_top, self.base)
        else:
            unfreeze_backing_chain(session, tx, self.commit_top, self.base)
        self.chain_frozen = frozen
        tx.undo(lambda: setattr(self, "chain_frozen", old))

    def prepare(self, session: Session, tx: Transaction) -> None:
        """``commit_prepare``: unfreeze, drop the base BlockBackend, drop the intermediates."""
        self.unprotect(session, tx)
        self._set_frozen(session, tx, False)
        remove_job_blk(session, tx, self.id, "base")
        drop_intermediate(session, tx, self.commit_top, self.base, self.backing_file)

    def abort(self, session: Session, tx: Transaction) -> None:
        """``commit_abort``: the job's holds go first, then the filter leaves the chain."""
        if self.chain_frozen and self.commit_top in session.graph.nodes:
            self._set_frozen(session, tx, False)
        remove_job_blk(session, tx, self.id, "base")
        held = remove_job_children(session, tx, self.id)
        graph = session.graph
        if self.commit_top in graph.nodes:
            replace_node_noperm(session, tx, self.commit_top, self.top, auto_skip=True)
            refresh_perms(session, tx, [self.top, self.commit_top])
            unref_unused(session, tx, [self.commit_top])
        unref_unused(session, tx, held)

    def clean(self, session: Session, tx: Transaction) -> None:
        """``commit_clean``: the base read-only again if the job made it writable; the top
        BlockBackend goes."""
        if self.base_read_only and self.base in session.graph.nodes:
            set_read_only_ignoring_errors(session, tx, self.base)
        self.release_blk(session, tx, "top")


def drop_intermediate(
    session: Session, tx: Transaction, top: str, base: str, backing_file: str | None
) -> None:
    """``bdrv_drop_intermediate(top, base, backing_file_str)``: every parent of ``top``
    now points at ``base``; each COW parent's header names the base."""
    graph = session.graph
    base_node = graph.nodes[base]
    name = backing_file or base_node.filename
    parents = [(p, e) for p, e in graph.parents(top) if e.parent_kind is not ParentKind.JOB]
    replace_node_noperm(session, tx, top, base, auto_skip=False)
    refresh_perms(session, tx, [base, *[p for p, _e in parents if p in graph.nodes]])
    for parent, edge in parents:
        if parent in graph.nodes and edge.role & Role.COW:
            change_backing_file(session, tx, parent, name, base_node.driver)
    unref_unused(session, tx, [top])


def _lookup_root(session: Session, device: str) -> str:
    """``qmp_get_root_bs``, with ``qmp_block_commit``'s DeviceNotFound for unknown names."""
    graph = session.graph
    try:
        bs = lookup_bs(session, device, device)
    except BlockError:
        raise DeviceNotFound(f"Device '{device}' not found") from None
    if any(e.parent_kind is not ParentKind.ROOT for _p, e in graph.parents(bs)):
        raise BlockError("Need a root block node")
    return bs


def _check_arguments(session: Session, args: dict[str, Any]) -> tuple[str, str, str]:
    """``qmp_block_commit`` up to the start: (device node, top, base)."""
    graph = session.graph
    device = args["device"]
    bs = _lookup_root(session, device)
    reason = op_blocker(session, bs, "commit-source")
    if reason is not None:
        raise BlockError(f"Node '{bs}' is busy: {reason}", rule="op-blocker", subjects=(bs,))
    top_name, top_node = args.get("top"), args.get("top-node")
    top_bs: str | None = bs
    if top_name is not None and top_node is not None:
        raise BlockError("'top-node' and 'top' are mutually exclusive")
    if top_node is not None:
        top_bs = lookup_bs(session, None, top_node)
        if not chain_contains(graph, bs, top_bs):
            raise BlockError(f"'{top_node}' is not in this backing file chain")
    elif top_name:
        if graph.nodes[bs].filename != top_name:
            top_bs = find_backing_image(graph, bs, top_name)
    if top_bs is None:
        raise BlockError(f"Top image file {top_name or 'NULL'} not found")
    base_name, base_node = args.get("base"), args.get("base-node")
    if base_name is not None and base_node is not None:
        raise BlockError("'base-node' and 'base' are mutually exclusive")
    base_bs: str | None
    if base_node is not None:
        base_bs = lookup_bs(session, None, base_node)
        if not chain_contains(graph, top_bs, base_bs):
            raise BlockError(f"'{base_node}' is not in this backing file chain")
    elif base_name:
        base_bs = find_backing_image(graph, top_bs, base_name)
        if base_bs is None:
            raise BlockError(f"Can't find '{base_name}' in the backing chain")
    else:
        base_bs = find_overlay(graph, top_bs, None)
        if base_bs is None:
            raise BlockError("There is no backimg image")
    cur: str | None = top_bs
    while cur is not None and cur != base_bs:
        _check_op(session, cur)
        cur = filter_or_cow_child(graph, cur)
    if top_bs == base_bs:
        raise BlockError("cannot commit an image into itself")
    if is_active_commit(session, bs, top_bs):
        if args.get("backing-file") is not None:
            if skip_filters(graph, top_bs) == skip_filters(graph, bs):
                raise BlockError("'backing-file' specified, but 'top' is the active layer")
            raise BlockError("'backing-file' specified, but 'top' has a writer on it")
        return bs, top_bs, base_bs
    overlay = find_overlay(graph, bs, top_bs)
    if overlay is not None:
        _check_op(session, overlay)
    return bs, top_bs, base_bs


def is_active_commit(session: Session, bs: str, top: str) -> bool:
    """``qmp_block_commit``: an active commit (a mirror into the base) is needed when
    ``top`` is the device's node, filters skipped, or when someone holds write
    permission on it (``bdrv_get_cumulative_perm``)."""
    graph = session.graph
    perm, _shared = cumulative_perms(edge for _p, edge in graph.parents(top))
    return bool(perm & Perm.WRITE) or skip_filters(graph, top) == skip_filters(graph, bs)


def _check_op(session: Session, node: str) -> None:
    reason = op_blocker(session, node, "commit-target")
    if reason is not None:
        raise BlockError(f"Node '{node}' is busy: {reason}", rule="op-blocker", subjects=(node,))


def stage_block_commit(
    session: Session, tx: Transaction, manager: JobManager, args: dict[str, Any]
) -> GraphJob:
    bs, top, base = _check_arguments(session, args)
    graph = session.graph
    if is_active_commit(session, bs, top):
        return _stage_active_commit(session, tx, manager, args, bs, top, base)
    if skip_filters(graph, top) == skip_filters(graph, base):
        raise BlockError("Invalid files for merge: top and base are the same")
    base_size = session.runtime.size(base) if session.runtime.has_node(base) else 0
    top_size = session.runtime.size(top) if session.runtime.has_node(top) else 0
    base_perms = (
        Perm.CONSISTENT_READ | Perm.WRITE | (Perm.RESIZE if base_size < top_size else Perm.NONE)
    )
    job_id = manager.check_new_id(args.get("job-id", default_job_id(session, bs)))
    overlay = find_overlay(graph, top, base)
    assert overlay is not None
    job = CommitJob(
        manager,
        job_id,
        top=top,
        base=base,
        base_overlay=overlay,
        backing_file=args.get("backing-file"),
        base_read_only=graph.nodes[base].read_only,
        auto_finalize=args.get("auto-finalize", True),
        auto_dismiss=args.get("auto-dismiss", True),
        on_error=args.get("on-error", "report"),
    )
    add_job_vertex(session, tx, job_id, job.job_type)
    manager.create(tx, job, args.get("speed", 0))
    add_job_child(session, tx, job_id, "main node", bs, Perm.NONE, PERM_ALL)
    if job.base_read_only:
        reopen_set_read_only(
            session, tx, base, False, detail="made writable by block-commit (commit_start)"
        )
    filter_name = args.get("filter-node-name")
    job.commit_top = stage_append_job_filter(session, tx, "commit_top", filter_name, top)
    if filter_name is None:
        tx.set(graph.nodes[job.commit_top], "implicit", True)
    filtered_base = filter_or_cow_child(graph, overlay)
    shared = Perm.WRITE_UNCHANGED | Perm.WRITE
    cur: str | None = top
    while cur is not None and cur != base:
        if cur == filtered_base:
            shared |= Perm.CONSISTENT_READ  # only filters on the base from here on
        add_job_child(session, tx, job_id, "intermediate node", cur, Perm.NONE, shared)
        cur = filter_or_cow_child(graph, cur)
    job._set_frozen(session, tx, True)
    add_job_child(session, tx, job_id, "base", base, Perm.NONE, PERM_ALL)
    job.base_blk = add_job_blk(
        session,
        tx,
        job_id,
        base,
        base_perms,
        Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED,
        role="base",
    )
    job.top_blk = add_job_blk(session, tx, job_id, top, Perm.NONE, PERM_ALL, role="top")
    # The outcome rests on the chain from the overlay of the top down into the base.
    links = [(p, e.name, c) for p, c, e in chain_links(session, job.commit_top, base)]
    job.protect(session, tx, links)
    return job


def _stage_active_commit(
    session: Session,
    tx: Transaction,
    manager: JobManager,
    args: dict[str, Any],
    bs: str,
    top: str,
    base: str,
) -> GraphJob:
    """``commit_active_start``: the base writable, then a mirror job of type commit into it.

    Its job ID defaults to the device name of ``bs`` as block_job_create would (QEMU
    emulates that here because the mirror runs on the top)."""
    from txgraph.jobs.mirror import stage_mirror_start

    job_id = args.get("job-id", default_job_id(session, bs))
    if session.graph.nodes[base].read_only:
        reopen_set_read_only(
            session, tx, base, False, detail="made writable by block-commit (commit_active_start)"
        )
    return stage_mirror_start(
        session,
        tx,
        manager,
        job_id=job_id,
        bs=top,
        target=base,
        replaces=None,
        sync="top",
        speed=args.get("speed", 0),
        granularity=0,
        buf_size=0,
        zero_target=False,
        on_source_error=args.get("on-error", "report"),
        on_target_error=args.get("on-error", "report"),
        filter_node_name=args.get("filter-node-name"),
        copy_mode="background",
        auto_finalize=args.get("auto-finalize", True),
        auto_dismiss=args.get("auto-dismiss", True),
        is_commit=True,
        base=base,
    )


def block_commit(session: Session, args: dict[str, Any]) -> None:
    """QMP ``block-commit``: one transaction builds the job's graph, then the job starts."""
    manager = manager_of(session)
    with session.transaction() as tx:
        job = stage_block_commit(session, tx, manager, args)
    manager.start(job)
