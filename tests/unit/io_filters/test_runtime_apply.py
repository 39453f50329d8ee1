"""Runtime.apply: atomic deltas, rollback, generations."""

from __future__ import annotations

import threading
import time

import pytest

from txgraph.errors import OpenError
from txgraph.io.runtime import CloseNode, OpenNode, Runtime, SetChild, SetReadOnly

from .memnode import MemNode  # noqa: F401


def _rt() -> Runtime:
    rt = Runtime()
    rt.open_node("a", "x-test-mem", {"fill": 1}, {}, False)
    rt.open_node("b", "x-test-mem", {"fill": 2}, {}, False)
    rt.throttle_groups.add("tg", {})
    rt.open_node("top", "throttle", {"throttle-group": "tg"}, {"file": "a"}, False)
    return rt


def test_apply_moves_edges_and_bumps_generation() -> None:
    rt = _rt()
    g0 = rt.generation
    g1 = rt.apply(
        [
            OpenNode("f", "throttle", {"throttle-group": "tg"}, {"file": "b"}),
            SetChild("top", "file", "f"),
            SetReadOnly("a", True),
        ]
    )
    assert g1 == g0 + 1 and rt.node("top").read(0, 1) == b"\x02"
    assert rt.node("a").read_only


def test_failed_open_changes_nothing() -> None:
    rt = _rt()
    before, gen = rt.state(), rt.generation
    with pytest.raises(OpenError, match="Throttle group 'nope' does not exist"):
        rt.apply(
            [
                OpenNode("f", "throttle", {"throttle-group": "tg"}, {"file": "b"}),
                OpenNode("g", "throttle", {"throttle-group": "nope"}, {"file": "b"}),
                SetChild("top", "file", "f"),
            ]
        )
    assert rt.state() == before and rt.generation == gen
    assert rt.throttle_groups.get("tg").members == {"top"}  # type: ignore[union-attr]


def test_failed_edit_is_rolled_back() -> None:
    rt = _rt()
    before = rt.state()
    with pytest.raises(KeyError):
        rt.apply(
            [
                OpenNode("f", "throttle", {"throttle-group": "tg"}, {"file": "b"}),
                SetChild("top", "file", "f"),
                SetReadOnly("a", True),
                SetChild("top", "file", "missing"),
            ]
        )
    assert rt.state() == before and rt.node("top").read(0, 1) == b"\x01"


def test_close_node_in_delta_closes_after_resume() -> None:
    rt = _rt()
    rt.apply([SetChild("top", "file", "b"), CloseNode("a")])
    assert not rt.has_node("a") and rt.node("top").read(0, 1) == b"\x02"


def test_requests_wait_for_the_swap_and_see_the_new_graph() -> None:
    rt = _rt()
    seen: list[tuple[int, bytes]] = []
    with rt.drained():

        def reader() -> None:
            with rt.request() as gen:
                seen.append((gen, rt.node("top").read(0, 1)))

        th = threading.Thread(target=reader)
        th.start()
        deadline = time.monotonic() + 10
        while rt.parked_requests() < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert rt.parked_requests() == 1 and not seen  # held back by the drained section
        rt.apply([SetChild("top", "file", "b")])  # nested: the drain is re-entrant
    th.join(5)
    assert seen == [(rt.generation, b"\x02")]
    assert rt.request_generation() is None
