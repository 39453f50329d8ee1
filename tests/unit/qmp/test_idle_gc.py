"""The QMP server's idle collector: cyclic garbage is still reclaimed, young and frozen alike."""

from __future__ import annotations

import gc
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
