"""The job state machine's tables against reference/qemu-jobs.md §1.2-1.3, and the rate limit."""

from __future__ import annotations

import pytest

from txgraph.errors import BlockError
from txgraph.jobs.ratelimit import SLICE_NS, RateLimit
from txgraph.jobs.status import TRANSITIONS, VERBS, JobStatus, JobVerb, apply_verb, check_transition

S = JobStatus

#: reference §1.2, row by row
STT = {
    "undefined": "created",
    "created": "running aborting null",
    "running": "paused ready waiting aborting",
    "paused": "running",
    "ready": "standby waiting aborting",
    "standby": "ready",
    "waiting": "pending aborting",
    "pending": "aborting concluded",
    "aborting": "aborting concluded",
    "concluded": "null",
    "null": "",
}
#: reference §1.3, verb by verb (7.2: no 'change')
VERB_TABLE = {
    "cancel": "created running paused ready standby waiting pending",
    "pause": "created running paused ready standby",
    "resume": "created running paused ready standby",
    "set-speed": "created running paused ready standby",
    "complete": "ready standby",
    "finalize": "pending",
    "dismiss": "concluded",
}


def test_transitions_are_qemus_table() -> None:
    assert {str(k): {str(v) for v in vs} for k, vs in TRANSITIONS.items()} == {
        k: set(v.split()) for k, v in STT.items()
    }


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_check_transition_refuses_what_the_table_lacks(old: JobStatus, new: JobStatus) -> None:
    if str(new) in STT[str(old)].split():
        check_transition(old, new)
    else:
        with pytest.raises(AssertionError):
            check_transition(old, new)


def test_verbs_are_qemus_table() -> None:
    assert {str(k): {str(v) for v in vs} for k, vs in VERBS.items()} == {
        k: set(v.split()) for k, v in VERB_TABLE.items()
    }


def test_verb_error_text() -> None:
    with pytest.raises(BlockError) as err:
        apply_verb("j", S.CONCLUDED, JobVerb.PAUSE)
    assert err.value.desc == "Job 'j' in state 'concluded' cannot accept command verb 'pause'"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


def test_rate_limit_quota_per_slice() -> None:
    clock = FakeClock()
    limit = RateLimit(clock)
    limit.set_speed(1024 * 1024)  # 104857.6 bytes per 100 ms slice
    assert limit.delay_ns(50_000) == 0
    # Over the quota: wait until dispatched/quota slices have passed since the slice began.
    delay = limit.delay_ns(200_000)
    assert delay == int(250_000 / (1024 * 1024 * 0.1) * SLICE_NS)
    clock.now += delay + 1
    assert limit.delay_ns(1) == 0  # a new slice


def test_rate_limit_off_and_minimum_quota() -> None:
    limit = RateLimit(FakeClock())
    assert limit.delay_ns(1 << 30) == 0  # speed 0: unlimited
    limit.set_speed(1)  # quota max(0.1, 1) = 1 byte per slice
    assert limit.delay_ns(512 * 1024) == 512 * 1024 * SLICE_NS
