"""The QMP server's idle collector: cyclic garbage is still reclaimed, young and frozen
alike, and only once a pause lasts (or after enough commands without one)."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from txgraph.qmp.engine import Engine
from txgraph.qmp.idle_gc import COLLECTOR, IdleCollector
from txgraph.qmp.server import QMPServer


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


def test_the_pause_must_last_quiet_s_after_the_last_command() -> None:
    collector = IdleCollector(min_commands=1, quiet_s=60)
    assert collector.pause_left() is None  # nothing answered: nothing worth collecting
    collector.answered()
    left = collector.pause_left()
    assert left is not None and 0 < left <= 60  # the next command may be on its way
    collector._last = time.monotonic() - 61  # the last command a minute ago
    assert collector.pause_left() == 0


def test_a_session_that_never_pauses_still_collects_after_max_commands() -> None:
    collector = IdleCollector(min_commands=1, quiet_s=3600, max_commands=3)
    for _ in range(2):
        collector.answered()
        assert collector.pause_left() not in (None, 0)
    collector.answered()
    assert collector.pause_left() == 0  # at once, without waiting an hour for a pause


def test_the_server_collects_only_once_its_pause_lasted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of commands arms the server's timer instead of collecting; when the timer
    finds the pause long enough it collects, once; a closed server leaves no timer."""
    monkeypatch.setattr(COLLECTOR, "quiet_s", 3600.0)
    monkeypatch.setattr(COLLECTOR, "min_commands", 2)
    collected: list[int] = []
    real_idle = COLLECTOR.idle
    monkeypatch.setattr(COLLECTOR, "idle", lambda: (collected.append(1), real_idle())[1])

    async def scenario() -> None:
        server = QMPServer(Engine())
        path = str(tmp_path / "q.sock")
        await server.start(path)
        reader, writer = await asyncio.open_unix_connection(path)
        await reader.readline()  # the greeting
        burst = b'{"execute": "qmp_capabilities"}' + b'{"execute": "query-version"}' * 8
        writer.write(burst)
        for _ in range(9):
            assert b"return" in await reader.readline()
        await asyncio.sleep(0)  # the turn in which the server sees its idle moment
        assert collected == [] and server._gc_timer is not None
        server._gc_timer.cancel()
        COLLECTOR._last = time.monotonic() - 7200  # as if the hour had passed quietly
        server._pause_over()
        assert collected == [1] and server._gc_timer is None
        writer.close()
        await server.close()
        assert server._gc_timer is None

    asyncio.run(scenario())
