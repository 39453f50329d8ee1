"""The Runtime: owner of the live data-plane driver objects.

The ops layer talks to the data plane only through this class. Opening a node
creates its driver object (QEMU opens images while a node is being added, so
open errors are real errors from real files); closing releases it. Edge
changes on live nodes go through :meth:`set_child`, which quiesces the parent
so that no request is in flight across the edge while it moves (QEMU's
drained section, reference/qemu-graph.md §6).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from txgraph.errors import OpenError
from txgraph.io.driver import DriverNode, ImageInfo
from txgraph.io.locking import LockState, prepare_perm
from txgraph.io.registry import driver_class

__all__ = ["Runtime"]


class Runtime:
    """Driver objects by node name, plus the drain lock that makes swaps atomic."""

    def __init__(self) -> None:
        self._nodes: dict[str, DriverNode] = {}
        # Image-lock state of file nodes (bytes held by their fds), by node name.
        self._locks: dict[str, LockState] = {}
        # Readers (I/O requests) hold it shared; graph changes hold it exclusively.
        self._graph_lock = _RWLock()

    # -- control path --------------------------------------------------------------------
    def open_node(self, name: str, driver: str, options: Mapping[str, Any],
                  children: Mapping[str, str], read_only: bool) -> ImageInfo:
        """Create the driver object of a new node; raise OpenError with QEMU's text."""
        cls = driver_class(driver)
        if cls is None:
            raise OpenError(f"Driver '{driver}' is not supported by the txgraph data plane")
        kids = {edge: self._nodes[child] for edge, child in children.items()}
        node = cls(name, options, kids, read_only)
        self._nodes[name] = node
        return node.info()

    def close_node(self, name: str) -> None:
        node = self._nodes.pop(name, None)
        self._locks.pop(name, None)
        if node is not None:
            node.close()

    def set_child(self, parent: str, edge: str, child: str | None) -> None:
        """Attach, re-target or (child=None) detach one edge, with the parent drained."""
        with self.drained():
            kids = self._nodes[parent].children
            if child is None:
                kids.pop(edge, None)
            else:
                kids[edge] = self._nodes[child]

    def has_node(self, name: str) -> bool:
        return name in self._nodes

    def node(self, name: str) -> DriverNode:
        return self._nodes[name]

    def info(self, name: str) -> ImageInfo:
        return self._nodes[name].info()

    def read_head(self, name: str, length: int = 512) -> bytes:
        """The first bytes of a node (format probing, ``find_image_format``)."""
        node = self._nodes[name]
        size = node.size()
        return node.read(0, min(length, size)) if size > 0 else b""

    def set_read_only(self, name: str, read_only: bool) -> None:
        self._nodes[name].read_only = read_only

    def check_perm(self, name: str, perm: int, shared: int) -> Callable[[], None] | None:
        """The driver's ``bdrv_check_perm`` (rule P6): file nodes take QEMU's image locks.

        Returns the undo that restores the previous locks, or None if nothing changed.
        """
        node = self._nodes.get(name)
        fd = getattr(node, "fd", -1)
        if node is None or fd < 0 or node.options.get("locking", "auto") in ("off", False):
            return None
        state = self._locks.setdefault(name, LockState())
        return prepare_perm(fd, state, perm, shared)

    def state(self) -> tuple[object, ...]:
        """Open nodes, their children and held image locks: equal states mean an identical data plane."""
        return tuple(sorted(
            (name, tuple(sorted((edge, child.node_name) for edge, child in node.children.items())),
             node.read_only, repr(self._locks.get(name, LockState())))
            for name, node in self._nodes.items()))

    def close_all(self) -> None:
        for name in list(self._nodes):
            self.close_node(name)

    # -- drain ---------------------------------------------------------------------------
    @contextmanager
    def drained(self) -> Iterator[None]:
        """Wait for in-flight requests to finish and hold new ones back meanwhile."""
        with self._graph_lock.write():
            yield

    @contextmanager
    def request(self) -> Iterator[None]:
        """Bracket one I/O request: it sees either the old graph or the new one."""
        with self._graph_lock.read():
            yield


class _RWLock:
    """A writer-preferring reader/writer lock (QEMU's graph lock shape)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
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
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
