"""The QMP server's idle collector: cyclic garbage is still reclaimed, young and frozen
alike, and only once a pause lasts (or after enough commands without one)."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from txgraph.qmp.idle_gc import IdleCollector


class Node:
    __slots__ = ("me", "__weakref__")

    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _manual_gc() -> Iterator[None]:
    gc.disable()  # no automatic pass may free the cycles behind the test's back
    try:
        yield
    finally:
        gc.unfreeze()  # leave the process as other tests expect it
        gc.enable()


def test_idle_collects_young_cycles_and_waits_for_commands() -> None:
    collector = IdleCollector(min_commands=2)
    ref = weakref.ref(Node())
    collector.answered()
    collector.idle()  # one command only: nothing done yet
    assert ref() is not None
    collector.answered()
    collector.idle()
    assert ref() is None  # collected before the survivors were frozen
    assert gc.get_freeze_count() > 0


def test_frozen_cycles_are_reclaimed_once_the_frozen_set_doubles() -> None:
    collector = IdleCollector(min_commands=1)
    keep = [Node() for _ in range(10)]
    collector.answered()
    collector.idle()  # first pass: the baseline
    baseline = gc.get_freeze_count()
    ref = weakref.ref(keep[0])
    del keep  # frozen cycles, now garbage: no young pass can see them
    collector.answered()
    collector.idle()
    assert ref() is not None
    grow = [Node() for _ in range(baseline + 10)]  # more than double the frozen set
    collector.answered()
    collector.idle()  # the new objects are frozen, and the doubling runs the full pass
    assert ref() is None
    assert all(n.me is n for n in grow)  # live objects survive the full pass


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop()


def _run_timers(loop: asyncio.AbstractEventLoop, longer_than: float) -> None:
    """Run the loop until a timer due after every armed one fires (the loop's order)."""
    loop.run_until_complete(asyncio.sleep(longer_than))


def test_an_idle_moment_collects_only_once_the_pause_lasts() -> None:
    loop = _loop()
    try:
        collector = IdleCollector(min_commands=1, quiet_s=0.01)
        ref = weakref.ref(Node())
        collector.answered()
        collector.idle_moment(loop, lambda: True)
        assert ref() is not None  # nothing at once: the next command may be on its way
        _run_timers(loop, 0.05)
        assert ref() is None
    finally:
        loop.close()


def test_a_command_during_the_pause_puts_the_collection_after_it() -> None:
    loop = _loop()
    try:
        collector = IdleCollector(min_commands=1, quiet_s=0.01)
        ref = weakref.ref(Node())
        collector.answered()
        collector.idle_moment(loop, lambda: True)
        collector._last = time.monotonic() + 60  # as if a command were answered just now
        _run_timers(loop, 0.05)
        assert ref() is not None
        assert collector._timer is not None  # re-armed for the pause after that command
        collector._timer.cancel()
    finally:
        loop.close()


def test_input_pending_when_the_pause_ends_means_no_collection() -> None:
    loop = _loop()
    try:
        collector = IdleCollector(min_commands=1, quiet_s=0.01)
        ref = weakref.ref(Node())
        collector.answered()
        collector.idle_moment(loop, lambda: False)
        _run_timers(loop, 0.05)
        assert ref() is not None
    finally:
        loop.close()


def test_a_session_that_never_pauses_still_collects_after_max_commands() -> None:
    loop = _loop()
    try:
        collector = IdleCollector(min_commands=1, quiet_s=3600, max_commands=3)
        ref = weakref.ref(Node())
        for _ in range(2):
            collector.answered()
            collector.idle_moment(loop, lambda: True)
        assert ref() is not None
        collector.answered()
        collector.idle_moment(loop, lambda: True)
        assert ref() is None  # at once, without waiting an hour for a pause
        assert collector._timer is not None
        collector._timer.cancel()
    finally:
        loop.close()
