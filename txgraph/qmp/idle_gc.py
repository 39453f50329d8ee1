"""Cyclic garbage collection between QMP commands, not inside them.

CPython's collector runs when allocation counts cross its thresholds, so a
full pass over every live object lands inside whichever command crosses it:
measured in a 20-step transaction on a 10k-node graph, one pass cost 87 ms of
a 165 ms command (QEMU has no such pause: it frees by reference counts).
:class:`IdleCollector` moves that work to the moments the server has nothing
to do: after a burst of commands, once no client has input pending, it
collects what the commands left (only objects allocated since the last such
moment: cheap) and freezes the survivors (``gc.freeze``), so later automatic
passes walk only new objects. Frozen objects that later become cyclic garbage
(a deleted node's cycles) are reclaimed by a full pass (unfreeze, collect,
freeze) once the frozen population has doubled since the last full pass:
memory stays within twice the live set, and the full pass's cost is
amortised O(1) per object and paid while idle.

An idle moment is a pause, not a gap between two commands: the server asks
with :meth:`IdleCollector.idle_moment` each time no client has input
pending, and the collector waits :data:`QUIET_S` more without a command
before it collects. A client that sends its next command right after a reply
(a burst, or a script that waits for each reply) would otherwise find the
server collecting what the previous commands left: measured, 7 ms of
collection right after the setup burst of ``txgraph bench txn`` landed in
front of its timed transaction. Only a session that never pauses collects
without one, once :data:`MAX_COMMANDS` commands have piled up, so its garbage
stays bounded as before.

Owner: the event-loop thread of the QMP servers (one collector per process,
:data:`COLLECTOR`); nothing else calls it. ``gc`` itself is process-wide and
safe to call under the GIL while job threads run.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

__all__ = ["IdleCollector", "COLLECTOR"]

#: commands answered since the last collection before an idle moment collects
MIN_COMMANDS = 8
#: how long the server must have answered nothing before a collection starts
QUIET_S = 0.002
#: commands after which an idle moment collects at once, pause or not
MAX_COMMANDS = 1024


class IdleCollector:
    """See the module docstring."""

    def __init__(
        self,
        min_commands: int = MIN_COMMANDS,
        quiet_s: float = QUIET_S,
        max_commands: int = MAX_COMMANDS,
    ) -> None:
        self.min_commands = min_commands
        self.quiet_s = quiet_s
        self.max_commands = max_commands
        self._commands = 0
        #: when the last command was answered (``time.monotonic``, the loop's clock)
        self._last = 0.0
        #: the pending quiet check, at most one
        self._timer: asyncio.TimerHandle | None = None
        #: objects frozen so far (counted as they are frozen: ``gc.get_freeze_count``
        #: walks the whole frozen list, ~5 ms for 60k objects) and after the last full pass
        self._frozen = -1
        self._full_at = 0

    def answered(self) -> None:
        """One more command answered (called by the server after each reply)."""
        self._commands += 1
        self._last = time.monotonic()

    def idle_moment(self, loop: asyncio.AbstractEventLoop, quiet: Callable[[], bool]) -> None:
        """No client has input pending: collect once :data:`QUIET_S` pass without a
        command and ``quiet()`` still holds (at once after :data:`MAX_COMMANDS`)."""
        if self._commands < self.min_commands:
            return
        if self._commands >= self.max_commands:
            self.idle()
        elif self._timer is None:
            self._timer = loop.call_later(self.quiet_s, self._quiet_check, loop, quiet)

    def _quiet_check(self, loop: asyncio.AbstractEventLoop, quiet: Callable[[], bool]) -> None:
        self._timer = None
        left = self._last + self.quiet_s - time.monotonic()
        if left > 0:  # a command came meanwhile: wait for the pause after it
            self._timer = loop.call_later(left, self._quiet_check, loop, quiet)
        elif quiet():
            self.idle()

    def idle(self) -> None:
        """No client has input pending: collect the new objects, freeze the survivors."""
        if self._commands < self.min_commands:
            return
        self._commands = 0
        gc.collect()
        if self._frozen < 0:  # first time: what start-up froze already (one walk)
            self._frozen = self._full_at = gc.get_freeze_count()
        self._frozen += sum(len(gc.get_objects(g)) for g in range(3))
        gc.freeze()
        if self._frozen > 2 * max(self._full_at, 1):
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._frozen = self._full_at = gc.get_freeze_count()


COLLECTOR = IdleCollector()
