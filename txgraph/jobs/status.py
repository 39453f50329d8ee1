"""The generic job's state machine: QEMU's ``JobSTT`` and ``JobVerbTable`` (job.c).

Pure tables and checks, no threads: :mod:`txgraph.jobs.job` drives a job
through them. The tables are QEMU 7.2's, identical on master apart from the
``change`` verb of 8.2, which 7.2 does not have (reference/qemu-jobs.md §1.2-1.3).
"""

from __future__ import annotations

import enum

from txgraph.errors import BlockError

__all__ = ["JobStatus", "JobVerb", "TRANSITIONS", "VERBS", "check_transition", "apply_verb"]


class JobStatus(enum.StrEnum):
    """``JobStatus`` of qapi/job.json, in QEMU's order."""

    UNDEFINED = "undefined"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    READY = "ready"
    STANDBY = "standby"
    WAITING = "waiting"
    PENDING = "pending"
    ABORTING = "aborting"
    CONCLUDED = "concluded"
    NULL = "null"


class JobVerb(enum.StrEnum):
    """``JobVerb`` of qapi/job.json (7.2: no ``change``)."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    SET_SPEED = "set-speed"
    COMPLETE = "complete"
    FINALIZE = "finalize"
    DISMISS = "dismiss"


S = JobStatus

#: ``JobSTT``: the states each state may move to
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.UNDEFINED: frozenset({S.CREATED}),
    S.CREATED: frozenset({S.RUNNING, S.ABORTING, S.NULL}),
    S.RUNNING: frozenset({S.PAUSED, S.READY, S.WAITING, S.ABORTING}),
    S.PAUSED: frozenset({S.RUNNING}),
    S.READY: frozenset({S.STANDBY, S.WAITING, S.ABORTING}),
    S.STANDBY: frozenset({S.READY}),
    S.WAITING: frozenset({S.PENDING, S.ABORTING}),
    S.PENDING: frozenset({S.ABORTING, S.CONCLUDED}),
    S.ABORTING: frozenset({S.ABORTING, S.CONCLUDED}),
    S.CONCLUDED: frozenset({S.NULL}),
    S.NULL: frozenset(),
}

_LIVE = frozenset({S.CREATED, S.RUNNING, S.PAUSED, S.READY, S.STANDBY})

#: ``JobVerbTable``: the states in which each verb is accepted
VERBS: dict[JobVerb, frozenset[JobStatus]] = {
    JobVerb.CANCEL: _LIVE | {S.WAITING, S.PENDING},
    JobVerb.PAUSE: _LIVE,
    JobVerb.RESUME: _LIVE,
    JobVerb.SET_SPEED: _LIVE,
    JobVerb.COMPLETE: frozenset({S.READY, S.STANDBY}),
    JobVerb.FINALIZE: frozenset({S.PENDING}),
    JobVerb.DISMISS: frozenset({S.CONCLUDED}),
}


def check_transition(old: JobStatus, new: JobStatus) -> None:
    """``job_state_transition_locked``'s assertion: a move outside the table is a bug."""
    if new not in TRANSITIONS[old]:
        raise AssertionError(f"job state transition {old} -> {new} is not in JobSTT")


def apply_verb(job_id: str, status: JobStatus, verb: JobVerb) -> None:
    """``job_apply_verb_locked``: refuse a verb the job's state does not accept."""
    if status not in VERBS[verb]:
        raise BlockError(f"Job '{job_id}' in state '{status}' cannot accept command verb '{verb}'")
