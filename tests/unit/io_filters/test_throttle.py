"""Throttle groups (QEMU's util/throttle.c semantics) and the throttle filter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from txgraph.errors import BlockError, OpenError
from txgraph.io.runtime import Runtime, SetChild
from txgraph.io.throttle_groups import LeakyBucket, ThrottleGroup, ThrottleGroups, ThrottleLimits

from .memnode import MemNode  # noqa: F401  (registers x-test-mem)


@pytest.mark.parametrize(
    "limits, text",
    [
        ({"iops-total": -1}, "bps/iops/max values must be within [0, 1000000000000000]"),
        (
            {"iops-total": 10, "iops-read": 5},
            "bps/iops/max total values and read/write values cannot be used at the same time",
        ),
        ({"iops-total-max": 10}, "bps_max/iops_max require corresponding bps/iops values"),
        ({"iops-total": 10, "iops-total-max": 5}, "bps_max/iops_max cannot be lower than bps/iops"),
        ({"iops-total": 10, "iops-total-max-length": 5}, "burst length set without burst rate"),
        (
            {"iops-total": 10, "iops-total-max": 20, "iops-total-max-length": 0},
            "the burst length cannot be 0",
        ),
        ({"iops-size": 4096}, "iops size requires an iops value to be set"),
        (
            {"iops-total": 10, "iops-total-max": 10**14, "iops-total-max-length": 100},
            "burst length too high for this burst rate",
        ),
    ],
)
def test_limits_are_refused_with_qemu_texts(limits: dict[str, int], text: str) -> None:
    # Texts observed from qemu-storage-daemon 7.2 object-add.
    with pytest.raises(BlockError) as exc:
        ThrottleGroups().add("tg0", limits)
    assert exc.value.desc == text


def test_limits_round_trip_like_qom_get() -> None:
    lim = ThrottleLimits.from_qmp(
        {"iops-total": 10, "iops-total-max": 20, "iops-total-max-length": 10**9}
    )
    out = lim.to_qmp()
    assert out["iops-total"] == 10 and out["iops-total-max-length"] == 10**9
    assert out["bps-read-max-length"] == 1 and len(out) == 19


def test_registry_add_remove_in_use() -> None:
    groups = ThrottleGroups()
    groups.add("tg0", {"iops-total": 10})
    with pytest.raises(BlockError, match="attempt to add duplicate property 'tg0'"):
        groups.add("tg0", {})
    rt = Runtime(groups)
    rt.open_node("m", "x-test-mem", {}, {}, False)
    rt.open_node("t", "throttle", {"throttle-group": "tg0"}, {"file": "m"}, False)
    with pytest.raises(BlockError, match="object 'tg0' is in use, can not be deleted"):
        groups.remove("tg0")
    rt.close_node("t")
    groups.remove("tg0")
    with pytest.raises(BlockError, match="object 'tg0' not found"):
        groups.remove("tg0")
    with pytest.raises(OpenError, match="Throttle group 'tg0' does not exist"):
        rt.open_node("t", "throttle", {"throttle-group": "tg0"}, {"file": "m"}, False)


def test_bucket_without_burst_holds_a_tenth_of_a_second() -> None:
    b = LeakyBucket(100, 0, 1)
    b.add(10)  # exactly avg/10: still no wait
    assert b.wait() == 0
    b.add(5)
    assert b.wait() == pytest.approx(5 / 100)
    b.leak(0.05)
    assert b.wait() == 0 and b.level == pytest.approx(10)


def test_bucket_with_burst_enforces_max_rate_too() -> None:
    # avg 10/s, bursts of 100/s for 2 s: bucket holds 200, burst level holds 10.
    b = LeakyBucket(10, 100, 2)
    b.add(15)
    assert b.wait() == pytest.approx((15 - 10) / 100)  # burst level over max/10
    b.leak(0.05)
    assert b.wait() == 0
    b.add(300)
    assert b.wait() == pytest.approx((b.level - 200) / 10)


def test_iops_size_counts_large_requests_as_several_ops() -> None:
    now = [0.0]
    g = ThrottleGroup(
        "g", ThrottleLimits.from_qmp({"iops-total": 10, "iops-size": 4096}), clock=lambda: now[0]
    )
    g.account(False, 4096 * 8)
    # 8 ops against a bucket of 1: wait until 7 leaked at 10/s.
    assert g.compute_wait(False) == pytest.approx(0.7)
    now[0] += 0.7
    assert g.compute_wait(False) == 0


class _Clock:
    """The throttle groups' clock, advanced by the test: no assertion depends on wall time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


DEADLINE = 60.0


def _rt_with_throttle(limits: dict[str, int], clock: _Clock | None = None) -> Runtime:
    rt = Runtime(ThrottleGroups(clock) if clock is not None else None)
    rt.throttle_groups.add("tg", limits)
    rt.open_node("m", "x-test-mem", {}, {}, False)
    rt.open_node("t", "throttle", {"throttle-group": "tg"}, {"file": "m"}, False)
    return rt


def _waiting(rt: Runtime, is_write: bool = False) -> int:
    """Requests queued in group tg (the group's own queue; polled, with a deadline)."""
    group = rt.throttle_groups.get("tg")
    assert group is not None
    return len(group._queues[is_write])


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def _in_thread(fn: Callable[[], object]) -> threading.Thread:
    th = threading.Thread(target=fn, daemon=True)
    th.start()
    return th


def test_iops_limit_paces_requests() -> None:
    clock = _Clock()
    rt = _rt_with_throttle({"iops-total": 100}, clock)
    t = rt.node("t")
    # throttle_compute_wait: a request waits once the level exceeds the bucket (a tenth
    # of a second at 100/s, 10 ops), so eleven go at once and the twelfth waits 0.01 s
    for _ in range(11):
        t.read(0, 512)
    th = _in_thread(lambda: t.read(0, 512))
    _until(lambda: _waiting(rt) == 1, "the twelfth request waits in the group")
    assert th.is_alive()
    clock.now += 0.011  # just over one op leaks at 100/s
    rt.throttle_groups.get("tg").kick()  # type: ignore[union-attr]
    th.join(DEADLINE)
    assert not th.is_alive() and _waiting(rt) == 0


def test_group_is_shared_between_members() -> None:
    clock = _Clock()
    rt = _rt_with_throttle({"bps-write": 100_000}, clock)
    rt.open_node("m2", "x-test-mem", {}, {}, False)
    rt.open_node("t2", "throttle", {"throttle-group": "tg"}, {"file": "m2"}, False)
    rt.node("t").write(0, bytes(20_000))  # 10 kB over the bucket: the next write waits 0.1 s
    # the other member's write waits in the same group
    th = _in_thread(lambda: rt.node("t2").write(0, bytes(10_000)))
    _until(lambda: _waiting(rt, True) == 1, "t2's write waits behind t's")
    # reads are not limited by a write-only group, even while a write waits
    for _ in range(50):
        rt.node("t").read(0, 10_000)
    assert th.is_alive()
    clock.now += 0.11  # 11 kB leak at 100 kB/s: room for the waiting write
    rt.throttle_groups.get("tg").kick()  # type: ignore[union-attr]
    th.join(DEADLINE)
    assert not th.is_alive() and _waiting(rt, True) == 0


def test_drain_releases_throttled_requests() -> None:
    """``throttle_co_drain_begin``: a drain must not wait for the throttle schedule."""
    clock = _Clock()  # never advanced: without the release a waiting request waits forever
    rt = _rt_with_throttle({"iops-total": 2}, clock)
    done = threading.Event()

    def worker() -> None:
        for _ in range(5):
            with rt.request():
                rt.node("t").read(0, 512)
        done.set()

    rt.open_node("m2", "x-test-mem", {}, {}, False)
    th = _in_thread(worker)
    _until(lambda: _waiting(rt) == 1, "the worker's request waits in the group")
    swap = _in_thread(lambda: rt.apply([SetChild("t", "file", "m2")]))
    swap.join(DEADLINE)
    assert not swap.is_alive(), "the drain waited for the throttle schedule"
    # After the drain, limits apply again: the worker is being paced once more.
    _until(lambda: _waiting(rt) == 1, "the worker's next request waits again")
    assert not done.is_set()
    rt.throttle_groups.set_limits("tg", {})
    th.join(DEADLINE)
    assert done.is_set()
    assert done.is_set()
