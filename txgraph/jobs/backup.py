"""``blockdev-backup``: a point-in-time copy of a node while the guest keeps writing (block/backup.c).

``backup_job_create`` of QEMU 7.2 checks source and target (not the same, sizes
equal, op blockers BACKUP_SOURCE / BACKUP_TARGET), inserts a
``copy-before-write`` filter above the source (``bdrv_cbw_append``: named
``filter-node-name`` or auto-named, *not* implicit) whose ``target`` child
takes write on the target, creates the job on the filter (``"main node"``) and
holds the target as ``"target"``. Every guest write through the filter first
saves the old data of the clusters it touches to the target
(:mod:`txgraph.io.drivers.copy_before_write`); the job copies the rest
(``full``: everything; ``top``: what the source node itself allocates;
``none``: nothing — it only serves copy-before-write until cancelled). The
filter leaves the graph in ``clean`` (``bdrv_cbw_drop``). A cancel of a backup
is always a force cancel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgraph.errors import BlockError, IOFailure
from txgraph.io.jobio import backup_init, backup_remaining, backup_step
from txgraph.jobs.blockjob import (
    GraphJob,
    add_job_child,
    add_job_vertex,
    default_job_id,
    remove_job_children,
    unref_unused,
)
from txgraph.jobs.job import ErrorAction
from txgraph.jobs.manager import JobManager, manager_of
from txgraph.jobs.ratelimit import SLICE_NS
from txgraph.model.node import OpenFlag
from txgraph.model.perm_bits import PERM_ALL, Perm
from txgraph.ops.blockdev import op_blocker
from txgraph.ops.filters import stage_insert_node
from txgraph.ops.open import lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.query import supports_compressed_writes
from txgraph.ops.replace import replace_node_noperm
from txgraph.ops.session import Session

if TYPE_CHECKING:
    from txgraph.ops.undo_log import Transaction

__all__ = ["BackupJob", "blockdev_backup", "stage_blockdev_backup", "TRANSACTION_ACTIONS"]

#: how much of the disk one background iteration copies at most
_STEP = 1 << 20


class BackupJob(GraphJob):
    """``BackupBlockJob``."""

    job_type = "backup"

    def __init__(
        self,
        manager: JobManager,
        job_id: str,
        *,
        source: str,
        target: str,
        sync: str,
        length: int,
        on_target_error: str,
        compress: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(manager, job_id, **kw)
        self.source = source
        self.target = target
        self.sync = sync
        self.length = length
        self.on_target_error = on_target_error
        self.compress = compress
        self.cbw = ""

    def cancel_hook(self, force: bool) -> bool:
        """``backup_cancel``: always a force cancel."""
        return True

    def run(self) -> int:
        """``backup_run``."""
        rt = self.manager.session.runtime
        total = backup_init(rt, self.cbw, self.sync == "top", self.compress)
        with self.manager.mutex:
            self.progress_total = total
        if self.sync == "none":
            while not self.is_cancelled:
                self.sleep(SLICE_NS)  # copy-before-write does all the work
            return 0
        offset, delay = 0, 0
        while offset < self.length:
            self.sleep(delay)
            if self.is_cancelled:
                return 0
            n = min(_STEP, self.length - offset)
            try:
                copied = backup_step(rt, self.cbw, offset, n)
            except IOFailure as exc:
                is_read = bool(getattr(exc, "job_read", True))
                ret = self.io_error(exc)
                action = self.error_action(is_read, -ret, None if is_read else self.on_target_error)
                if action == ErrorAction.REPORT:
                    return ret
                delay = 0
                continue
            self._sync_progress(total)
            with self.manager.mutex:
                delay = self.limit.delay_ns(copied) if copied else 0
            offset += n
        self._sync_progress(total)
        return 0

    def simulate(self) -> int:
        super().simulate()
        while self.sync == "none" and not self.is_cancelled and not self.manager.closing:
            self.sleep(SLICE_NS)
        return 0

    def _sync_progress(self, total: int) -> None:
        """Progress is what is no longer to be copied, whoever copied it (job or filter)."""
        left = backup_remaining(self.manager.session.runtime, self.cbw)
        with self.manager.mutex:
            self.progress_current = max(0, total - left)

    def clean(self, session: Session, tx: Transaction) -> None:
        """``backup_clean``: the job lets go of its nodes, then ``bdrv_cbw_drop``: the
        filter's parents go back to the source and the filter is gone."""
        graph = session.graph
        held = remove_job_children(session, tx, self.id)
        cbw = self.cbw
        if cbw and cbw in graph.nodes:
            replace_node_noperm(session, tx, cbw, self.source, auto_skip=True)
            refresh_perms(session, tx, [self.source, cbw])
            unref_unused(session, tx, [cbw])
        unref_unused(session, tx, held)


def stage_blockdev_backup(
    session: Session, tx: Transaction, manager: JobManager, args: dict[str, Any]
) -> BackupJob:
    """``blockdev_backup_prepare`` → ``do_backup_common`` → ``backup_job_create``."""
    bs = lookup_bs(session, args["device"], args["device"])
    target = lookup_bs(session, args["target"], args["target"])
    tx.drained_nodes.add(bs)  # blockdev_backup_prepare, paired with .clean
    sync = args["sync"]
    if sync in ("bitmap", "incremental") and "bitmap" not in args:
        raise BlockError(f"must provide a valid bitmap name for '{sync}' sync mode")
    if "bitmap" in args:
        raise BlockError(f"Bitmap '{args['bitmap']}' could not be found")
    if "bitmap-mode" in args:
        raise BlockError("Cannot specify bitmap sync mode without a bitmap")
    if bs == target:
        raise BlockError("Source and target cannot be the same")
    if args.get("compress") and not supports_compressed_writes(session.graph, target):
        # bdrv_get_device_name(target): a named BlockBackend's name; QSD has none (no -drive)
        raise BlockError("Compression is not supported for this drive ")
    for node, op in ((bs, "backup-source"), (target, "backup-target")):
        reason = op_blocker(session, node, op)
        if reason is not None:
            raise BlockError(
                f"Node '{node}' is busy: {reason}", rule="op-blocker", subjects=(node,)
            )
    perf = args.get("x-perf", {})
    if "max-workers" in perf and not 1 <= perf["max-workers"] <= 2**31 - 1:
        raise BlockError("max-workers must be between 1 and 2147483647")
    if perf.get("max-chunk", 0) < 0:
        raise BlockError("max-chunk must be zero (which means no limit) or positive")
    length = session.runtime.size(bs)
    if session.runtime.size(target) != length:
        raise BlockError("Source and target image have different sizes")
    options: dict[str, Any] = {"driver": "copy-before-write", "file": bs, "target": target}
    if args.get("filter-node-name") is not None:
        options["node-name"] = args["filter-node-name"]
    cbw = stage_insert_node(session, tx, bs, options, OpenFlag.RDWR)
    job_id = manager.check_new_id(args.get("job-id", default_job_id(session, bs)))
    job = BackupJob(
        manager,
        job_id,
        source=bs,
        target=target,
        sync=sync,
        length=length,
        on_target_error=args.get("on-target-error", "report"),
        compress=bool(args.get("compress", False)),
        auto_finalize=args.get("auto-finalize", True),
        auto_dismiss=args.get("auto-dismiss", True),
        on_error=args.get("on-source-error", "report"),
    )
    job.cbw = cbw
    add_job_vertex(session, tx, job_id, job.job_type)
    manager.create(tx, job, args.get("speed", 0))
    add_job_child(session, tx, job_id, "main node", cbw, Perm.NONE, PERM_ALL)
    add_job_child(session, tx, job_id, "target", target, Perm.NONE, PERM_ALL)
    return job


def blockdev_backup(session: Session, args: dict[str, Any]) -> None:
    """QMP ``blockdev-backup`` (a one-action transaction in QEMU: drain all, prepare, then
    start)."""
    manager = manager_of(session)
    session.drain_all()
    with session.transaction() as tx:
        job = stage_blockdev_backup(session, tx, manager, args)
    manager.start(job, drained=True)  # blockdev_backup_prepare drained the source


def stage_backup_action(
    session: Session, tx: Transaction, data: dict[str, Any], group: list[Any] | None
) -> BackupJob:
    """The ``blockdev-backup`` action of ``transaction``: prepare creates the job, commit
    starts it (``blockdev_backup_commit``), abort cancels it before it ever ran
    (``blockdev_backup_abort``: created, aborting, concluded, null — no BLOCK_JOB_*).

    Under ``completion-mode: grouped`` every job of the transaction joins one JobTxn
    (``group`` holds it).
    """
    manager = manager_of(session)
    job = stage_blockdev_backup(session, tx, manager, data)
    if group is not None:
        if group:
            txn = group[0]
            txn.jobs.insert(0, job)  # job_txn_add_job: at the head, newest first
            job.txn = txn
        else:
            group.append(job.txn)
    tx.undo(lambda: manager.abort_unstarted(job))
    manager.start_on_commit(tx, job)
    return job


#: the job actions of QMP ``transaction`` (7.2: backup is the only job family there)
TRANSACTION_ACTIONS = {"blockdev-backup": stage_backup_action}
