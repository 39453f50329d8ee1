"""Waits that cannot end: skip the deadline, not the wait (``model`` campaigns).

Corpus mutations and refused commands leave waits behind that nothing will
satisfy: a drop mutation removes the ``block-job-set-speed`` a following
``x-txgraph-wait-job ... null`` depended on, a refused ``job-pause`` leaves the
wait for ``paused`` without a cause. Such a wait sits out its whole timeout
(10 s) and, in a model campaign, was most of the wall time.

:func:`stalled` says, from txgraph's job manager, that a job cannot change
state before a command moves it: it is paused by the user, pending
without auto-finalize, concluded without auto-dismiss, or gone. Nothing but the
runner sends commands, so while the runner waits, such a job stays as it is; a
wait for a status it has not reached then ends exactly as it would at its
deadline, only sooner: the runner gives ``x-txgraph-wait-job`` a deadline of
:data:`SHORT` (the engine still runs it and answers its own timeout error,
``Timed out after ...``), and a job wait step (:func:`txgraph.fuzz.waits.run_wait`)
stops waiting for events once the job stalled and every event already sent was
taken. A job that is running (rate-limited or not) is never taken as stalled.
"""

from __future__ import annotations

from typing import Any

from txgraph.jobs.manager import manager_of
from txgraph.jobs.status import JobStatus

__all__ = ["SHORT", "stalled", "wait_cannot_end"]

#: the deadline a wait that cannot end runs with (seconds)
SHORT = 0.01

S = JobStatus


def stalled(session: Any, job_id: object) -> bool:
    """Job ``job_id`` of ``session`` stays in its state until a command moves it
    (``job_user_pause``, ``pending`` without auto-finalize, ``concluded``
    without auto-dismiss), or no such job exists any more."""
    if session is None or not isinstance(job_id, str):
        return False
    manager = manager_of(session)
    with manager.mutex:
        job = manager.get(job_id)
        if job is None:
            return True
        status = job.status
        if job.cancelled:
            return False  # a cancel requested, not yet done, moves it
        if status in (S.PAUSED, S.STANDBY):
            return bool(job.user_paused)
        # READY is not taken as stalled: a job-complete may be on its way to the job
        if status is S.PENDING:
            return not job.auto_finalize
        if status is S.CONCLUDED:
            return not job.auto_dismiss
        return False


def wait_cannot_end(session: Any, args: dict[str, Any]) -> bool:
    """``x-txgraph-wait-job`` with ``args`` waits for a point its job has not reached
    and cannot reach without a command."""
    if session is None or session.jobs is None:
        return False
    job_id, point = args.get("job"), args.get("event")
    manager = manager_of(session)
    with manager.mutex:
        if not isinstance(job_id, str) or manager.get(job_id) is None:
            return False  # the engine answers at once (Job not found, or ended)
        if point in manager.milestones.get(job_id, set()):
            return False  # reached already: the engine answers at once
    return stalled(session, job_id)
