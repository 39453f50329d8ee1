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
it. Subscribers therefore must be quick and must not block: the QMP server's
subscriber only hands the event to its event loop (``call_soon_threadsafe``).
A subscriber that emits from inside its callback (same thread) is delivered
re-entrantly instead of deadlocking.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["EventBus", "Subscriber", "qmp_event"]

#: receives one complete QMP event message
Subscriber = Callable[[dict[str, Any]], None]


def qmp_event(name: str, data: dict[str, Any] | None, now_ns: int) -> dict[str, Any]:
    """``qmp_event_build_dict``: the event message with QEMU's timestamp shape."""
    event: dict[str, Any] = {
        "timestamp": {"seconds": now_ns // 1_000_000_000,
                      "microseconds": now_ns // 1_000 % 1_000_000},
        "event": name,
    }
    if data is not None:
        event["data"] = data
    return event


class EventBus:
    """An ordered broadcast of QMP events (see the module docstring for the locking)."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._lock = threading.RLock()
        self._subscribers: list[Subscriber] = []
        self._clock_ns = clock_ns
        self._last_ns = 0
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
        """Stamp and deliver one event to every subscriber; return the message."""
        with self._lock:
            # Wall-clock time as QEMU uses, but never earlier than the previous event.
            now = max(self._clock_ns(), self._last_ns)
            self._last_ns = now
            event = qmp_event(name, data, now)
            self.emitted += 1
            for subscriber in list(self._subscribers):
                subscriber(event)
        return event
