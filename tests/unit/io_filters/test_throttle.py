"""Throttle groups (QEMU's util/throttle.c semantics) and the throttle filter."""

from __future__ import annotations

import threading
import time

import pytest

from txgraph.errors import BlockError, OpenError
from txgraph.io.runtime import Runtime, SetChild
from txgraph.io.throttle_groups import LeakyBucket, ThrottleGroup, ThrottleGroups, ThrottleLimits

from .memnode import MemNode  # noqa: F401  (registers x-test-mem)


@pytest.mark.parametrize("limits, text", [
    ({"iops-total": -1}, "bps/iops/max values must be within [0, 1000000000000000]"),
    ({"iops-total": 10, "iops-read": 5},
     "bps/iops/max total values and read/write values cannot be used at the same time"),
    ({"iops-total-max": 10}, "bps_max/iops_max require corresponding bps/iops values"),
    ({"iops-total": 10, "iops-total-max": 5}, "bps_max/iops_max cannot be lower than bps/iops"),
    ({"iops-total": 10, "iops-total-max-length": 5}, "burst length set without burst rate"),
    ({"iops-total": 10, "iops-total-max": 20, "iops-total-max-length": 0},
     "the burst length cannot be 0"),
    ({"iops-size": 4096}, "iops size requires an iops value to be set"),
    ({"iops-total": 10, "iops-total-max": 10**14, "iops-total-max-length": 100},
     "burst length too high for this burst rate"),
])
def test_limits_are_refused_with_qemu_texts(limits: dict[str, int], text: str) -> None:
    # Texts observed from qemu-storage-daemon 7.2 object-add.
    with pytest.raises(BlockError) as exc:
        ThrottleGroups().add("tg0", limits)
    assert exc.value.desc == text


def test_limits_round_trip_like_qom_get() -> None:
    lim = ThrottleLimits.from_qmp({"iops-total": 10, "iops-total-max": 20,
                                   "iops-total-max-length": 10**9})
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
    b.add(10)                       # exactly avg/10: still no wait
    assert b.wait() == 0
    b.add(5)
    assert b.wait() == pytest.approx(5 / 100)
    b.leak(0.05)
    assert b.wait() == 0 and b.level == pytest.approx(10)


def test_bucket_with_burst_enforces_max_rate_too() -> None:
    # avg 10/s, bursts of 100/s for 2 s: bucket holds 200, burst level holds 10.
    b = LeakyBucket(10, 100, 2)
    b.add(15)
    assert b.wait() == pytest.approx((15 - 10) / 100)    # burst level over max/10
    b.leak(0.05)
    assert b.wait() == 0
    b.add(300)
    assert b.wait() == pytest.approx((b.level - 200) / 10)


def test_iops_size_counts_large_requests_as_several_ops() -> None:
    now = [0.0]
    g = ThrottleGroup("g", ThrottleLimits.from_qmp({"iops-total": 10, "iops-size": 4096}),
                      clock=lambda: now[0])
    g.account(False, 4096 * 8)
    # 8 ops against a bucket of 1: wait until 7 leaked at 10/s.
    assert g.compute_wait(False) == pytest.approx(0.7)
    now[0] += 0.7
    assert g.compute_wait(False) == 0


def _rt_with_throttle(limits: dict[str, int]) -> Runtime:
    rt = Runtime()
    rt.throttle_groups.add("tg", limits)
    rt.open_node("m", "x-test-mem", {}, {}, False)
    rt.open_node("t", "throttle", {"throttle-group": "tg"}, {"file": "m"}, False)
    return rt


def test_iops_limit_paces_requests() -> None:
    rt = _rt_with_throttle({"iops-total": 100})
    t = rt.node("t")
    start = time.monotonic()
    for _ in range(40):
        t.read(0, 512)
    # 40 ops at 100/s with a bucket of 10: at least 0.3 s; leave slack for slow machines.
    assert time.monotonic() - start >= 0.28


def test_group_is_shared_between_members() -> None:
    rt = _rt_with_throttle({"bps-write": 100_000})
    rt.open_node("m2", "x-test-mem", {}, {}, False)
    rt.open_node("t2", "throttle", {"throttle-group": "tg"}, {"file": "m2"}, False)
    start = time.monotonic()
    for i in range(6):
        rt.node("t" if i % 2 else "t2").write(0, bytes(10_000))
    # 60 kB at 100 kB/s minus the 10 kB bucket: >= 0.4 s even though split over two nodes.
    assert time.monotonic() - start >= 0.38
    # reads are not limited by a write-only group
    start = time.monotonic()
    for _ in range(50):
        rt.node("t").read(0, 10_000)
    assert time.monotonic() - start < 0.2


def test_drain_releases_throttled_requests() -> None:
    """``throttle_co_drain_begin``: a drain must not wait for the throttle schedule."""
    rt = _rt_with_throttle({"iops-total": 2})
    done = threading.Event()

    def worker() -> None:
        for _ in range(5):
            with rt.request():
                rt.node("t").read(0, 512)
        done.set()

    th = threading.Thread(target=worker)
    th.start()
    time.sleep(0.05)
    start = time.monotonic()
    rt.open_node("m2", "x-test-mem", {}, {}, False)
    rt.apply([SetChild("t", "file", "m2")])
    assert time.monotonic() - start < 0.25       # without the release: ~0.45 s
    # After the drain, limits apply again: the worker is still being paced.
    assert not done.is_set()
    rt.throttle_groups.set_limits("tg", {})
    th.join(10)
    assert done.is_set()
