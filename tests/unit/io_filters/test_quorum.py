"""quorum: voting reads, reports, thresholds (QEMU's block/quorum.c)."""

from __future__ import annotations

from typing import Any

import pytest

from txgraph.errors import IOFailure, OpenError
from txgraph.io.runtime import Runtime

from .memnode import MemNode


def _quorum(fills: list[int], **opts: Any) -> tuple[Runtime, list[tuple[str, dict[str, Any]]]]:
    rt = Runtime()
    events: list[tuple[str, dict[str, Any]]] = []
    rt.event_listeners.append(lambda name, data: events.append((name, data)))
    kids = {}
    for i, fill in enumerate(fills):
        rt.open_node(f"q{i}", "x-test-mem", {"fill": fill, "size": 65536}, {}, False)
        kids[f"children.{i}"] = f"q{i}"
    rt.open_node("quo", "quorum", {"vote-threshold": 2, **opts}, kids, False)
    return rt, events


def _mem(rt: Runtime, name: str) -> MemNode:
    node = rt.node(name)
    assert isinstance(node, MemNode)
    return node


@pytest.mark.parametrize(
    "n, opts, text",
    [
        (1, {"vote-threshold": 3}, "threshold may not exceed children count"),
        (1, {"vote-threshold": 0}, "Parameter 'vote-threshold' expects a value >= 1"),
        (0, {"vote-threshold": 1}, "Number of provided children must be 1 or more"),
        (
            3,
            {"vote-threshold": 2, "blkverify": True},
            "blkverify=on can only be set if there are exactly two files and vote-threshold is 2",
        ),
    ],
)
def test_open_errors(n: int, opts: dict[str, Any], text: str) -> None:
    rt = Runtime()
    for i in range(n):
        rt.open_node(f"q{i}", "x-test-mem", {}, {}, False)
    with pytest.raises(OpenError) as exc:
        rt.open_node("quo", "quorum", opts, {f"children.{i}": f"q{i}" for i in range(n)}, False)
    assert exc.value.desc == text


def test_rewrite_corrupted_with_fifo_is_accepted_as_in_qemu_7_2() -> None:
    # qemu-storage-daemon 7.2 accepts this combination (fifo reads never vote).
    rt = Runtime()
    for i in range(3):
        rt.open_node(f"q{i}", "x-test-mem", {}, {}, False)
    rt.open_node(
        "quo",
        "quorum",
        {"vote-threshold": 2, "rewrite-corrupted": True, "read-pattern": "fifo"},
        {f"children.{i}": f"q{i}" for i in range(3)},
        False,
    )
    assert rt.has_node("quo")


def test_majority_wins_and_the_odd_child_is_reported() -> None:
    rt, events = _quorum([7, 9, 7])
    assert rt.node("quo").read(1024, 1024) == bytes([7]) * 1024
    assert events == [
        (
            "QUORUM_REPORT_BAD",
            {"type": "read", "node-name": "q1", "sector-num": 2, "sectors-count": 2},
        )
    ]


def test_no_majority_is_a_quorum_failure() -> None:
    rt, events = _quorum([1, 2, 3])
    with pytest.raises(IOFailure) as exc:
        rt.node("quo").read(0, 512)
    assert exc.value.errno == 5
    assert events[-1] == (
        "QUORUM_FAILURE",
        {"reference": "quo", "sector-num": 0, "sectors-count": 1},
    )


def test_child_errors_are_reported_and_tolerated_down_to_the_threshold() -> None:
    rt, events = _quorum([4, 4, 4])
    _mem(rt, "q0").fail.add("read")
    assert rt.node("quo").read(0, 512) == bytes([4]) * 512
    assert events == [
        (
            "QUORUM_REPORT_BAD",
            {
                "type": "read",
                "node-name": "q0",
                "error": "Input/output error",
                "sector-num": 0,
                "sectors-count": 1,
            },
        )
    ]
    _mem(rt, "q1").fail.add("read")
    with pytest.raises(IOFailure):
        rt.node("quo").read(0, 512)


def test_rewrite_corrupted_repairs_the_loser() -> None:
    rt, _ = _quorum([5, 6, 5], **{"rewrite-corrupted": True})
    rt.node("quo").read(0, 4096)
    assert rt.node("q1").read(0, 4096) == bytes([5]) * 4096
    assert rt.node("q1").read(4096, 1) == b"\x06"


def test_fifo_reads_the_first_child_that_works() -> None:
    rt, events = _quorum([1, 2, 3], **{"read-pattern": "fifo"})
    assert rt.node("quo").read(0, 1) == b"\x01"
    _mem(rt, "q0").fail.add("read")
    assert rt.node("quo").read(0, 1) == b"\x02"
    assert events[0][1]["node-name"] == "q0"


def test_writes_go_everywhere_and_need_the_threshold() -> None:
    rt, events = _quorum([0, 0, 0])
    rt.node("quo").write(0, b"abc")
    assert all(rt.node(f"q{i}").read(0, 3) == b"abc" for i in range(3))
    _mem(rt, "q2").fail.add("write")
    rt.node("quo").write(0, b"xyz")
    assert events[-1][1] == {
        "type": "write",
        "node-name": "q2",
        "error": "Input/output error",
        "sector-num": 0,
        "sectors-count": 1,
    }
    _mem(rt, "q1").fail.add("write")
    with pytest.raises(IOFailure):
        rt.node("quo").write(0, b"123")


def test_children_edges_are_read_per_request() -> None:
    rt, _ = _quorum([1, 1, 2])
    rt.open_node("q9", "x-test-mem", {"fill": 2, "size": 65536}, {}, False)
    rt.set_child("quo", "children.1", "q9")  # now 2 votes for 0x02
    assert rt.node("quo").read(0, 1) == b"\x02"
