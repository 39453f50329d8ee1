"""The Runtime: owner of the live data-plane driver objects.

The ops layer talks to the data plane only through this class. Opening a node
creates its driver object (QEMU opens images while a node is being added, so
open errors are real errors from real files); closing releases it. Edge
changes on live nodes go through :meth:`set_child` or, for several changes that
must become visible together, :meth:`apply`; both quiesce the data plane so
that no request is in flight across an edge while it moves (QEMU's drained
section plus graph write lock, reference/qemu-graph.md §6).

Every committed change makes a new *generation*. A request bracketed by
:meth:`request` runs entirely inside one generation, which it can read back
with :meth:`request_generation` (the drain tests use it to prove atomicity).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from txgraph.errors import BlockError, OpenError
from txgraph.io.driver import DriverNode, ImageInfo
from txgraph.io.locking import LockState, prepare_perm, relock
from txgraph.io.registry import driver_class
from txgraph.io.throttle_groups import ThrottleGroups, using_groups

__all__ = ["Runtime", "EventListener", "OpenNode", "SetChild", "SetReadOnly", "CloseNode",
           "DeltaOp"]


# -- the delta: what one atomic graph change consists of --------------------------------------
@dataclass(frozen=True)
class OpenNode:
    """Create a node (its children may be live nodes or nodes opened earlier in the delta)."""

    name: str
    driver: str
    options: Mapping[str, Any] = field(default_factory=dict)
    children: Mapping[str, str] = field(default_factory=dict)
    read_only: bool = False


@dataclass(frozen=True)
class SetChild:
    """Attach, re-target, or (``child=None``) detach the edge ``parent --edge-->``."""

    parent: str
    edge: str
    child: str | None


@dataclass(frozen=True)
class SetReadOnly:
    """Switch a node between read-only and read-write (the data-plane half of a reopen)."""

    name: str
    read_only: bool


@dataclass(frozen=True)
class CloseNode:
    """Remove a node; it is closed once requests have resumed and can no longer reach it."""

    name: str


DeltaOp: TypeAlias = OpenNode | SetChild | SetReadOnly | CloseNode

#: ``listener(event_name, data)``: how the QMP layer learns of data-plane events
#: (``QUORUM_REPORT_BAD``, ``QUORUM_FAILURE``...).
EventListener = Callable[[str, dict[str, Any]], None]


class Runtime:
    """Driver objects by node name, plus the drain lock that makes swaps atomic."""

    def __init__(self, throttle_groups: ThrottleGroups | None = None) -> None:
        self._nodes = _NodeTable()
        self._nbd: Any = None
        # Image-lock state of file nodes (bytes held by their fds), by node name.
        self._locks: dict[str, LockState] = {}
        # Readers (I/O requests) hold it shared; graph changes hold it exclusively.
        self._graph_lock = _RWLock(self._quiesce_begin, self._quiesce_end)
        self._generation = 0
        self._tls = threading.local()
        #: throttle-group objects (QEMU's ``object-add qom-type=throttle-group``)
        self.throttle_groups = throttle_groups if throttle_groups is not None else ThrottleGroups()
        self.event_listeners: list[EventListener] = []

    # -- control path --------------------------------------------------------------------
    def open_node(self, name: str, driver: str, options: Mapping[str, Any],
                  children: Mapping[str, str], read_only: bool) -> ImageInfo:
        """Create the driver object of a new node; raise OpenError with QEMU's text."""
        node = self._construct(name, driver, options, children, read_only)
        try:
            info = node.info()
        except BaseException:
            node.close()  # opened, but its size could not be determined: not opened at all
            raise
        self._nodes[name] = node
        return info

    def _construct(self, name: str, driver: str, options: Mapping[str, Any],
                   children: Mapping[str, str], read_only: bool,
                   pending: Mapping[str, DriverNode] | None = None) -> DriverNode:
        cls = driver_class(driver)
        if cls is None:
            raise OpenError(f"Driver '{driver}' is not supported by the txgraph data plane")
        pool = {**self._nodes, **(pending or {})}
        kids = {edge: pool[child] for edge, child in children.items()}
        # Drivers that need runtime services (throttle groups) find them here.
        with using_groups(self.throttle_groups):
            node = cls(name, options, kids, read_only)
        if hasattr(node, "event_sink"):
            node.event_sink = self.emit  # type: ignore[attr-defined]
        return node

    def close_node(self, name: str) -> None:
        node = self._nodes.pop(name, None)
        self._locks.pop(name, None)
        if node is not None:
            node.close()

    def set_child(self, parent: str, edge: str, child: str | None) -> None:
        """Attach, re-target or (child=None) detach one edge, with the parent drained."""
        self.apply([SetChild(parent, edge, child)])

    def has_node(self, name: str) -> bool:
        return name in self._nodes

    def node(self, name: str) -> DriverNode:
        return self._nodes[name]

    def node_names(self) -> list[str]:
        return list(self._nodes)

    def info(self, name: str) -> ImageInfo:
        return self._nodes[name].info()

    def read_head(self, name: str, length: int = 512) -> bytes:
        """The first bytes of a node (format probing, ``find_image_format``)."""
        node = self._nodes[name]
        size = node.size()
        return node.read(0, min(length, size)) if size > 0 else b""

    def check_readable(self, path: str) -> None:
        """Open a host file once for reading (a driver's config file); raise OSError if not possible."""
        from txgraph.io.hostpath import host_path

        with open(host_path(path), "rb"):
            pass

    def set_read_only(self, name: str, read_only: bool) -> None:
        self.apply([SetReadOnly(name, read_only)])

    def reopen_node(self, name: str, options: Mapping[str, Any], read_only: bool) -> None:
        """Hand new options and read-only mode to a live driver, with the data plane drained.

        The driver validates before changing anything (``bdrv_reopen_prepare``);
        when it replaced its file descriptor, the image locks move to the new one
        (they belong to the open file description).
        """
        with self.drained():
            self._reopen(name, options, read_only)
            self._generation += 1

    def _reopen(self, name: str, options: Mapping[str, Any], read_only: bool) -> None:
        node = self._nodes[name]
        old_fd = getattr(node, "fd", -1)
        node.reopen(options, read_only)
        new_fd = getattr(node, "fd", -1)
        state = self._locks.get(name)
        if state is not None and new_fd >= 0 and new_fd != old_fd:
            self._locks[name] = relock(new_fd, state)

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

    def create_image(self, path: str, fmt: str, size: int, *, backing: str | None = None,
                     backing_format: str | None = None) -> None:
        """``bdrv_img_create`` for ``blockdev-snapshot-sync``: a new image on disk.

        Delegates to qemu-img with ``-u`` (QEMU passes BDRV_O_NO_BACKING: the
        backing is in use, and locked, by this very process) and returns QEMU's
        error text without qemu-img's prefixes. The file is not removed if a
        later step fails, exactly as in QEMU.
        """
        argv = ["qemu-img", "create", "-q", "-u", "-f", fmt]
        if backing:
            argv += ["-b", backing]
            if backing_format:
                argv += ["-F", backing_format]
        res = subprocess.run([*argv, path, str(size)], capture_output=True, text=True)
        if res.returncode != 0:
            lines = res.stderr.strip().splitlines()
            # The first line is QEMU's error; lines after it are hints
            # ("Is another process using the image...?").
            text = lines[0] if lines else "Could not create image"
            for prefix in ("qemu-img: ", f"{path}: "):
                if text.startswith(prefix):
                    text = text[len(prefix):]
            raise BlockError(text)

    def nbd_server(self) -> Any:
        """The process-wide NBD server (created on first use, not listening until started)."""
        if self._nbd is None:
            from txgraph.io.nbd.server import NbdServer

            self._nbd = NbdServer(self)
        return self._nbd

    def close_all(self) -> None:
        """Close every node, parents before children (formats flush into their files)."""
        remaining = dict(self._nodes)
        while remaining:
            held = {id(c) for n in remaining.values() for c in n.children.values()}
            tops = [name for name, node in remaining.items() if id(node) not in held] or list(remaining)
            for name in tops:
                self.close_node(name)
                remaining.pop(name, None)

    # -- events --------------------------------------------------------------------------
    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Forward a driver's event (e.g. quorum's QUORUM_REPORT_BAD) to every listener."""
        for listener in list(self.event_listeners):
            listener(event, data)

    # -- atomic multi-edge changes ---------------------------------------------------------
    @property
    def generation(self) -> int:
        """How many graph changes have been committed so far."""
        return self._generation

    def apply(self, delta: Sequence[DeltaOp]) -> int:
        """Commit ``delta`` atomically with respect to I/O; return the new generation.

        Reproduces the shape of QEMU's drained graph change (``bdrv_drained_begin``
        on the affected nodes, graph write lock, edge edits, ``bdrv_drained_end``):

        1. new nodes are opened first, outside the drained section, so a failing
           open changes nothing and does not stall I/O;
        2. the data plane is quiesced: new requests wait, throttled requests are
           released (``throttle_co_drain_begin``), in-flight requests finish;
        3. edge moves, read-only changes and removals are applied in order; if one
           fails, the ones before it are undone and the new nodes are closed;
        4. the generation is bumped and requests resume, seeing only the result;
        5. removed nodes are closed after the resume (nothing can reach them).
        """
        opened: dict[str, DriverNode] = {}
        try:
            for op in delta:
                if isinstance(op, OpenNode):
                    if op.name in self._nodes or op.name in opened:
                        raise OpenError(f"Duplicate nodes with node-name='{op.name}'")
                    opened[op.name] = self._construct(op.name, op.driver, op.options,
                                                      op.children, op.read_only, opened)
        except BaseException:
            for node in opened.values():
                node.close()
            raise
        removed: list[DriverNode] = []
        with self.drained():
            undo: list[Callable[[], None]] = []
            try:
                self._nodes.update(opened)
                for op in delta:
                    if isinstance(op, SetChild):
                        undo.append(self._set_edge(op))
                    elif isinstance(op, SetReadOnly):
                        undo.append(self._set_ro(op))
                    elif isinstance(op, CloseNode):
                        node = self._nodes.pop(op.name)
                        removed.append(node)
                        undo.append(lambda n=node: self._nodes.__setitem__(n.node_name, n))
            except BaseException:
                for fn in reversed(undo):
                    fn()
                for name, node in opened.items():
                    self._nodes.pop(name, None)
                    node.close()
                raise
            self._generation += 1
            gen = self._generation
        for node in removed:
            self._locks.pop(node.node_name, None)
            node.close()
        return gen

    def _set_edge(self, op: SetChild) -> Callable[[], None]:
        kids = self._nodes[op.parent].children
        old = kids.get(op.edge)
        if op.child is None:
            kids.pop(op.edge, None)
        else:
            kids[op.edge] = self._nodes[op.child]

        def undo() -> None:
            if old is None:
                kids.pop(op.edge, None)
            else:
                kids[op.edge] = old
        return undo

    def _set_ro(self, op: SetReadOnly) -> Callable[[], None]:
        node = self._nodes[op.name]
        old = node.read_only
        self._reopen(op.name, node.options, op.read_only)
        return lambda: self._reopen(op.name, node.options, old)

    # -- drain ---------------------------------------------------------------------------
    @contextmanager
    def drained(self) -> Iterator[None]:
        """Wait for in-flight requests to finish and hold new ones back meanwhile.

        Re-entrant for the thread that holds it, like nested drained sections.
        """
        with self._graph_lock.write():
            yield

    @contextmanager
    def request(self) -> Iterator[int]:
        """Bracket one I/O request: it sees either the old graph or the new one.

        Yields the generation the request runs in.
        """
        if self._graph_lock.held_by_me():
            # A graph change reading data (probing) is already exclusive.
            yield self._generation
            return
        with self._graph_lock.read():
            prev = getattr(self._tls, "gen", None)
            self._tls.gen = self._generation
            try:
                yield self._generation
            finally:
                self._tls.gen = prev

    def request_generation(self) -> int | None:
        """The generation of the request the calling thread is serving, if any."""
        return getattr(self._tls, "gen", None)

    def _quiesce_begin(self) -> None:
        """``drained_begin`` of every node that has one: let requests waiting inside drivers go."""
        for node in list(self._nodes.hooked):
            node.drain_begin()  # type: ignore[attr-defined]

    def _quiesce_end(self) -> None:
        for node in list(self._nodes.hooked):
            node.drain_end()  # type: ignore[attr-defined]


class _NodeTable(dict[str, DriverNode]):
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

    def pop(self, name: str, *default: Any) -> Any:  # type: ignore[override]
        node = super().pop(name, *default)
        if node is not None:
            self.hooked.discard(node)
        return node

    def __delitem__(self, name: str) -> None:
        self.hooked.discard(self[name])
        super().__delitem__(name)


class _RWLock:
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
        self._on_quiesce = on_quiesce
        self._on_resume = on_resume

    def held_by_me(self) -> bool:
        return self._writer == threading.get_ident()

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer is not None or self._waiting_writers:
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
