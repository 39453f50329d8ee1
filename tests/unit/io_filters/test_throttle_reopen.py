"""Throttle limits hold after ``blockdev-reopen`` (``throttle_reopen_prepare``/``_commit``).

No wall clock: whether a request would have to wait is read from the group's
own accounting (``compute_wait``), which the requests through the node fill.
"""

from __future__ import annotations

import pytest

from txgraph.errors import OpenError
from txgraph.io.runtime import Runtime

from . import memnode  # noqa: F401  (registers x-test-mem)


def _rt() -> Runtime:
    rt = Runtime()
    rt.throttle_groups.add("slow", {"iops-write": 1})
    rt.throttle_groups.add("other", {"iops-write": 1000})
    rt.open_node("m", "x-test-mem", {}, {}, False)
    rt.open_node("t", "throttle", {"throttle-group": "other"}, {"file": "m"}, False)
    return rt


def test_reopen_moves_the_node_to_the_new_group_and_its_limits() -> None:
    rt = _rt()
    slow = rt.throttle_groups.get("slow")
    assert slow is not None
    rt.reopen_node("t", {"throttle-group": "slow"}, False)
    node = rt.node("t")
    assert node.group is slow and "t" in slow.members
    assert "t" not in rt.throttle_groups.get("other").members  # type: ignore[union-attr]
    assert slow.compute_wait(True) == 0
    node.write(0, b"x")  # at 1 iops the next write would now have to wait
    assert slow.compute_wait(True) > 0


def test_reopen_keeping_the_group_keeps_the_limits() -> None:
    rt = _rt()
    other = rt.throttle_groups.get("other")
    rt.reopen_node("t", {"throttle-group": "other"}, True)
    assert rt.node("t").group is other and rt.node("t").read_only


def test_reopen_to_a_missing_group_changes_nothing() -> None:
    rt = _rt()
    before = rt.node("t").group
    with pytest.raises(OpenError) as err:
        rt.reopen_node("t", {"throttle-group": "nope"}, False)
    assert err.value.desc == "Throttle group 'nope' does not exist"
    assert rt.node("t").group is before
