"""The one event channel: shape, order under concurrent emitters, and its wiring.

Stress: many threads (as NBD connection threads are) emit at once while
subscribers come and go; every subscriber must see one and the same total
order, each event exactly once, with timestamps that never go backwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from txgraph.events import EventBus, qmp_event
from txgraph.qmp.command_table import CommandContext
from txgraph.qmp.engine import Engine


def test_event_shape_is_qemus() -> None:
    ev = qmp_event("X", {"a": 1}, 1_700_000_123_456_789_000)
    assert ev == {
        "timestamp": {"seconds": 1_700_000_123, "microseconds": 456_789},
        "event": "X",
        "data": {"a": 1},
    }
    assert "data" not in qmp_event("Y", None, 0)


def test_concurrent_emitters_one_total_order() -> None:
    bus = EventBus()
    seen: list[list[tuple[str, int]]] = [[], [], []]

    def recorder(log: list[tuple[str, int]]) -> Callable[[dict[str, Any]], None]:
        return lambda ev: log.append((ev["event"], ev["data"]["n"]))

    for log in seen:
        bus.subscribe(recorder(log))
    threads, per = 8, 300
    late: list[tuple[str, int]] = []
    barrier = threading.Barrier(threads + 1)

    def emitter(t: int) -> None:
        barrier.wait()
        for n in range(per):
            bus.emit(f"E{t}", {"n": n})

    workers = [threading.Thread(target=emitter, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    bus.subscribe(lambda ev: late.append((ev["event"], ev["data"]["n"])))  # joins mid-stream
    for w in workers:
        w.join(60)
        assert not w.is_alive()
    assert seen[0] == seen[1] == seen[2]
    assert len(seen[0]) == threads * per == bus.emitted
    assert len(set(seen[0])) == len(seen[0])
    for t in range(threads):  # each emitter's events stay in its own order
        assert [n for e, n in seen[0] if e == f"E{t}"] == list(range(per))
    # a late subscriber sees a suffix of the same order
    assert seen[0][len(seen[0]) - len(late) :] == late


def test_timestamps_never_go_backwards() -> None:
    clock = iter([5_000_000_000, 4_000_000_000, 6_000_000_000])
    bus = EventBus(clock_ns=lambda: next(clock))
    stamps = [bus.emit("E")["timestamp"]["seconds"] for _ in range(3)]
    assert stamps == [5, 5, 6]


def test_engine_and_session_share_the_channel() -> None:
    engine = Engine()
    got: list[dict[str, object]] = []
    engine.add_event_listener(got.append)
    session = engine.context.session
    session.emit_event("BLOCK_EXPORT_DELETED", {"id": "e"})
    session.runtime.emit("QUORUM_FAILURE", {"reference": "q", "sector-num": 0, "sectors-count": 1})
    engine.context.emit_event("X_TXGRAPH_REOPEN_WARNING", {"node": "n"})
    assert [e["event"] for e in got] == [
        "BLOCK_EXPORT_DELETED",
        "QUORUM_FAILURE",
        "X_TXGRAPH_REOPEN_WARNING",
    ]
    engine.remove_event_listener(got.append)
    session.emit_event("LATE")
    assert len(got) == 3


class _ManualTimers:
    """A scheduler the test fires by hand: no wall-clock waits, no timed assertions."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> None:
        self.pending.append((delay, callback))

    def fire(self) -> None:
        batch, self.pending = self.pending, []
        for _delay, callback in batch:
            callback()


def test_quorum_events_are_rate_limited_like_qemu() -> None:
    """``monitor_qapi_event_queue_no_reenter``: first at once, then the newest per period."""
    timers = _ManualTimers()
    bus = EventBus(scheduler=timers)
    got: list[tuple[str, Any]] = []
    bus.subscribe(lambda ev: got.append((ev["event"], ev.get("data"))))
    for n in range(3):
        bus.emit("QUORUM_REPORT_BAD", {"node-name": "c2", "sector-num": n})
    bus.emit("QUORUM_REPORT_BAD", {"node-name": "c1", "sector-num": 9})  # another key
    bus.emit("BLOCK_EXPORT_DELETED", {"id": "e"})  # not limited
    assert got == [
        ("QUORUM_REPORT_BAD", {"node-name": "c2", "sector-num": 0}),
        ("QUORUM_REPORT_BAD", {"node-name": "c1", "sector-num": 9}),
        ("BLOCK_EXPORT_DELETED", {"id": "e"}),
    ]
    assert [d for d, _cb in timers.pending] == [1.0, 1.0]
    timers.fire()  # the c2 period ends: its newest held event goes out, a new period starts
    assert got[3:] == [("QUORUM_REPORT_BAD", {"node-name": "c2", "sector-num": 2})]
    timers.fire()  # nothing held: the periods end
    timers.fire()
    assert len(got) == 4 and not timers.pending
    bus.emit("QUORUM_REPORT_BAD", {"node-name": "c2", "sector-num": 7})  # quiet again: at once
    assert got[4:] == [("QUORUM_REPORT_BAD", {"node-name": "c2", "sector-num": 7})]


def test_a_command_context_emits_into_the_session_bus_without_an_engine() -> None:
    """No channel is patched in: the context's emit_event is the session's bus."""
    ctx = CommandContext()
    got: list[dict[str, object]] = []
    ctx.session.events.subscribe(got.append)
    ctx.emit_event("X_TXGRAPH_REOPEN_WARNING", {"node": "n"})
    assert [e["event"] for e in got] == ["X_TXGRAPH_REOPEN_WARNING"]
    assert "emit_event" not in vars(ctx)
