"""The all-or-nothing proof shared by every fault-injection test.

A fault is injected before each primitive step of an operation in turn
(``session.fail_next_at = k``); after every such failure the graph digest and
the data-plane state must equal those before the operation. This fails if a
step forgets to record its inverse, an inverse restores the wrong thing, or a
runtime change is not undone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from txgraph.ops.session import Session
from txgraph.ops.undo_log import InjectedFault

__all__ = ["assert_all_steps_atomic"]


def assert_all_steps_atomic(setup: Callable[[Session], None], op: Callable[[Session], Any],
                            *, check: bool = True) -> int:
    """Run ``op`` once to count its steps, then fail it at each; returns the step count."""
    probe = Session(name_seed=1, check=check)
    setup(probe)
    op(probe)
    steps = probe.last_steps
    probe.close()
    assert steps > 0
    for k in range(1, steps + 1):
        session = Session(name_seed=1, check=check)
        setup(session)
        digest, runtime = session.graph.digest(), session.runtime.state()
        session.fail_next_at = k
        with pytest.raises(InjectedFault):
            op(session)
        assert session.graph.digest() == digest, f"graph changed after a fault at step {k}"
        assert session.runtime.state() == runtime, f"runtime changed after a fault at step {k}"
        session.close()
    return steps
