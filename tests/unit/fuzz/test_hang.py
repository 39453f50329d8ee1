"""A txgraph step that exceeds its deadline is a ``hang`` finding, with a reproducer.

The engine runs in the fuzzer's process, so a deadlock there would stop the
campaign; :mod:`txgraph.fuzz.deadline` interrupts the blocked step instead. The
step that blocks here is real: ``x-txgraph-wait-job`` with a long timeout on a
``block-stream`` rate-limited to 1 byte/s (one chunk, then a sleep longer than
the test), under a deadline lowered to a second.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from txgraph.fuzz import deadline as deadline_mod
from txgraph.fuzz.deadline import StepHang, deadline
from txgraph.fuzz.replay import replay
from txgraph.fuzz.repro import load_reproducer, write_reproducers
from txgraph.fuzz.run import run_sequence

STUCK = [
    {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "qcow2",
            "node-name": "n0",
            "file": {"driver": "file", "filename": "{dir}/b1.qcow2"},
        },
    },
    {"execute": "block-stream", "arguments": {"device": "n0", "job-id": "j0", "speed": 1}},
    {"execute": "x-txgraph-wait-job", "arguments": {"job": "j0", "event": "null", "timeout": 300}},
    {"execute": "query-jobs"},
]


def _fixed(steps: list[dict[str, Any]]) -> Any:
    return lambda i, _res: steps[i] if i < len(steps) else None


def test_deadline_interrupts_a_blocked_wait_and_then_stays_quiet() -> None:
    with pytest.raises(StepHang) as caught, deadline(0.2):
        threading.Event().wait(30)
    assert caught.value.seconds == 0.2
    with deadline(0.2):  # a block that ends in time: no signal comes later
        pass
    time.sleep(0.3)


def test_an_alarm_set_before_survives_the_deadlines() -> None:
    """pytest-timeout's own SIGALRM (or anyone's) is put back after a step."""
    import signal

    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 20.0)
    try:
        with deadline(5.0):
            pass
        left, _interval = signal.getitimer(signal.ITIMER_REAL)
        assert 15.0 < left <= 20.0  # re-armed with what was left of it
        assert signal.getsignal(signal.SIGALRM) is not None and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_step_past_its_deadline_is_a_hang_with_a_reproducer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deadline_mod, "ENGINE_DEADLINE", 1.0)
    result = run_sequence(_fixed(STUCK), "model")
    d = result.divergence
    assert d is not None and d.kind == "hang", result.divergence
    assert d.step == 2 and d.command == "x-txgraph-wait-job"
    assert d.lines[0] == "txgraph did not answer within 1 s (a hang)"
    assert "stuck in jobs/manager.py:wait_for" in d.lines  # where the engine blocked
    assert len(result.steps) == 3  # the run ended at the hang
    repro = write_reproducers(tmp_path, result.steps, d, "model")
    again = replay(load_reproducer(str(repro)), "txgraph")
    assert again.divergence is not None and again.divergence.signature == d.signature


def test_the_same_wait_within_its_deadline_is_no_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [dict(s) for s in STUCK]
    steps[2] = {
        "execute": "x-txgraph-wait-job",
        "arguments": {"job": "j0", "event": "null", "timeout": 0.2},
    }
    monkeypatch.setattr(deadline_mod, "ENGINE_DEADLINE", 5.0)
    result = run_sequence(_fixed(steps), "model")
    assert result.divergence is None
    assert "Timed out" in str(result.replies[2]["txgraph"]["error"]["desc"])
