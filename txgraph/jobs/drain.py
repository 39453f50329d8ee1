"""Jobs and drained sections: ``child_job_drained_begin/_poll/_end`` (blockjob.c).

A graph change drains the nodes it touches, and QEMU's drain travels up to
every parent, a job's ``child_job`` among them: the job gets one more pause
(``job_pause_locked``), the drain polls until it sits at its pause point, and
``bdrv_drained_end`` takes that pause back (``job_resume_locked``). These
functions do the same for the jobs of one :class:`~txgraph.jobs.manager.JobManager`.

Owner and lock discipline
-------------------------
Owned by the session's :class:`JobManager`; its methods ``drained_begin`` and
``drained_end`` are the only callers. Both are called by the session with
the bql held (before and after ``Runtime.apply``) and take ``manager.mutex``
themselves (bql before mutex, as everywhere in :mod:`txgraph.jobs`); the
per-job fields they touch (``pause_count``, ``paused``, ``yielded``) are
guarded by that mutex. The waits release the mutex (Condition.wait) so the
job threads can reach their pause points; each wait has a deadline.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from txgraph.jobs.job import Job
    from txgraph.jobs.manager import JobManager

__all__ = ["DRAIN_PAUSE_DEADLINE", "drained_begin", "drained_end", "until_yield"]

log = logging.getLogger(__name__)

#: how long a drain waits for a job to reach its pause point before going on without it
DRAIN_PAUSE_DEADLINE = 10.0
#: how long a starting or resumed job may run before the command that woke it returns
FIRST_YIELD_DEADLINE = 1.0


def until_yield(manager: JobManager, job: Job) -> None:
    """Let the entered job run to its next yield (``manager.mutex`` held; bounded wait),
    as QEMU's coroutine runs before the main loop reads the next command."""
    deadline = time.monotonic() + FIRST_YIELD_DEADLINE
    while not job.yielded:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        manager.mutex.wait(left)


def drained_begin(manager: JobManager, job_ids: set[str]) -> list[Job]:
    """``child_job_drained_begin`` + ``child_job_drained_poll`` for the jobs above a drain.

    Each running job gets one more pause (``job_pause_locked``) and is kicked
    out of a sleep; the drain then waits until it sits at its pause point
    (JOB_STATUS_CHANGE ``paused``, or ``standby`` when ready) -- a job's
    in-flight chunk finishes first, since the data plane is not drained yet.
    A job that already paused (by the user, or on an error) just counts
    one more pause. Returns the jobs to hand to :func:`drained_end`.
    """
    paused: list[Job] = []
    with manager.mutex:
        for job in manager.jobs:
            if job.id not in job_ids or not job.started or job.run_done or job.simulated:
                continue
            job.pause_count += 1
            paused.append(job)
            if not job.paused:
                job.enter()
        deadline = time.monotonic() + DRAIN_PAUSE_DEADLINE
        for job in paused:
            while not (job.paused or job.run_done or job.is_cancelled or manager.closing):
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("block job %r did not pause for a drain in time", job.id)
                    break
                manager.mutex.wait(min(left, 0.05))
    return paused


def drained_end(manager: JobManager, jobs: list[Job]) -> None:
    """``child_job_drained_end`` → ``job_resume_locked``: the drain's pause goes; a job
    with no pause left runs again before the command returns (JOB_STATUS_CHANGE
    ``running`` / ``ready``), and a rate-limited one copies its next chunk at once."""
    with manager.mutex:
        resumed = []
        for job in jobs:
            job.pause_count -= 1
            if job.pause_count <= 0 and job.paused:
                if job.speed:
                    job.yielded = False
                job.enter()
                resumed.append(job)
        deadline = time.monotonic() + DRAIN_PAUSE_DEADLINE
        for job in resumed:
            # A rate-limited job runs on to its next sleep (one chunk at most) or its
            # end, as QEMU's resumed coroutine does before the command goes on; a job
            # without a limit only has to be running again.
            while (job.paused or (job.speed and not job.yielded)) and not (
                job.run_done or manager.closing
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                manager.mutex.wait(min(left, 0.05))
