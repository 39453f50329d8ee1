"""Adaptive polling for the QMP server's event loop (QEMU's ``poll-max-ns``).

A client that sends its next command right after reading a reply finds the
server asleep in ``epoll_wait``; on this class of machine (a shared 2-vCPU
VM) the wake-up from there costs tens of microseconds, more than most
commands take, and the sleeping CPU loses its caches on the way. QEMU's
IOThreads meet the same cost with adaptive polling (``aio_poll`` with an
AioContext's ``poll-max-ns``, ``poll-grow``, ``poll-shrink``): before
blocking, check the handlers for a while without sleeping, and learn from
each wait how long that while should be. :class:`PollingSelector` does the
same for an asyncio loop:

- a blocking ``select`` first polls with a zero timeout for up to
  :attr:`~PollingSelector.poll_ns` (never past the loop's own timeout, so a
  timer due sooner fires on time), and only then blocks;
- after each wait, the window adapts as QEMU's ``adjust_polling_time`` does:
  a wait that ended inside the window leaves it alone; one longer than
  ``poll_max_ns`` resets it to 0 (QEMU's default ``poll-shrink`` of 0); one in
  between doubles it (QEMU's default ``poll-grow``), starting at 4 µs, up to
  ``poll_max_ns``.

So a server whose clients pause between commands never spins (every wait is
longer than the maximum, the window stays 0), and one answering back-to-back
commands spins at most ``poll_max_ns`` per wait. ``poll_max_ns = 0`` turns
polling off (QEMU's ``poll-max-ns=0``).

Owner: the event-loop thread that runs the loop built on it; the window is
only read and written inside :meth:`PollingSelector.select`, which only that
thread calls. The zero-timeout ``epoll_wait`` calls release the GIL like any
other, so job threads keep running while the loop polls.
"""

from __future__ import annotations

import asyncio
import selectors
import time

__all__ = ["DEFAULT_POLL_MAX_NS", "POLL_START_NS", "PollingSelector", "polling_loop"]

#: the first window after a wait that polling would have caught (QEMU starts at 4 µs)
POLL_START_NS = 4_000
#: ``txgraph serve``'s default maximum window. QEMU's IOThread default is 32 µs;
#: a QMP client's turnaround on a loaded 2-vCPU machine is often longer, so a
#: longer window catches it (``tools/qmp_polling.py`` measures both).
DEFAULT_POLL_MAX_NS = 100_000


class PollingSelector(selectors.EpollSelector):
    """An epoll selector that polls before it blocks; see the module docstring."""

    def __init__(self, poll_max_ns: int = DEFAULT_POLL_MAX_NS) -> None:
        super().__init__()
        if poll_max_ns < 0:
            raise ValueError("poll_max_ns must not be negative")
        self.poll_max_ns = poll_max_ns
        #: the current window (adapted after every blocking wait)
        self.poll_ns = 0
        #: waits that polling caught / that blocked (for tests and tools)
        self.polled = 0
        self.blocked = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """``epoll_wait``, first polled for up to :attr:`poll_ns` when it would block."""
        if (timeout is not None and timeout <= 0) or self.poll_max_ns == 0:
            return super().select(timeout)
        start = time.perf_counter_ns()
        window = self.poll_ns
        if timeout is not None:
            window = min(window, int(timeout * 1e9))
        if window:
            end = start + window
            while True:
                ready = super().select(0)
                if ready:
                    self.polled += 1
                    return ready  # inside the window: the window stays as it is
                if time.perf_counter_ns() >= end:
                    break
        if timeout is not None:
            timeout = max(0.0, timeout - (time.perf_counter_ns() - start) / 1e9)
        ready = super().select(timeout)
        self.blocked += 1
        self._adapt(time.perf_counter_ns() - start)
        return ready

    def _adapt(self, waited_ns: int) -> None:
        """QEMU's ``adjust_polling_time`` with its default grow (2) and shrink (reset)."""
        if waited_ns <= self.poll_ns:
            return
        if waited_ns > self.poll_max_ns:
            self.poll_ns = 0
        elif self.poll_ns < self.poll_max_ns:
            self.poll_ns = min(self.poll_max_ns, self.poll_ns * 2 or POLL_START_NS)


def polling_loop(poll_max_ns: int = DEFAULT_POLL_MAX_NS) -> asyncio.AbstractEventLoop:
    """A selector event loop that polls adaptively (``asyncio.Runner``'s loop factory)."""
    return asyncio.SelectorEventLoop(PollingSelector(poll_max_ns))
