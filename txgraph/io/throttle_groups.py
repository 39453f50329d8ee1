"""Throttle groups: QEMU's ``throttle-group`` objects and their leaky buckets.

A group holds one set of limits (``ThrottleLimits`` in qapi/block-core.json)
shared by every ``throttle`` node that names it. The accounting reproduces
QEMU's util/throttle.c:

* six buckets (bps/iops x total/read/write); each has an average rate
  ``avg``, an optional burst rate ``max`` and a burst length in seconds;
* ``throttle_leak_bucket``: a bucket's level drains at ``avg`` units per
  second; when bursts last longer than one second a second level drains at
  ``max`` so that the burst rate is enforced too;
* ``throttle_compute_wait``: without ``max`` a bucket may hold ``avg/10``
  units before a request must wait; with it, ``max * burst_length`` (and the
  burst level may hold ``max/10``); the wait is the excess divided by the rate;
* ``throttle_account``: after the decision a request adds its bytes to the bps
  buckets and its operation count (``size / iops-size`` when larger than
  ``iops-size``) to the iops buckets of its direction and of ``total``;
* the check happens before accounting, so one big request is never refused,
  it only delays the ones that follow (as in QEMU).

Fairness differs in form, not in effect, from ``throttle_group_co_io_limits_intercept``:
QEMU round-robins between group members; here requests of one direction wait
in one FIFO shared by the whole group, which serves them in arrival order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any

from txgraph.errors import BlockError

__all__ = [
    "ThrottleLimits",
    "LeakyBucket",
    "ThrottleGroup",
    "ThrottleGroups",
    "using_groups",
    "current_groups",
    "THROTTLE_VALUE_MAX",
]

#: Upper bound of every rate and burst (QEMU's ``THROTTLE_VALUE_MAX``).
THROTTLE_VALUE_MAX = 1_000_000_000_000_000

_KINDS = ("bps", "iops")
_DIRS = ("total", "read", "write")


@dataclass(frozen=True)
class ThrottleLimits:
    """The QMP ``ThrottleLimits`` struct; zero means "no limit"."""

    iops_total: int = 0
    iops_total_max: int = 0
    iops_total_max_length: int = 1
    iops_read: int = 0
    iops_read_max: int = 0
    iops_read_max_length: int = 1
    iops_write: int = 0
    iops_write_max: int = 0
    iops_write_max_length: int = 1
    bps_total: int = 0
    bps_total_max: int = 0
    bps_total_max_length: int = 1
    bps_read: int = 0
    bps_read_max: int = 0
    bps_read_max_length: int = 1
    bps_write: int = 0
    bps_write_max: int = 0
    bps_write_max_length: int = 1
    iops_size: int = 0

    @classmethod
    def from_qmp(cls, limits: Mapping[str, Any] | None) -> ThrottleLimits:
        """Parse and validate the QMP dict (``throttle_is_valid``); raise BlockError."""
        known = {f.name.replace("_", "-"): f.name for f in fields(cls)}
        kwargs: dict[str, int] = {}
        for key, value in (limits or {}).items():
            if key not in known:
                raise BlockError(f"Parameter '{key}' is unexpected")
            kwargs[known[key]] = int(value)
        lim = cls(**kwargs)
        lim.validate()
        return lim

    def to_qmp(self) -> dict[str, int]:
        """The dict ``qom-get path=<group> property=limits`` answers."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def bucket(self, kind: str, direction: str) -> tuple[int, int, int]:
        """``(avg, max, burst_length)`` of one bucket."""
        base = f"{kind}_{direction}"
        return (
            getattr(self, base),
            getattr(self, f"{base}_max"),
            getattr(self, f"{base}_max_length"),
        )

    def validate(self) -> None:
        """Refuse what QEMU's ``throttle_is_valid`` refuses, with its texts."""
        for kind in _KINDS:
            total = any(self.bucket(kind, "total")[:2])
            rw = any(self.bucket(kind, "read")[:2]) or any(self.bucket(kind, "write")[:2])
            if total and rw:
                raise BlockError(
                    "bps/iops/max total values and read/write values cannot be "
                    "used at the same time"
                )
        if self.iops_size and not any(self.bucket("iops", d)[0] for d in _DIRS):
            raise BlockError("iops size requires an iops value to be set")
        for kind in _KINDS:
            for d in _DIRS:
                avg, mx, length = self.bucket(kind, d)
                if not (0 <= avg <= THROTTLE_VALUE_MAX and 0 <= mx <= THROTTLE_VALUE_MAX):
                    raise BlockError(
                        f"bps/iops/max values must be within [0, {THROTTLE_VALUE_MAX}]"
                    )
                if length == 0:
                    raise BlockError("the burst length cannot be 0")
                if length > 1 and not mx:
                    raise BlockError("burst length set without burst rate")
                if mx and length > THROTTLE_VALUE_MAX // mx:
                    raise BlockError("burst length too high for this burst rate")
                if mx and not avg:
                    raise BlockError("bps_max/iops_max require corresponding bps/iops values")
                if mx and mx < avg:
                    raise BlockError("bps_max/iops_max cannot be lower than bps/iops")

    def enabled(self) -> bool:
        return any(self.bucket(k, d)[0] for k in _KINDS for d in _DIRS)


class LeakyBucket:
    """One bucket of QEMU's ``LeakyBucket``: levels in bytes or operations."""

    __slots__ = ("avg", "max", "burst_length", "level", "burst_level")

    def __init__(self, avg: int, mx: int, burst_length: int) -> None:
        self.avg = float(avg)
        self.max = float(mx)
        self.burst_length = burst_length
        self.level = 0.0
        self.burst_level = 0.0

    def leak(self, seconds: float) -> None:
        """``throttle_leak_bucket``."""
        self.level = max(self.level - self.avg * seconds, 0.0)
        if self.burst_length > 1:
            self.burst_level = max(self.burst_level - self.max * seconds, 0.0)

    def wait(self) -> float:
        """``throttle_compute_wait``: seconds until the bucket accepts a request."""
        if not self.avg:
            return 0.0
        if not self.max:
            size, burst_size = self.avg / 10, 0.0
        else:
            size, burst_size = self.max * self.burst_length, self.max / 10
        if self.level > size:
            return (self.level - size) / self.avg
        if self.burst_length > 1 and self.burst_level > burst_size:
            return (self.burst_level - burst_size) / self.max
        return 0.0

    def add(self, units: float) -> None:
        if not self.avg:
            return
        self.level += units
        if self.burst_length > 1:
            self.burst_level += units


class ThrottleGroup:
    """Limits plus the shared bucket state and wait queues of one throttle-group object."""

    def __init__(
        self, group_id: str, limits: ThrottleLimits, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.id = group_id
        self.members: set[str] = set()
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: dict[bool, deque[object]] = {False: deque(), True: deque()}
        self.set_limits(limits)

    def set_limits(self, limits: ThrottleLimits) -> None:
        """Install new limits (``qom-set limits``); levels restart from empty like QEMU's."""
        with self._cond:
            self.limits = limits
            self._buckets = {
                (k, d): LeakyBucket(*limits.bucket(k, d)) for k in _KINDS for d in _DIRS
            }
            self._last_leak = self._clock()
            self._cond.notify_all()

    def _relevant(self, is_write: bool) -> list[LeakyBucket]:
        d = "write" if is_write else "read"
        b = self._buckets
        return [b["bps", "total"], b["bps", d], b["iops", "total"], b["iops", d]]

    def _leak(self) -> None:
        now = self._clock()
        delta = now - self._last_leak
        if delta > 0:
            self._last_leak = now
            for bkt in self._buckets.values():
                bkt.leak(delta)

    def compute_wait(self, is_write: bool) -> float:
        """``throttle_schedule_timer`` minus the timer: leak, then the longest wait."""
        with self._cond:
            self._leak()
            return max(b.wait() for b in self._relevant(is_write))

    def account(self, is_write: bool, size: int) -> None:
        """``throttle_account``."""
        with self._cond:
            self._account(is_write, size)

    def _account(self, is_write: bool, size: int) -> None:
        iops_size = self.limits.iops_size
        units = size / iops_size if iops_size and size > iops_size else 1.0
        bps_t, bps_d, ops_t, ops_d = self._relevant(is_write)
        bps_t.add(size)
        bps_d.add(size)
        ops_t.add(units)
        ops_d.add(units)

    def intercept(self, is_write: bool, size: int, released: Callable[[], bool]) -> None:
        """Block the calling request until the group lets it through, then account it.

        ``released()`` true means the member is drained (QEMU's
        ``io_limits_disabled``): the request goes at once and is not accounted.
        """
        ticket = object()
        with self._cond:
            queue = self._queues[is_write]
            queue.append(ticket)
            try:
                while True:
                    if released():
                        return
                    if queue[0] is ticket:
                        self._leak()
                        wait = max(b.wait() for b in self._relevant(is_write))
                        if wait <= 0:
                            self._account(is_write, size)
                            return
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            finally:
                queue.remove(ticket)
                self._cond.notify_all()

    def waiting(self) -> int:
        """How many requests wait in the group's queues right now."""
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def kick(self) -> None:
        """Wake every waiter so it re-checks (a member was drained or limits changed)."""
        with self._cond:
            self._cond.notify_all()


class ThrottleGroups:
    """The registry of throttle-group objects by id (QOM's ``/objects`` container)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._groups: dict[str, ThrottleGroup] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def add(
        self, group_id: str, limits: Mapping[str, Any] | ThrottleLimits | None = None
    ) -> ThrottleGroup:
        """``object-add qom-type=throttle-group id=... limits={...}``."""
        lim = limits if isinstance(limits, ThrottleLimits) else ThrottleLimits.from_qmp(limits)
        with self._lock:
            if group_id in self._groups:
                raise BlockError(
                    f"attempt to add duplicate property '{group_id}' to object (type 'container')"
                )
            group = ThrottleGroup(group_id, lim, self._clock)
            self._groups[group_id] = group
            return group

    def validate(self, limits: Mapping[str, Any] | None) -> None:
        """Refuse limits QEMU's ``throttle_group_set_limits`` would refuse (raises BlockError)."""
        ThrottleLimits.from_qmp(limits)

    def remove(self, group_id: str) -> None:
        """``object-del``: refused while a throttle node still uses the group."""
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                raise BlockError(f"object '{group_id}' not found")
            if group.members:
                raise BlockError(f"object '{group_id}' is in use, can not be deleted")
            del self._groups[group_id]

    def get(self, group_id: str) -> ThrottleGroup | None:
        return self._groups.get(group_id)

    def set_limits(self, group_id: str, limits: Mapping[str, Any]) -> None:
        """``qom-set path=<id> property=limits``."""
        group = self._groups.get(group_id)
        if group is None:
            raise BlockError(f"object '{group_id}' not found")
        group.set_limits(ThrottleLimits.from_qmp(limits))

    def ids(self) -> list[str]:
        return sorted(self._groups)


# The registry a driver being opened should use; the Runtime sets it around
# construction because the driver constructor signature carries no context.
_CURRENT: ContextVar[ThrottleGroups | None] = ContextVar("txgraph_throttle_groups", default=None)
_DEFAULT = ThrottleGroups()


@contextmanager
def using_groups(groups: ThrottleGroups) -> Iterator[None]:
    token = _CURRENT.set(groups)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_groups() -> ThrottleGroups:
    """The registry of the Runtime opening a node, or a process-wide default."""
    return _CURRENT.get() or _DEFAULT
