"""The one event channel: every QMP event, from any layer, to every subscriber, in order.

QEMU has a single path for events (``qapi_event_send_*`` → ``monitor_qapi_event_queue``
→ every QMP monitor): the block layer (``BLOCK_EXPORT_DELETED``), the data
plane (``QUORUM_REPORT_BAD``, ``QUORUM_FAILURE``) and jobs (``JOB_STATUS_CHANGE``,
``BLOCK_JOB_COMPLETED``...) all use it, and each event is stamped with the
wall-clock time when it is emitted (``qmp_event_build_dict``:
``{"timestamp": {"seconds", "microseconds"}, "event", "data"}``).
:class:`EventBus` is that path for txgraph: the Session owns one; the Runtime's
data-plane events feed it (``Runtime.event_listeners``), the ops layer emits
through ``Session.emit_event``, and the QMP engine subscribes every server to it.

Lock discipline
---------------
``_lock`` (re-entrant) guards the subscriber list and is held while an event
is stamped *and* delivered. Events come from the thread running QMP commands
and from NBD connection threads; holding the lock across delivery makes every
subscriber see the same total order, and timestamps never go backwards along
it (except for an event held by rate limiting, which keeps the time it was
emitted, as in QEMU). Subscribers therefore must be quick and must not block: the QMP server's
subscriber only hands the event to its event loop (``call_soon_threadsafe``).
A subscriber that emits from inside its callback (same thread) is delivered
re-entrantly instead of deadlocking.

Rate limiting
-------------
Guest-triggerable events are limited to one per second per key, as QEMU's
monitor does (``monitor_qapi_event_queue_no_reenter``,
``monitor_qapi_event_conf``; the key is the event name plus ``node-name`` for
``QUORUM_REPORT_BAD``): the first event of a quiet period goes out at once;
later ones within the period are held, and only the newest is delivered when
the period ends (with the timestamp it was emitted with), which starts a new
period. The timer runs on a scheduler (``threading.Timer`` by default, a
manual one in tests) and delivers under the same lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["EventBus", "Subscriber", "Scheduler", "qmp_event", "RATE_LIMITED"]

#: receives one complete QMP event message
Subscriber = Callable[[dict[str, Any]], None]
#: ``scheduler(delay_seconds, callback)``: run ``callback`` once after the delay
Scheduler = Callable[[float, Callable[[], None]], None]

#: ``monitor_qapi_event_conf``: events limited to one per period (seconds) per key
RATE_LIMITED: dict[str, float] = {
    "RTC_CHANGE": 1.0,
    "WATCHDOG": 1.0,
    "BALLOON_CHANGE": 1.0,
    "QUORUM_REPORT_BAD": 1.0,
    "QUORUM_FAILURE": 1.0,
    "VSERPORT_CHANGE": 1.0,
    "MEMORY_DEVICE_SIZE_CHANGE": 1.0,
}
#: ``qapi_event_throttle_hash``/``_equal``: the data member that splits the key
_KEY_MEMBER = {
    "VSERPORT_CHANGE": "id",
    "MEMORY_DEVICE_SIZE_CHANGE": "qom-path",
    "QUORUM_REPORT_BAD": "node-name",
}


def _timer(delay: float, callback: Callable[[], None]) -> None:
    timer = threading.Timer(delay, callback)
    timer.daemon = True  # a pending event never keeps the process alive
    timer.start()


def qmp_event(name: str, data: dict[str, Any] | None, now_ns: int) -> dict[str, Any]:
    """``qmp_event_build_dict``: the event message with QEMU's timestamp shape."""
    event: dict[str, Any] = {
        "timestamp": {
            "seconds": now_ns // 1_000_000_000,
            "microseconds": now_ns // 1_000 % 1_000_000,
        },
        "event": name,
    }
    if data is not None:
        event["data"] = data
    return event


class EventBus:
    """An ordered broadcast of QMP events (see the module docstring for the locking)."""

    def __init__(
        self, clock_ns: Callable[[], int] = time.time_ns, scheduler: Scheduler = _timer
    ) -> None:
        self._lock = threading.RLock()
        self._subscribers: list[Subscriber] = []
        self._clock_ns = clock_ns
        self._scheduler = scheduler
        self._last_ns = 0
        #: rate-limit periods in progress: key -> the held (newest) event, or None
        self._held: dict[tuple[str, Any], dict[str, Any] | None] = {}
        #: how many events were emitted (for tests and diagnostics)
        self.emitted = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove a subscriber; removing one that is not subscribed is a no-op."""
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def emit(self, name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stamp one event and deliver it to every subscriber (or hold it, if rate
        limited); return the message."""
        with self._lock:
            # Wall-clock time as QEMU uses, but never earlier than the previous event.
            now = max(self._clock_ns(), self._last_ns)
            self._last_ns = now
            event = qmp_event(name, data, now)
            self.emitted += 1
            period = RATE_LIMITED.get(name)
            if period is None:
                self._deliver(event)
                return event
            member = _KEY_MEMBER.get(name)
            key = (name, (data or {}).get(member) if member else None)
            if key in self._held:
                self._held[key] = event  # the newest wins when the period ends
            else:
                self._held[key] = None
                self._deliver(event)
                self._scheduler(period, lambda: self._period_end(key, period))
        return event

    def _period_end(self, key: tuple[str, Any], period: float) -> None:
        """``monitor_qapi_event_handler``: send the held event and start a new period."""
        with self._lock:
            event = self._held.get(key)
            if event is None:
                self._held.pop(key, None)
                return
            self._held[key] = None
            self._deliver(event)
            self._scheduler(period, lambda: self._period_end(key, period))

    def _deliver(self, event: dict[str, Any]) -> None:
        for subscriber in list(self._subscribers):
            subscriber(event)
