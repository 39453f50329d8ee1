"""The generic job: QEMU's ``Job`` + ``BlockJob`` lifecycle (job.c, blockjob.c).

A :class:`Job` runs its driver's :meth:`Job.run` on a thread of its own (QEMU's
job coroutine); everything else — verbs from QMP, completion, finalisation —
runs with the session's big lock held (QEMU's main loop), so a job's graph
changes at the end never interleave with a QMP command.

Lifecycle (reference/qemu-jobs.md §1.5): ``created`` with ``pause_count`` 1,
``job_start`` lowers it and the job is ``running``. When ``run`` returns, the
job is *completed*: success moves it to ``waiting``, and once every job of its
transaction is there, all go ``pending`` and (unless one needs a manual
``job-finalize``) are finalised: ``prepare`` for all (one failure aborts the
transaction), then per job ``commit`` or ``abort``, ``clean``, the
``BLOCK_JOB_COMPLETED``/``CANCELLED`` event, ``concluded`` and, with
auto-dismiss, ``null``. Failure or a force-cancel moves the job to
``aborting`` and force-cancels its whole transaction.

Lock discipline
---------------
``manager.mutex`` (QEMU's ``job_mutex``, a Condition over an RLock) guards
every field of every job below the "job state" line; it is never held while a
job does I/O or while a transaction runs. ``manager.bql`` (the session's big
lock) is held by QMP commands and by the code that completes, finalises and
dismisses jobs; a job thread takes it only after ``run`` returned. Lock order:
bql before mutex. A waiter that holds the bql (``finish_sync``) completes
other jobs inline instead of waiting for their threads, so no thread ever
waits for the bql while another waits for it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

from txgraph.errors import BlockError, IOFailure, TxgraphError
from txgraph.jobs.ratelimit import RateLimit
from txgraph.jobs.status import JobStatus, JobVerb, apply_verb, check_transition

if TYPE_CHECKING:
    from txgraph.jobs.manager import JobManager
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = ["Job", "JobTxn", "ErrorAction"]

log = logging.getLogger(__name__)

S = JobStatus

#: the states in which a job counts as completed (``job_is_completed_locked``)
_COMPLETED = frozenset({S.WAITING, S.PENDING, S.ABORTING, S.CONCLUDED, S.NULL})


class ErrorAction:
    """``BlockErrorAction`` values as BLOCK_JOB_ERROR reports them."""

    IGNORE = "ignore"
    REPORT = "report"
    STOP = "stop"


class JobTxn:
    """``JobTxn``: jobs that complete or fail together (``completion-mode: grouped``)."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.aborting = False


class Job:
    """One block job. Subclasses are the drivers (stream, commit, ...).

    Driver hooks: :meth:`run` on the job thread; :meth:`prepare`,
    :meth:`commit`, :meth:`abort` and :meth:`clean` with the big lock held,
    each given the transaction its graph changes go into.
    """

    job_type: ClassVar[str] = ""
    #: the driver has ``.complete`` (mirror, active commit)
    can_complete: ClassVar[bool] = False

    def __init__(
        self,
        manager: JobManager,
        job_id: str,
        *,
        speed: int = 0,
        auto_finalize: bool = True,
        auto_dismiss: bool = True,
        on_error: str = "report",
    ) -> None:
        self.manager = manager
        self.id = job_id
        self.on_error = on_error
        self.auto_finalize = auto_finalize
        self.auto_dismiss = auto_dismiss
        self.txn = JobTxn()
        self.txn.jobs.append(self)
        # -- job state (manager.mutex) --
        self.status = S.UNDEFINED
        self.pause_count = 1
        self.user_paused = False
        self.paused = False
        self.busy = False
        self.cancelled = False
        self.force_cancel = False
        self.deferred_to_main_loop = False
        self.started = False
        self.run_done = False
        self.exited = False
        self.ret = 0
        self.err: str | None = None
        self.progress_current = 0
        self.progress_total = 0
        self.speed = 0
        self.limit = RateLimit()
        self.iostatus = "ok"
        self._wake = False
        #: the job yielded for the first time (a real sleep, a pause, or the end of run)
        self.yielded = False
        #: ``run`` reached a sleep, which yields in QEMU even for 0 ns (``job_sleep_ns``)
        self.slept = False
        #: the latest wait point a dry run's plan asked for (see :meth:`simulate`)
        self.sim_wanted: str | None = None

    # -- facts ------------------------------------------------------------------------------
    @property
    def is_cancelled(self) -> bool:
        """``job_is_cancelled``: a *force* cancel (a soft one only requests it)."""
        return self.cancelled and self.force_cancel

    @property
    def is_completed(self) -> bool:
        return self.status in _COMPLETED

    @property
    def is_ready(self) -> bool:
        return self.status in (S.READY, S.STANDBY)

    # -- state changes (manager.mutex held) -------------------------------------------------
    def transition(self, new: JobStatus) -> None:
        """``job_state_transition_locked``: JOB_STATUS_CHANGE when the state really changes."""
        old = self.status
        check_transition(old, new)
        self.status = new
        if new != old:
            self.manager.emit("JOB_STATUS_CHANGE", {"id": self.id, "status": str(new)})

    def set_speed(self, speed: int) -> None:
        """``block_job_set_speed_locked``: the verb check, then the limit; a raise wakes the job."""
        apply_verb(self.id, self.status, JobVerb.SET_SPEED)
        if speed < 0:
            raise BlockError("Parameter 'speed' expects a non-negative value")
        old = self.speed
        self.limit.set_speed(speed)
        self.speed = speed
        if speed and speed <= old:
            return
        self.enter()

    def enter(self) -> None:
        """``job_enter_cond``: wake the job from a sleep or pause."""
        self._wake = True
        self.manager.mutex.notify_all()

    # -- the job thread -----------------------------------------------------------------
    def start(self) -> threading.Thread:
        """``job_start``: the job runs from now on (called with the mutex held)."""
        self.started = True
        self.busy = True
        self.pause_count -= 1
        self.transition(S.RUNNING)
        thread = threading.Thread(target=self._main, name=f"job:{self.id}", daemon=True)
        thread.start()
        return thread

    @property
    def simulated(self) -> bool:
        """The session is a plan's dry run: the job copies nothing, only its states and its
        graph changes happen (``txgraph plan`` shows a job's effect at each point)."""
        return bool(getattr(self.manager.session.runtime, "dry_run", False))

    def simulate(self) -> int:
        """``run`` of a dry run. The job counts as still copying until a wait point of the
        plan asks for more (so every step in between is checked against a running job);
        then its work is done at once. A job that becomes READY then waits there for
        job-complete or a cancel; one that never ends by itself (backup sync=none) waits
        for its cancel."""
        mutex = self.manager.mutex
        with mutex:
            while self.sim_wanted is None and not self.is_cancelled and not self.manager.closing:
                self.busy = False
                self._yield()
                mutex.wait(0.5)
            self.busy = True
            self.progress_total = self.progress_current = max(self.progress_total, 1)
        self.pause_point()
        return 0

    def _main(self) -> None:
        try:
            ret = self.simulate() if self.simulated else self.run()
        except IOFailure as exc:
            ret = -(exc.errno or errno.EIO)
            self.err = self.err or exc.desc
        except TxgraphError as exc:
            ret = -errno.EIO
            self.err = self.err or exc.desc
        except Exception:  # a bug in a driver must not hang the job
            log.exception("block job %r failed unexpectedly", self.id)
            ret = -errno.EIO
            self.err = self.err or "Internal error in txgraph; see the server log"
        with self.manager.mutex:
            self.ret = ret
            self.busy = False
            self.deferred_to_main_loop = True
            self.run_done = True
            self._yield()
        self.manager.exit_from_thread(self)

    def sleep(self, delay_ns: int) -> None:
        """``job_sleep_ns``: sleep unless cancelled or asked to pause (an ``enter`` ends
        it early), then a pause point."""
        mutex = self.manager.mutex
        with mutex:
            if not self.is_cancelled:
                self.slept = True
            if not self.is_cancelled and delay_ns > 0 and self.pause_count <= 0:
                deadline = time.monotonic() + delay_ns / 1e9
                self._wake = False
                self.busy = False
                self._yield()
                while not self._wake and not self.is_cancelled and not self.manager.closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    mutex.wait(left)
                self.busy = True
        self.pause_point()

    def _yield(self) -> None:
        """The job gives the main loop back (mutex held): whoever waits for it may go on."""
        self.yielded = True
        self.manager.mutex.notify_all()

    def pause_point(self) -> None:
        """``job_pause_point_locked``: park while paused (``paused``, or ``standby`` if ready)."""
        mutex = self.manager.mutex
        with mutex:
            if self.pause_count <= 0 or self.is_cancelled:
                return
            before = self.status
            self.transition(S.STANDBY if before is S.READY else S.PAUSED)
            self.paused, self.busy = True, False
            self._yield()
            while self.pause_count > 0 and not self.is_cancelled and not self.manager.closing:
                mutex.wait(1.0)
            self.paused, self.busy = False, True
            self.transition(before)

    def progress(self, done: int) -> None:
        """``job_progress_update``."""
        with self.manager.mutex:
            self.progress_current += done

    def error_action(self, is_read: bool, error: int, policy: str | None = None) -> str:
        """``block_job_error_action``: the on-error policy's answer (the job's ``on_error``
        unless the caller names another, e.g. on-target-error), and BLOCK_JOB_ERROR."""
        policy = policy or self.on_error
        if policy == "enospc":
            action = ErrorAction.STOP if error == errno.ENOSPC else ErrorAction.REPORT
        elif policy == "stop":
            action = ErrorAction.STOP
        elif policy == "ignore":
            action = ErrorAction.IGNORE
        else:
            action = ErrorAction.REPORT
        with self.manager.mutex:
            self.manager.emit(
                "BLOCK_JOB_ERROR",
                {"device": self.id, "operation": "read" if is_read else "write", "action": action},
            )
            if action == ErrorAction.STOP:
                # Paused as if by the user; only a resume (which resets iostatus) goes on.
                if not self.user_paused:
                    self.user_paused = True
                    self.pause_count += 1
                self.iostatus = "nospace" if error == errno.ENOSPC else "failed"
        return action

    def io_error(self, exc: IOFailure) -> int:
        """Record a failed request of ``run``: its errno, and QEMU's message for it."""
        code = exc.errno or errno.EIO
        if self.err is None:
            self.err = os.strerror(code)
        return -code

    # -- driver hooks ---------------------------------------------------------------------
    def run(self) -> int:
        """The job's work; 0 on success, ``-errno`` on failure."""
        raise NotImplementedError

    def prepare(self, session: Session, tx: Transaction) -> None:
        """``.prepare``: graph changes of a successful job; raising fails the transaction."""

    def commit(self, session: Session, tx: Transaction) -> None:
        """``.commit``."""

    def abort(self, session: Session, tx: Transaction) -> None:
        """``.abort``."""

    def clean(self, session: Session, tx: Transaction) -> None:
        """``.clean``: runs after commit or abort."""

    def release(self, session: Session, tx: Transaction) -> None:
        """The job lets go of the graph (``block_job_free``), when it is dismissed."""

    def cancel_hook(self, force: bool) -> bool:
        """``.cancel``: whether the cancel acts as a force cancel (no hook: always)."""
        return True

    def complete(self) -> None:
        """``.complete`` (mirror, active commit)."""
        raise BlockError(f"The active block job '{self.id}' cannot be completed")

    def user_resume(self) -> None:
        """``block_job_user_resume``: a resume resets the I/O status."""
        self.iostatus = "ok"

    # -- queries --------------------------------------------------------------------------
    def job_info(self) -> dict[str, Any]:
        """``JobInfo`` of query-jobs."""
        info: dict[str, Any] = {
            "id": self.id,
            "type": self.job_type,
            "status": str(self.status),
            "current-progress": self.progress_current,
            "total-progress": self.progress_total,
        }
        if self.status is S.CONCLUDED and self.err is not None and self.ret:
            info["error"] = self.err
        return info

    def block_job_info(self) -> dict[str, Any]:
        """``BlockJobInfo`` of query-block-jobs (``block_job_query_locked``)."""
        info: dict[str, Any] = {
            "type": self.job_type,
            "device": self.id,
            "len": self.progress_total,
            "offset": self.progress_current,
            "busy": self.busy,
            "paused": self.pause_count > 0,
            "speed": self.speed,
            "io-status": self.iostatus,
            "ready": self.is_ready,
            "status": str(self.status),
            "auto-finalize": self.auto_finalize,
            "auto-dismiss": self.auto_dismiss,
        }
        if self.status is S.CONCLUDED and self.err is not None and self.ret:
            info["error"] = self.err
        return info

    def event_data(self) -> dict[str, Any]:
        """The members of BLOCK_JOB_COMPLETED / CANCELLED / READY."""
        return {
            "type": self.job_type,
            "device": self.id,
            "len": self.progress_total,
            "offset": self.progress_current,
            "speed": self.speed,
        }
