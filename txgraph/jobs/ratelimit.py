"""QEMU's job rate limit: a quota per 100 ms slice (include/qemu/ratelimit.h).

``speed`` is bytes per second and 0 means unlimited. A slice of
``BLOCK_JOB_SLICE_TIME`` = 100 ms allows ``max(speed * 0.1 s, 1)`` bytes; bytes
are counted after they were dispatched, so one request may overshoot the
quota, and the next one then waits until ``dispatched / quota`` slices have
passed since the slice began (``ratelimit_calculate_delay``). 7.2 computes the
delay once, when the bytes are accounted (``block_job_ratelimit_get_delay``);
a job woken early does not sleep the rest (that came in 8.1).

Lock discipline: a :class:`RateLimit` belongs to one job and is used under
the job manager's lock (speed changes come from QMP, accounting from the job).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimit", "SLICE_NS"]

#: ``BLOCK_JOB_SLICE_TIME``
SLICE_NS = 100_000_000


class RateLimit:
    """``RateLimit``: per-slice quota accounting for one job."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self.speed = 0
        self._quota = 0.0
        self._start = 0
        self._end = 0
        self._dispatched = 0.0

    def set_speed(self, speed: int) -> None:
        """``ratelimit_set_speed``: 0 switches the limit off."""
        self.speed = speed
        self._quota = max(speed * SLICE_NS / 1_000_000_000, 1.0) if speed else 0.0

    def delay_ns(self, n: int) -> int:
        """``ratelimit_calculate_delay``: account ``n`` bytes; how long to wait before the next."""
        if not self._quota:
            return 0
        now = self._clock()
        if self._end < now:
            # The previous (possibly extended) slice is over: start a new one.
            self._start, self._end, self._dispatched = now, now + SLICE_NS, 0.0
        self._dispatched += n
        if self._dispatched < self._quota:
            return 0
        self._end = self._start + int(self._dispatched / self._quota * SLICE_NS)
        return max(0, self._end - now)
