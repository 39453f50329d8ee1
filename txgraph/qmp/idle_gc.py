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

An idle moment is a pause, not a gap between two commands: each time no
client has input pending, the server asks :meth:`IdleCollector.pause_left`
how much longer the pause must last, and collects (:meth:`IdleCollector.idle`)
only once :data:`QUIET_S` passed without a command (the server's own timer
asks again then). A client that sends its next command right after a reply
(a burst, or a script that waits for each reply) would otherwise find the
server collecting what the previous commands left: measured, 7 ms of
collection right after the setup burst of ``txgraph bench txn`` landed in
front of its timed transaction. Only a session that never pauses collects
without one, once :data:`MAX_COMMANDS` commands have piled up, so its garbage
stays bounded as before.

Owner: the event-loop thread of the QMP servers (one collector per process,
:data:`COLLECTOR`); nothing else calls it. It keeps no timer of its own: each
server arms its own on its own loop. ``gc`` itself is process-wide and
safe to call under the GIL while job threads run.
"""

from __future__ import annotations

import gc
import time

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
        #: objects frozen so far (counted as they are frozen: ``gc.get_freeze_count``
        #: walks the whole frozen list, ~5 ms for 60k objects) and after the last full pass
        self._frozen = -1
        self._full_at = 0

    def answered(self) -> None:
        """One more command answered (called by the server after each reply)."""
        self._commands += 1
        self._last = time.monotonic()

    def pause_left(self) -> float | None:
        """Seconds the current pause must still last before :meth:`idle` collects: 0 once
        :data:`QUIET_S` passed since the last command (or :data:`MAX_COMMANDS` piled up
        without a pause), None while too few commands ran to be worth a collection."""
        if self._commands < self.min_commands:
            return None
        if self._commands >= self.max_commands:
            return 0.0
        return max(0.0, self._last + self.quiet_s - time.monotonic())

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
