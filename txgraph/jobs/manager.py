"""The session's jobs: creation, the verbs, completion and finalisation (job.c, job-qmp.c).

:class:`JobManager` is QEMU's global job list plus the main-loop half of the
job lifecycle (``job_exit`` → ``job_completed`` → ``job_do_finalize`` →
``job_finalize_single`` → ``job_conclude``). Each driver hook that changes the
graph runs in a session transaction of its own, so the checker and the
data-plane delta see it like any QMP command.

Drained sections live in :mod:`txgraph.jobs.drain`, the running of driver
hooks in :mod:`txgraph.jobs.hooks`.

Lock discipline: see :mod:`txgraph.jobs.job` — ``bql`` (the session's big
lock) before ``mutex``; every method here except :meth:`exit_from_thread`
and :meth:`cancel_sync_all` is called with the bql held.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from txgraph.errors import BlockError
from txgraph.jobs import drain, hooks
from txgraph.jobs.job import Job
from txgraph.jobs.status import JobStatus, JobVerb, apply_verb
from txgraph.model.names import id_wellformed

if TYPE_CHECKING:
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = ["JobManager", "DeviceNotActive", "manager_of"]

S = JobStatus

log = logging.getLogger(__name__)

#: how long closing waits for one job thread to leave its I/O
_JOIN_DEADLINE = 30.0


class DeviceNotActive(BlockError):
    """The ``block-job-*`` commands' error for an unknown job (``find_block_job_locked``)."""

    error_class = "DeviceNotActive"


#: events that mark a milestone of a job, and the wait points plans may name
_MILESTONES = {
    "BLOCK_JOB_READY": "ready",
    "BLOCK_JOB_COMPLETED": "completed",
    "BLOCK_JOB_CANCELLED": "cancelled",
    "BLOCK_JOB_ERROR": "error",
}
WAIT_POINTS = frozenset(
    {
        "ready",
        "completed",
        "cancelled",
        "error",
        "running",
        "paused",
        "standby",
        "waiting",
        "pending",
        "aborting",
        "concluded",
        "null",
    }
)


def _release_all(lock: Any) -> int:
    """Let go of every level of an RLock this thread holds; how many there were."""
    count = 0
    while True:
        try:
            lock.release()
        except RuntimeError:
            return count
        count += 1


def manager_of(session: Session) -> JobManager:
    """The session's job manager, created on first use (the session closes it)."""
    manager = session.jobs
    if manager is None:
        manager = JobManager(session)
        session.jobs = manager
        session.close_hooks.append(manager.cancel_sync_all)
    assert isinstance(manager, JobManager)
    return manager


class JobManager:
    """Every job of one session, newest first (QEMU inserts at the list head)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.bql = session.lock
        self.mutex = threading.Condition(threading.RLock())
        self.jobs: list[Job] = []
        #: set while the session closes: sleeping and paused jobs stop waiting
        self.closing = False
        #: every job thread started and not yet joined (closing joins them)
        self.threads: list[threading.Thread] = []
        #: jobs a transaction created, started together when it commits (by id of the tx)
        self._batches: dict[int, list[Job]] = {}
        #: what each job ID reached (statuses and events), for wait points; a new job with
        #: the same ID starts afresh
        self.milestones: dict[str, set[str]] = {}

    def emit(self, name: str, data: dict[str, Any]) -> None:
        milestone = _MILESTONES.get(name)
        if name == "JOB_STATUS_CHANGE":
            milestone = str(data.get("status"))
        job_id = data.get("id", data.get("device"))
        if milestone is not None and isinstance(job_id, str):
            with self.mutex:
                self.milestones.setdefault(job_id, set()).add(milestone)
                self.mutex.notify_all()
        self.session.emit_event(name, data)

    def wait_for(self, job_id: str, milestone: str, timeout: float) -> None:
        """Block until job ``job_id`` reached ``milestone`` (a status, or ``completed``,
        ``cancelled``, ``error``); the caller's hold on the big lock is let go meanwhile so
        the job can finish (a plan's wait point, ``x-txgraph-wait-job``)."""
        if milestone not in WAIT_POINTS:
            raise BlockError(
                f"Unknown wait point '{milestone}'; expected one of "
                f"{', '.join(sorted(WAIT_POINTS))}"
            )
        with self.mutex:
            job = self.get(job_id)
            if job is None and job_id not in self.milestones:
                raise BlockError("Job not found")
            if job is not None and milestone != "running":
                job.sim_wanted = milestone  # a dry run's job may now go as far as that
                job.enter()
        deadline = time.monotonic() + timeout
        released = _release_all(self.bql)
        try:
            with self.mutex:
                while milestone not in self.milestones.get(job_id, set()):
                    if "null" in self.milestones.get(job_id, set()):
                        raise BlockError(f"Job '{job_id}' ended without reaching '{milestone}'")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BlockError(
                            f"Timed out after {timeout:g} s waiting for job "
                            f"'{job_id}' to reach '{milestone}'"
                        )
                    self.mutex.wait(min(left, 0.5))
        finally:
            for _ in range(released):
                self.bql.acquire()

    # -- lookup ---------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    def find_job(self, job_id: str) -> Job:
        """``find_job_locked`` of job-qmp.c."""
        job = self.get(job_id)
        if job is None:
            raise BlockError("Job not found")
        return job

    def find_block_job(self, job_id: str) -> Job:
        """``find_block_job_locked`` of blockdev.c: DeviceNotActive."""
        job = self.get(job_id)
        if job is None:
            raise DeviceNotActive(f"Block job '{job_id}' not found")
        return job

    # -- creation -------------------------------------------------------------------------
    def check_new_id(self, job_id: str | None) -> str:
        """``job_create``'s ID rules (a block job's default ID was filled in by the caller)."""
        if job_id is None:
            raise BlockError("An explicit job ID is required")
        if not id_wellformed(job_id):
            raise BlockError(f"Invalid job ID '{job_id}'")
        if self.get(job_id) is not None:
            raise BlockError(f"Job ID '{job_id}' already in use")
        return job_id

    def create(self, tx: Transaction, job: Job, speed: int) -> None:
        """``block_job_create`` inside the command's transaction.

        The job is listed and ``created`` at once (QEMU emits that event before
        the command's later checks); if the transaction aborts, the job fails
        early (``job_early_fail``: ``null``) and is unlisted.
        """
        with self.mutex:
            self.jobs.insert(0, job)
            self.milestones[job.id] = set()
            job.transition(S.CREATED)
        tx.undo(lambda: self._early_fail(job))
        with self.mutex:
            job.set_speed(speed)

    def _early_fail(self, job: Job) -> None:
        with self.mutex:
            if job.status is not S.NULL:
                job.transition(S.NULL)
            if job in self.jobs:
                self.jobs.remove(job)

    def abort_unstarted(self, job: Job) -> None:
        """A transaction that created a job aborts before starting it (``*_backup_abort``:
        a forced ``job_cancel_sync``): aborting, concluded, null — and no BLOCK_JOB_*.
        The graph changes are undone by the transaction itself."""
        with self.mutex:
            if job.started or job.status is not S.CREATED:
                return
            job.transition(S.ABORTING)
            job.transition(S.CONCLUDED)
            job.transition(S.NULL)
            if job in self.jobs:
                self.jobs.remove(job)
            if job in job.txn.jobs:
                job.txn.jobs.remove(job)

    def start(self, job: Job, *, drained: bool = False) -> None:
        """``job_start``, then run the job until it first yields, as QEMU's coroutine runs
        before the main loop reads the next command: a rate-limited job has copied its
        first chunk, a paused one sits at its pause point, when the command returns.
        The wait is bounded, since a job without a limit yields only at its end.

        ``drained``: the job starts inside its command's drained section (QEMU's
        ``transaction`` actions drain their node from prepare to clean), so it
        first pauses for that drain and runs again when it ends.
        """
        with self.mutex:
            self.threads = [t for t in self.threads if t.is_alive()]
            if drained:
                job.pause_count += 1  # its child_job joined a drained node
            job.yielded = False
            self.threads.append(job.start())
            self._until_yield(job)
            if not drained:
                self._exit_if_done(job)
        if drained:
            self.drained_end([job])

    def start_on_commit(self, tx: Transaction, job: Job) -> None:
        """Start ``job`` when ``tx`` commits, together with the other jobs the same
        transaction created (``transaction``'s commit callbacks start every job before
        the main loop runs any of them); then each runs to its first yield."""
        key = id(tx)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = []

            def go() -> None:
                jobs = self._batches.pop(key, [])
                with self.mutex:
                    self.threads = [t for t in self.threads if t.is_alive()]
                    for j in jobs:
                        # The action's drained section is still open: the job was created
                        # on a drained node, so it starts with the drain's pause
                        # (bdrv_parent_drained_begin_single of its new child_job), and
                        # job_start enters it at once: it runs to that pause before the
                        # next action's job starts.
                        j.pause_count += 1
                        j.yielded = False
                        self.threads.append(j.start())
                        self._until_yield(j)
                # ... and the actions' clean callbacks, last first, end those drains
                # (JOB_STATUS_CHANGE running of each, in that order)
                for j in reversed(jobs):
                    self.drained_end([j])

            def forget() -> None:
                self._batches.pop(key, None)

            tx.on_commit(go)
            tx.undo(forget)
        batch.append(job)

    def _until_yield(self, job: Job) -> None:
        """Let the entered job run to its next yield (mutex held; bounded wait)."""
        drain.until_yield(self, job)

    def _exit_if_done(self, job: Job) -> None:
        """A job whose ``run`` returned without reaching a sleep (nothing to copy: a
        stream or commit of length 0, a stream without backing) is completed before the
        command that let it run returns (bql and mutex held).

        In QEMU a non-coroutine QMP command runs in a bottom half and its reply is
        sent after the BHs it scheduled: ``job_exit``, scheduled when the coroutine
        returned without waiting for any I/O, finalises the job first (QSD sends
        ``concluded`` before the ``return`` of such a ``block-stream``). A job that
        reached ``job_sleep_ns`` (even for 0 ns) or waited for I/O yielded, and the
        reply goes out first.
        """
        if job.run_done and not job.slept and not job.exited:
            self._exit(job)

    # -- verbs ----------------------------------------------------------------------------
    def user_pause(self, job: Job) -> None:
        """``job_user_pause_locked``."""
        with self.mutex:
            apply_verb(job.id, job.status, JobVerb.PAUSE)
            if job.user_paused:
                raise BlockError("Job is already paused")
            job.user_paused = True
            job.pause_count += 1
            # job_pause_locked enters the job, so a sleeping job parks at once.
            if not job.paused and job.started and not job.run_done:
                job.yielded = False
                job.enter()
                self._until_yield(job)

    def user_resume(self, job: Job) -> None:
        """``job_user_resume_locked``: the 'not paused' check comes before the verb table."""
        with self.mutex:
            if not job.user_paused:
                raise BlockError("Can't resume a job that was not paused")
            apply_verb(job.id, job.status, JobVerb.RESUME)
            job.user_resume()
            job.user_paused = False
            job.pause_count -= 1
            if job.pause_count == 0 and job.paused:
                # The resumed coroutine runs before the main loop reads the next command.
                job.yielded = job.slept = False
                job.enter()
                self._until_yield(job)
                self._exit_if_done(job)
            else:
                job.enter()

    def user_cancel(self, job: Job, force: bool) -> None:
        """``job_user_cancel_locked`` → ``job_cancel_locked``."""
        with self.mutex:
            apply_verb(job.id, job.status, JobVerb.CANCEL)
        self.cancel(job, force)

    def cancel(self, job: Job, force: bool) -> None:
        """``job_cancel_locked``."""
        with self.mutex:
            if job.status is S.CONCLUDED:
                self._dismiss(job)
                return
            self._cancel_async(job, force)
            if not job.started:
                self._completed(job)
            elif job.deferred_to_main_loop:
                # a soft cancel of a job that is done was ignored: check again
                if job.is_cancelled:
                    self._txn_abort(job)
            else:
                job.enter()

    def _cancel_async(self, job: Job, force: bool) -> None:
        """``job_cancel_async_locked``: the driver may turn a soft cancel into a force one."""
        force = job.cancel_hook(force)
        if job.user_paused:
            job.user_resume()
            job.user_paused = False
            job.pause_count -= 1
        # A soft cancel of a job that is already done is ignored (a mirror that
        # finished must not count as cancelled); a force cancel always counts.
        if force or not job.deferred_to_main_loop:
            job.cancelled = True
            job.force_cancel |= force
        job.enter()

    def complete(self, job: Job) -> None:
        """``job_complete_locked``."""
        with self.mutex:
            apply_verb(job.id, job.status, JobVerb.COMPLETE)
            if job.cancelled or not job.can_complete:
                raise BlockError(f"The active block job '{job.id}' cannot be completed")
        job.complete()

    def finalize(self, job: Job) -> None:
        """``job_finalize_locked``: finalises the job's whole transaction."""
        with self.mutex:
            apply_verb(job.id, job.status, JobVerb.FINALIZE)
            self._do_finalize(job)

    def dismiss(self, job: Job) -> None:
        """``job_dismiss_locked``."""
        with self.mutex:
            apply_verb(job.id, job.status, JobVerb.DISMISS)
            self._dismiss(job)

    def set_speed(self, job: Job, speed: int) -> None:
        with self.mutex:
            job.set_speed(speed)

    # -- drained sections (txgraph.jobs.drain) ----------------------------------------
    def drained_begin(self, job_ids: set[str]) -> list[Job]:
        """Pause the jobs above a drain; see :func:`txgraph.jobs.drain.drained_begin`."""
        return drain.drained_begin(self, job_ids)

    def drained_end(self, jobs: list[Job]) -> None:
        """Resume them; see :func:`txgraph.jobs.drain.drained_end`."""
        drain.drained_end(self, jobs)

    # -- completion (bql held) ------------------------------------------------------------
    def exit_from_thread(self, job: Job) -> None:
        """``job_exit``, scheduled by the job's thread once ``run`` returned.

        Someone holding the bql may already have completed the job inline
        (``finish_sync``); then there is nothing left to do.
        """
        with self.bql, self.mutex:
            if not job.exited:
                self._exit(job)

    def run_pending_exits(self) -> None:
        """The main loop runs the ``job_exit`` bottom halves that are due before it
        dispatches the next QMP command: every job whose ``run`` has returned is
        completed now (bql held), instead of whenever its thread wins the bql, so the
        command sees the job as QEMU's would (pending, concluded or gone)."""
        with self.mutex:
            for job in list(self.jobs):
                if job.run_done and not job.exited:
                    self._exit(job)

    def _exit(self, job: Job) -> None:
        job.exited = True
        if not job.is_completed:
            self._completed(job)

    def _update_rc(self, job: Job) -> None:
        """``job_update_rc_locked``: a force-cancelled job fails with ECANCELED."""
        if not job.ret and job.is_cancelled:
            job.ret = -errno.ECANCELED
        if job.ret:
            if job.err is None:
                job.err = os.strerror(-job.ret)
            job.transition(S.ABORTING)

    def _completed(self, job: Job) -> None:
        """``job_completed_locked``."""
        self._update_rc(job)
        if job.ret:
            self._txn_abort(job)
        else:
            self._txn_success(job)

    def _txn_success(self, job: Job) -> None:
        """``job_completed_txn_success_locked``."""
        job.transition(S.WAITING)
        if any(not other.is_completed for other in job.txn.jobs):
            return
        for other in list(job.txn.jobs):
            other.transition(S.PENDING)
            if not other.auto_finalize:
                self.emit("BLOCK_JOB_PENDING", {"type": other.job_type, "id": other.id})
        if all(other.auto_finalize for other in job.txn.jobs):
            self._do_finalize(job)

    def _do_finalize(self, job: Job) -> None:
        """``job_do_finalize_locked``: prepare every member, then finalise each one."""
        failed = False
        for other in list(job.txn.jobs):
            if not self._hook(other, other.prepare):
                failed = True
                break
        if failed:
            self._txn_abort(job)
            return
        for other in list(job.txn.jobs):
            self._finalize_single(other)

    def _txn_abort(self, job: Job) -> None:
        """``job_completed_txn_abort_locked``: force-cancel the rest, finalise everyone."""
        txn = job.txn
        if txn.aborting:
            return
        txn.aborting = True
        for other in txn.jobs:
            if other is not job:
                self._cancel_async(other, True)
        while txn.jobs:
            other = txn.jobs[0]
            if not other.is_completed:
                self._finish_sync(other)
            self._finalize_single(other)

    def _finish_sync(self, job: Job) -> None:
        """``job_finish_sync_locked``: wait for ``run`` to return, then complete inline."""
        self._wait_run_done(job)
        if not job.exited:
            job.exited = True
            if not job.is_completed:
                self._update_rc(job)

    def _wait_run_done(self, job: Job) -> None:
        if job.started:
            while not job.run_done:
                job.enter()
                self.mutex.wait(0.1)

    def _finalize_single(self, job: Job) -> None:
        """``job_finalize_single_locked``."""
        self._update_rc(job)
        self._infallible_hook(job, job.commit if not job.ret else job.abort)
        self._infallible_hook(job, job.clean)
        if job.started:
            if job.is_cancelled:
                self.emit("BLOCK_JOB_CANCELLED", job.event_data())
            else:
                data = job.event_data()
                if job.ret and job.err is not None:
                    data["error"] = job.err
                self.emit("BLOCK_JOB_COMPLETED", data)
        if job in job.txn.jobs:
            job.txn.jobs.remove(job)
        job.transition(S.CONCLUDED)
        if job.auto_dismiss or not job.started:
            self._dismiss(job)

    def _dismiss(self, job: Job) -> None:
        """``job_do_dismiss_locked``: the job goes (and lets go of the graph)."""
        job.transition(S.NULL)
        if job in self.jobs:
            self.jobs.remove(job)
        # Dropping references only loosens the graph; it must not keep the job's
        # vertex or BlockBackends behind.
        self._infallible_hook(job, job.release)

    def _hook(self, job: Job, hook: Callable[[Session, Transaction], None]) -> bool:
        """A fallible hook (``.prepare``); see :func:`txgraph.jobs.hooks.run_hook`."""
        return hooks.run_hook(self.session, job, hook)

    #: attempts of a hook that cannot fail in QEMU before txgraph gives up on it
    INFALLIBLE_ATTEMPTS = hooks.INFALLIBLE_ATTEMPTS

    def _infallible_hook(self, job: Job, hook: Callable[[Session, Transaction], None]) -> None:
        """``commit`` / ``abort`` / ``clean`` / release; see
        :func:`txgraph.jobs.hooks.run_infallible_hook`."""
        hooks.run_infallible_hook(self.session, job, hook, self.INFALLIBLE_ATTEMPTS)

    # -- shutdown -------------------------------------------------------------------------
    def cancel_sync_all(self) -> None:
        """``job_cancel_sync_all`` at quit: force-cancel every job and finish it.

        The jobs are completed inline (their threads would need the bql this
        holds); the threads are joined after it is released.
        """
        with self.bql, self.mutex:
            for job in list(self.jobs):
                if job.status not in (S.CONCLUDED, S.NULL):
                    self.cancel(job, True)
            for job in list(self.jobs):
                self._wait_run_done(job)
                if job.run_done and not job.exited:
                    self._exit(job)
            self.closing = True
            self.mutex.notify_all()
        threads, self.threads = self.threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(_JOIN_DEADLINE)

    # -- queries --------------------------------------------------------------------------
    def query_jobs(self) -> list[dict[str, Any]]:
        with self.mutex:
            return [job.job_info() for job in self.jobs]

    def query_block_jobs(self) -> list[dict[str, Any]]:
        with self.mutex:
            return [job.block_job_info() for job in self.jobs]
