"""Running a job driver's graph-changing hooks (job.c ``job_prepare_locked``,
``job_commit``, ``job_abort``, ``job_clean``).

QEMU's ``.prepare`` may fail (the transaction of jobs then aborts); ``.commit``,
``.abort`` and ``.clean`` return nothing and cannot fail. In txgraph each hook
is a session transaction of its own, so the checker and the data-plane delta
see it like any QMP command: :func:`run_hook` for the fallible one,
:func:`run_infallible_hook` for the others, which retries a transaction that
undid itself after a transient failure.

Owner and lock discipline
-------------------------
Called only by :class:`~txgraph.jobs.manager.JobManager` while finalising or
dismissing a job, with the bql held (the main-loop half of the lifecycle) and
``manager.mutex`` held (an RLock, so the session transaction's drain of other
jobs may take it again). They keep no state of their own; what they change on
the job (``ret``, ``err``) is guarded by that mutex.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from txgraph.errors import TxgraphError

if TYPE_CHECKING:
    from txgraph.jobs.job import Job
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = ["INFALLIBLE_ATTEMPTS", "INTERNAL", "run_hook", "run_infallible_hook"]

log = logging.getLogger(__name__)

#: the error a job reports when a bug (not a block-layer refusal) failed one of its hooks
INTERNAL = "Internal error in txgraph; see the server log"
#: attempts of a hook that cannot fail in QEMU before txgraph gives up on it
INFALLIBLE_ATTEMPTS = 3

Hook = Callable[["Session", "Transaction"], None]


def run_hook(session: Session, job: Job, hook: Hook) -> bool:
    """Run one graph-changing driver hook (``.prepare``) in a transaction of its own.

    A refused change is undone and fails the job the way QEMU's drivers
    report it (``-EPERM``; the reason goes to the log as QEMU prints it).
    """
    try:
        with session.transaction(by_job=True) as tx:
            hook(session, tx)
    except Exception as exc:
        # QEMU's drivers error_report() the reason and return -EPERM.
        desc = exc.desc if isinstance(exc, TxgraphError) else INTERNAL
        if isinstance(exc, TxgraphError):
            log.warning("block job %r: %s: %s", job.id, getattr(hook, "__name__", "hook"), desc)
        else:
            log.exception("block job %r: %s failed", job.id, getattr(hook, "__name__", "hook"))
        if not job.ret:
            job.ret = -errno.EPERM
        # job_prepare_locked → job_update_rc_locked: the job's error is strerror(-ret)
        # unless the driver set one; the reason itself only went to the log.
        job.err = job.err or (os.strerror(-job.ret) if isinstance(exc, TxgraphError) else desc)
        return False
    return True


def run_infallible_hook(
    session: Session, job: Job, hook: Hook, attempts: int = INFALLIBLE_ATTEMPTS
) -> None:
    """Run a ``commit`` / ``abort`` / ``clean`` hook (or the final release) to the end.

    QEMU's ``.commit``, ``.abort`` and ``.clean`` return nothing: they cannot
    fail (what could, runs with ``&error_abort``), so a cancelled job always
    takes its filter out. txgraph's hook is a transaction whose primitives
    can fail transiently (an injected fault, a failed allocation); the
    transaction then undoes itself and leaves the graph as before, so
    running it again from the same state is sound. After ``attempts``
    failures -- where QEMU would abort the process -- the failure is logged
    and the job still ends.
    """
    name = getattr(hook, "__name__", "hook")
    for attempt in range(1, attempts + 1):
        try:
            with session.transaction(by_job=True) as tx:
                hook(session, tx)
            return
        except Exception as exc:
            desc = exc.desc if isinstance(exc, TxgraphError) else repr(exc)
            log.warning("block job %r: %s failed (attempt %d): %s", job.id, name, attempt, desc)
    log.error("block job %r: %s kept failing; its graph changes are left undone", job.id, name)
