"""``blockdev-mirror`` and active commit: the mirror job (block/mirror.c of QEMU 7.2).

``mirror_start_job`` appends a ``mirror_top`` filter above the source
(implicit unless ``filter-node-name``; never frozen) and creates the job on it
(``"main node"``: consistent-read, sharing consistent-read, write-unchanged and
write — nobody may resize the source). The target gets a BlockBackend of the
job (write, sharing write-unchanged; an active commit also shares
consistent-read and write and takes resize when the base is smaller) and is
held as ``"target"``; the source is held as ``"source"``. An active commit
(the target is in the source's backing chain) also holds every layer between
as ``"intermediate node"`` and freezes mirror_top..target.

The job marks what must be copied in a dirty bitmap (sync ``full``: all the
source's data, after zeroing the target; ``top``: what lies above the
source's backing; ``none``: only what the guest writes from now on), copies
dirty runs until none are left, flushes the target and is READY. From then on
guest writes keep being copied (background mode) or are written to the target
before they complete (``write-blocking``). ``job-complete`` (or a soft cancel)
makes the job finish once source and target are in sync: the sink switches to
synchronous writes under drain, so nothing written afterwards is lost before
the graph change. At the end, after completion the target replaces the source
(or ``replaces``) for every parent (the pivot); after a soft cancel the target
keeps its copy and the source stays in use; mirror_top leaves the graph.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from txgraph.errors import BlockError, IOFailure
from txgraph.io.jobio import (
    DirtyBitmap,
    backend_length,
    mirror_copy,
    mirror_dirty_init,
    mirror_flush,
    mirror_install,
    mirror_set_active,
    node_length,
)
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
from txgraph.jobs.chain import (
    backing_chain_next,
    chain_contains,
    cow_bs,
    filter_bs,
    find_overlay,
    skip_filters,
)
from txgraph.jobs.job import ErrorAction
from txgraph.jobs.manager import JobManager, manager_of
from txgraph.jobs.ratelimit import SLICE_NS
from txgraph.jobs.status import JobStatus
from txgraph.model.node import OpenFlag, ParentKind
from txgraph.model.perm_bits import PERM_ALL, Perm
from txgraph.model.perm_refresh import MIRROR_COMMIT, MIRROR_STOP
from txgraph.ops.blockdev import op_blocker
from txgraph.ops.filters import stage_append_job_filter
from txgraph.ops.freeze import chain_links, freeze_backing_chain, unfreeze_backing_chain
from txgraph.ops.open import lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.query import filter_or_cow_child
from txgraph.ops.replace import replace_node_noperm
from txgraph.ops.session import Session
from txgraph.ops.snapshot import set_read_only_ignoring_errors

if TYPE_CHECKING:
    from txgraph.ops.undo_log import Transaction

__all__ = ["MirrorJob", "blockdev_mirror", "stage_mirror_start", "root_bs"]

#: ``DEFAULT_MIRROR_BUF_SIZE``
_DEFAULT_BUF_SIZE = 1 << 20


class MirrorJob(GraphJob):
    """``MirrorBlockJob``; job type ``mirror``, or ``commit`` for an active commit."""

    job_type = "mirror"
    can_complete = True

    def __init__(
        self,
        manager: JobManager,
        job_id: str,
        *,
        source: str,
        target: str,
        sync: str,
        granularity: int,
        buf_size: int,
        copy_mode: str,
        replaces: str | None,
        base_overlay: str | None,
        zero_target: bool,
        is_commit: bool,
        on_target_error: str,
        **kw: Any,
    ) -> None:
        super().__init__(manager, job_id, **kw)
        self.source = source
        self.target = target
        self.sync = sync
        self.granularity = granularity
        self.buf_size = buf_size
        self.copy_mode = copy_mode
        self.replaces = replaces
        self.base_overlay = base_overlay
        self.zero_target = zero_target
        self.is_commit = is_commit
        self.on_target_error = on_target_error
        self.mirror_top = ""
        self.target_blk = ""
        self.should_complete = False
        self.prepared = False
        self.bitmap: DirtyBitmap | None = None
        #: ``bdrv_can_write_zeroes_with_unmap(target)``: discard=unmap on a format that can
        self.write_zeroes_ok = False

    # -- the job thread -------------------------------------------------------------------
    def run(self) -> int:
        """``mirror_run``."""
        rt = self.manager.session.runtime
        length = node_length(rt, self.mirror_top)
        target_length = backend_length(rt, self.target_blk)
        if self.is_commit:
            if target_length < length:
                # an active commit grows the base to the active layer's length first
                try:
                    blk_truncate(rt, self.target_blk, length)
                except IOFailure as exc:
                    return self.io_error(exc)
        elif target_length != length:
            self.err = "Source and target image have different sizes"
            return -errno.EINVAL
        if length == 0:
            self._ready()
            while not self.cancelled and not self.should_complete:
                self.sleep(SLICE_NS)
                if self.is_cancelled:
                    return 0
            self._soft_end()
            return 0
        bitmap = mirror_install(rt, self.mirror_top, self.target_blk, self.granularity, length)
        self.bitmap = bitmap
        if self.copy_mode == "write-blocking":
            mirror_set_active(rt, self.mirror_top, bitmap, True, self._active_write)
        mirror_dirty_init(
            rt,
            self.mirror_top,
            self.target_blk,
            bitmap,
            None if self.sync == "none" else (self.base_overlay or ""),
            self.zero_target,
            self.write_zeroes_ok,
        )
        while True:
            self.pause_point()
            delay = 0
            cnt = bitmap.count()
            with self.manager.mutex:
                self.progress_total = self.progress_current + cnt
            if cnt:
                try:
                    n, counted = mirror_copy(
                        rt,
                        self.mirror_top,
                        self.target_blk,
                        bitmap,
                        self.buf_size,
                        self.write_zeroes_ok,
                    )
                except IOFailure as exc:
                    is_read = bool(getattr(exc, "job_read", True))
                    ret = self.io_error(exc)
                    action = self._error_action(is_read, -ret)
                    if action == ErrorAction.REPORT:
                        return ret
                    continue
                self.progress(n)
                with self.manager.mutex:
                    delay = self.limit.delay_ns(counted) if counted else 0
            cnt = bitmap.count()
            should_complete = False
            if cnt == 0:
                if not self.is_ready:
                    mirror_flush(rt, self.target_blk)
                    self._ready()
                should_complete = self.should_complete or self.cancelled
            if cnt == 0 and should_complete:
                if mirror_set_active(rt, self.mirror_top, bitmap, True) > 0:
                    if self.copy_mode == "write-blocking":
                        mirror_set_active(rt, self.mirror_top, bitmap, True, self._active_write)
                    else:
                        mirror_set_active(rt, self.mirror_top, bitmap, False)
                    continue
                mirror_flush(rt, self.target_blk)
                self._soft_end()
                return 0
            if self.is_ready and not should_complete:
                delay = SLICE_NS if cnt == 0 else 0
            self.sleep(delay)
            if self.is_cancelled:
                return 0

    def simulate(self) -> int:
        """READY at the first wait point; the end only once complete (or a soft cancel) was
        asked for *and* a later wait point wants it, so each step sees a fixed graph. The
        lengths are checked first as in :meth:`run`: an active commit grows its base, a
        mirror between different lengths fails."""
        rt = self.manager.session.runtime
        length, target_length = rt.size(self.mirror_top), rt.size(self.target)
        if self.is_commit and target_length < length:
            rt.simulate_growth(self.target, length)
        elif not self.is_commit and target_length != length:
            self.err = "Source and target image have different sizes"
            return -errno.EINVAL
        super().simulate()
        if self.is_cancelled:
            return 0
        self._ready()
        while not (
            (self.cancelled or self.should_complete)
            and self.sim_wanted not in (None, "ready", "standby")
        ):
            self.sleep(SLICE_NS)
            if self.is_cancelled or self.manager.closing:
                return 0
        self._soft_end()
        return 0

    def _active_write(self, n: int) -> None:
        """A guest write copied synchronously counts as done work (write-blocking mode)."""
        with self.manager.mutex:
            self.progress_current += n
            self.progress_total += n

    def _error_action(self, is_read: bool, error: int) -> str:
        """Source errors follow on-source-error, target errors on-target-error."""
        return self.error_action(is_read, error, None if is_read else self.on_target_error)

    def _ready(self) -> None:
        """``job_transition_to_ready``: the state first, then BLOCK_JOB_READY."""
        with self.manager.mutex:
            self.progress_total = max(self.progress_total, self.progress_current)
            self.transition(JobStatus.READY)
            self.manager.emit("BLOCK_JOB_READY", self.event_data())

    def _soft_end(self) -> None:
        """In sync and finishing: a soft cancel becomes a normal completion."""
        with self.manager.mutex:
            if not self.force_cancel:
                self.cancelled = False

    # -- verbs ----------------------------------------------------------------------------
    def cancel_hook(self, force: bool) -> bool:
        """``mirror_cancel``: before READY every cancel is a force cancel."""
        return force or not self.is_ready

    def complete(self) -> None:
        """``mirror_complete``: look up ``replaces`` and finish once in sync."""
        session = self.manager.session
        if not self.is_ready:
            raise BlockError(f"The active block job '{self.id}' cannot be completed")
        if self.replaces is not None and self.replaces not in session.graph.nodes:
            raise BlockError(f"Node name '{self.replaces}' not found")
        with self.manager.mutex:
            self.should_complete = True
            if not self.paused:
                self.enter()

    # -- the end --------------------------------------------------------------------------
    def prepare(self, session: Session, tx: Transaction) -> None:
        self._exit_common(session, tx, abort=False)

    def abort(self, session: Session, tx: Transaction) -> None:
        self._exit_common(session, tx, abort=True)

    def _exit_common(self, session: Session, tx: Transaction, *, abort: bool) -> None:
        """``mirror_exit_common``, in QEMU's order (target BlockBackend, stop, pivot, filter)."""
        if self.prepared:
            return
        graph = session.graph
        if self.should_complete and not abort:
            self._recheck_replaces(session)
        self.prepared = True
        tx.undo(lambda: setattr(self, "prepared", False))
        self.unprotect(session, tx)
        mt = self.mirror_top
        if mt not in graph.nodes:
            return
        src = graph.backing_child(mt)
        assert src is not None
        if chain_contains(graph, src, self.target):
            unfreeze_backing_chain(session, tx, mt, self.target)
        remove_job_blk(session, tx, self.id, "target")
        options = dict(graph.nodes[mt].options)
        options[MIRROR_STOP] = True
        tx.set(graph.nodes[mt], "options", options)
        refresh_perms(session, tx, [mt])
        if self.should_complete and not abort:
            to_replace = self.replaces if self.replaces in graph.nodes else src
            assert to_replace is not None
            ro = graph.nodes[to_replace].read_only
            if ro != graph.nodes[self.target].read_only and ro:
                set_read_only_ignoring_errors(session, tx, self.target)
            replace_node_noperm(session, tx, to_replace, self.target, auto_skip=True)
            refresh_perms(session, tx, [self.target, to_replace])
        held = remove_job_children(session, tx, self.id)
        below = graph.backing_child(mt)
        assert below is not None
        replace_node_noperm(session, tx, mt, below, auto_skip=True)
        refresh_perms(session, tx, [below, mt])
        unref_unused(session, tx, [mt, src, *held])

    def _recheck_replaces(self, session: Session) -> None:
        """``mirror_exit_common`` checks ``bdrv_recurse_can_replace`` again before the
        pivot (the graph may have changed since the job started, e.g. a reopen moved a
        filter's file): a refusal fails the job's ``.prepare`` with -EPERM, so the job
        ends through ``.abort`` (no pivot) and reports ``Operation not permitted``."""
        graph = session.graph
        mt = self.mirror_top
        if self.replaces is None or mt not in graph.nodes or self.replaces not in graph.nodes:
            return
        src = graph.backing_child(mt)
        if src is not None and not _can_replace(session, src, self.replaces):
            raise BlockError(
                f"Can no longer replace '{self.replaces}' by '{self.target}', because it "
                "can no longer be guaranteed that doing so would not lead to an abrupt "
                "change of visible data"
            )


class ActiveCommitJob(MirrorJob):
    """``commit_active_job_driver``: a mirror into the base whose job type is ``commit``."""

    job_type = "commit"


def root_bs(session: Session, device: str) -> str:
    """``qmp_get_root_bs``."""
    bs = lookup_bs(session, device, device)
    if any(e.parent_kind is not ParentKind.ROOT for _p, e in session.graph.parents(bs)):
        raise BlockError("Need a root block node")
    return bs


def _default_granularity(session: Session, target: str) -> int:
    """``bdrv_get_default_bitmap_granularity``: the target's cluster size in [4k, 64k]."""
    cluster = session.graph.nodes[skip_filters(session.graph, target) or target].image.get(
        "cluster-size", 0
    )
    return min(max(4096, int(cluster or 0)), 65536) if cluster else 65536


def _can_replace(session: Session, bs: str, to_replace: str) -> bool:
    """``bdrv_recurse_can_replace``: ``to_replace`` is ``bs`` or is reached from it going
    down through filters (``bdrv_filter_bs``), so replacing it by a copy of ``bs``
    changes no visible data. (Quorum's own ``bdrv_recurse_can_replace`` is not modelled:
    a quorum is not a filter, so a node below it cannot be replaced.)"""
    graph = session.graph
    cur: str | None = bs
    seen: set[str] = set()
    while cur is not None and cur not in seen:
        if cur == to_replace:
            return True
        seen.add(cur)
        cur = filter_bs(graph, cur)
    return False


def _check_replaces(session: Session, bs: str, replaces: str) -> None:
    """``check_to_replace_node`` and the size check of ``blockdev_mirror_common``."""
    graph = session.graph
    if replaces not in graph.nodes:
        raise BlockError(f"Failed to find node with node-name='{replaces}'")
    reason = op_blocker(session, replaces, "replace")
    if reason is not None:
        raise BlockError(f"Node '{replaces}' is busy: {reason}")
    if not _can_replace(session, bs, replaces):
        raise BlockError(
            f"Cannot replace '{replaces}' by a node mirrored from '{bs}', because "
            "it cannot be guaranteed that doing so would not lead to an abrupt "
            "change of visible data"
        )
    if session.runtime.size(bs) != session.runtime.size(replaces):
        raise BlockError("cannot replace image with a mirror image of different size")


def stage_mirror_start(
    session: Session,
    tx: Transaction,
    manager: JobManager,
    *,
    job_id: str | None,
    bs: str,
    target: str,
    replaces: str | None,
    sync: str,
    speed: int,
    granularity: int,
    buf_size: int,
    zero_target: bool,
    on_source_error: str,
    on_target_error: str,
    filter_node_name: str | None,
    copy_mode: str,
    auto_finalize: bool,
    auto_dismiss: bool,
    is_commit: bool,
    base: str | None,
) -> MirrorJob:
    """``mirror_start_job``."""
    graph = session.graph
    if granularity == 0:
        granularity = _default_granularity(session, target)
    if buf_size < 0:
        raise BlockError("Invalid parameter 'buf-size'")
    if buf_size == 0:
        buf_size = _DEFAULT_BUF_SIZE
    if skip_filters(graph, bs) == skip_filters(graph, target):
        raise BlockError("Can't mirror node into itself")
    target_is_backing = chain_contains(graph, bs, target)
    mt = stage_append_job_filter(session, tx, "mirror_top", filter_node_name, bs, OpenFlag.RDWR)
    if filter_node_name is None:
        tx.set(graph.nodes[mt], "implicit", True)
    if target_is_backing:
        options = dict(graph.nodes[mt].options)
        options[MIRROR_COMMIT] = True
        tx.set(graph.nodes[mt], "options", options)
        refresh_perms(session, tx, [mt])
    job_id = manager.check_new_id(job_id if job_id is not None else default_job_id(session, bs))
    cls = ActiveCommitJob if is_commit else MirrorJob
    job = cls(
        manager,
        job_id,
        source=bs,
        target=target,
        sync=sync,
        granularity=granularity,
        buf_size=-(-buf_size // granularity) * granularity,
        copy_mode=copy_mode,
        replaces=replaces,
        base_overlay=find_overlay(graph, bs, base) if sync != "none" else None,
        zero_target=zero_target,
        is_commit=is_commit,
        on_target_error=on_target_error,
        auto_finalize=auto_finalize,
        auto_dismiss=auto_dismiss,
        on_error=on_source_error,
    )
    job.mirror_top = mt
    tnode = graph.nodes[skip_filters(graph, target) or target]
    job.write_zeroes_ok = bool(tnode.flags & OpenFlag.UNMAP) and tnode.driver in ("qcow2", "raw")
    add_job_vertex(session, tx, job_id, job.job_type)
    manager.create(tx, job, speed)
    add_job_child(
        session,
        tx,
        job_id,
        "main node",
        mt,
        Perm.CONSISTENT_READ,
        Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED | Perm.WRITE,
    )
    target_perms = Perm.WRITE
    target_shared = Perm.WRITE_UNCHANGED
    if target_is_backing:
        if session.runtime.size(target) < session.runtime.size(bs):
            target_perms |= Perm.RESIZE
        target_shared |= Perm.CONSISTENT_READ | Perm.WRITE
    elif chain_contains(graph, bs, skip_filters(graph, target) or target):
        raise BlockError("Cannot mirror to a filter on top of a node in the source's backing chain")
    job.target_blk = add_job_blk(
        session, tx, job_id, target, target_perms, target_shared, role="target"
    )
    add_job_child(
        session,
        tx,
        job_id,
        "source",
        bs,
        Perm.NONE,
        Perm.WRITE_UNCHANGED | Perm.WRITE | Perm.CONSISTENT_READ,
    )
    add_job_child(session, tx, job_id, "target", target, Perm.NONE, PERM_ALL)
    if target_is_backing:
        overlay = find_overlay(graph, bs, target)
        filtered_target = cow_bs(graph, overlay) if overlay is not None else None
        shared = Perm.WRITE_UNCHANGED | Perm.WRITE
        cur = filter_or_cow_child(graph, bs)
        while cur is not None and cur != target:
            if cur == filtered_target:
                shared |= Perm.CONSISTENT_READ
            add_job_child(session, tx, job_id, "intermediate node", cur, Perm.NONE, shared)
            cur = filter_or_cow_child(graph, cur)
        freeze_backing_chain(session, tx, mt, target)
        job.protect(session, tx, [(p, e.name, c) for p, c, e in chain_links(session, mt, target)])
    elif sync != "none":
        # A plain mirror copies what the source's chain holds above its base: cutting that
        # chain while it runs puts zeros on the target (QEMU has no op blocker for reopen).
        job.protect(session, tx, [(p, e.name, c) for p, c, e in chain_links(session, bs, base)])
    return job


def _check_granularity(granularity: int) -> None:
    if granularity != 0 and (granularity < 512 or granularity > 64 * 1048576):
        raise BlockError("Parameter 'granularity' expects a value in range [512B, 64MB]")
    if granularity & (granularity - 1):
        raise BlockError("Parameter 'granularity' expects a power of 2")


def stage_blockdev_mirror(
    session: Session, tx: Transaction, manager: JobManager, args: dict[str, Any]
) -> MirrorJob:
    """``qmp_blockdev_mirror`` → ``blockdev_mirror_common`` → ``mirror_start``."""
    graph = session.graph
    bs = root_bs(session, args["device"])
    target = lookup_bs(session, args["target"], args["target"])
    sync = args["sync"]
    granularity = int(args.get("granularity", 0))
    _check_granularity(granularity)
    for node, op in ((bs, "mirror-source"), (target, "mirror-target")):
        reason = op_blocker(session, node, op)
        if reason is not None:
            raise BlockError(
                f"Node '{node}' is busy: {reason}", rule="op-blocker", subjects=(node,)
            )
    # qmp_blockdev_mirror decides zero_target on the sync mode the user gave, before
    # blockdev_mirror_common turns a top mirror of a node without backing into full
    zero_target = sync == "full"
    if backing_chain_next(graph, bs) is None and sync == "top":
        sync = "full"
    replaces = args.get("replaces")
    if replaces is None:
        unfiltered = _skip_implicit_filters(session, bs)
        if unfiltered != bs:
            replaces = unfiltered
    if replaces is not None:
        _check_replaces(session, bs, replaces)
    if sync in ("incremental", "bitmap"):
        raise BlockError(f"Sync mode '{sync}' not supported")
    base = backing_chain_next(graph, bs) if sync == "top" else None
    return stage_mirror_start(
        session,
        tx,
        manager,
        job_id=args.get("job-id"),
        bs=bs,
        target=target,
        replaces=replaces,
        sync=sync,
        speed=args.get("speed", 0),
        granularity=granularity,
        buf_size=int(args.get("buf-size", 0)),
        zero_target=zero_target,
        on_source_error=args.get("on-source-error", "report"),
        on_target_error=args.get("on-target-error", "report"),
        filter_node_name=args.get("filter-node-name"),
        copy_mode=args.get("copy-mode", "background"),
        auto_finalize=args.get("auto-finalize", True),
        auto_dismiss=args.get("auto-dismiss", True),
        is_commit=False,
        base=base,
    )


def _skip_implicit_filters(session: Session, name: str) -> str:
    graph = session.graph
    while graph.nodes[name].implicit:
        nxt = filter_or_cow_child(graph, name)
        if nxt is None:
            break
        name = nxt
    return name


def blockdev_mirror(session: Session, args: dict[str, Any]) -> None:
    """QMP ``blockdev-mirror``: one transaction builds the job's graph, then the job starts."""
    manager = manager_of(session)
    with session.transaction() as tx:
        job = stage_blockdev_mirror(session, tx, manager, args)
    manager.start(job)
