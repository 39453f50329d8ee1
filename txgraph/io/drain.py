"""The drain machinery of the Runtime: the graph lock and the node table.

:class:`NodeTable` is the Runtime's table of live driver objects; it tracks
the few nodes with drain callbacks (throttle filters park requests) so a
drain visits only those. :class:`RWLock` is QEMU's graph lock shape
(``bdrv_graph_wrlock`` + drained section, reference/qemu-graph.md §6):
requests hold it shared, a graph change exclusively.

Lock discipline: both are owned by one :class:`~txgraph.io.runtime.Runtime`;
the table is mutated only by the thread holding the lock exclusively (the
control path), and read by requests holding it shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from txgraph.io.driver import DriverNode

__all__ = ["NodeTable", "RWLock"]


class NodeTable(dict[str, DriverNode]):
    """Driver objects by name, tracking the few that have drain callbacks.

    A drain visits only those (throttle filters park requests), so its cost
    does not grow with the number of nodes in the graph.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hooked: set[DriverNode] = set()

    def _track(self, node: DriverNode) -> None:
        if hasattr(node, "drain_begin"):
            self.hooked.add(node)

    def __setitem__(self, name: str, node: DriverNode) -> None:
        old = self.get(name)
        if old is not None:
            self.hooked.discard(old)
        super().__setitem__(name, node)
        self._track(node)

    def update(self, other: Any = (), **kw: DriverNode) -> None:  # type: ignore[override]
        for name, node in dict(other, **kw).items():
            self[name] = node

    def pop(self, name: str, *default: Any) -> Any:
        node = super().pop(name, *default)
        if node is not None:
            self.hooked.discard(node)
        return node

    def __delitem__(self, name: str) -> None:
        self.hooked.discard(self[name])
        super().__delitem__(name)


class RWLock:
    """A writer-preferring reader/writer lock (QEMU's graph lock shape).

    The writer announces itself first (new readers then wait), runs the
    ``on_quiesce`` hook so readers parked inside drivers can finish, and only
    then waits for the readers to drain. The writing thread may re-enter.
    """

    def __init__(self, on_quiesce: Callable[[], None], on_resume: Callable[[], None]) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._waiting_writers = 0
        self._parked_readers = 0
        self._on_quiesce = on_quiesce
        self._on_resume = on_resume

    def held_by_me(self) -> bool:
        return self._writer == threading.get_ident()

    def parked_readers(self) -> int:
        """How many readers wait for a writer to finish (requests held back by a drain)."""
        with self._cond:
            return self._parked_readers

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._parked_readers += 1
            try:
                while self._writer is not None or self._waiting_writers:
                    self._cond.wait()
            finally:
                self._parked_readers -= 1
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._cond:
            self._waiting_writers += 1
            while self._writer is not None:
                self._cond.wait()
            self._writer = me
            self._waiting_writers -= 1
        try:
            self._on_quiesce()
            with self._cond:
                while self._readers:
                    self._cond.wait()
        except BaseException:
            self._release()
            raise
        try:
            yield
        finally:
            try:
                self._on_resume()
            finally:
                self._release()

    def _release(self) -> None:
        with self._cond:
            self._writer = None
            self._cond.notify_all()
