"""The Runtime: owner of the live data-plane driver objects and BlockBackends.

The ops layer talks to the data plane only through this class, in two phases
(QEMU's ``bdrv_reopen_prepare`` / ``_commit`` / ``_abort`` split, and the
prepare/commit/abort of every graph transaction, reference/qemu-graph.md §4):

*prepare* (while a transaction is staged, before the checker's verdict)
    :meth:`prepare_open` creates the driver object of a new node — open
    errors are real errors from real files and headers — but keeps it in a
    table of *prepared* nodes no request can reach; :meth:`prepare_reopen`
    lets a live driver validate new options without changing anything;
    :meth:`check_perm` takes image locks (QEMU's ``bdrv_check_perm``, its
    "Failed to get ... lock" is an open-time error). Every prepare returns or
    has an undo: :meth:`discard_prepared`, or the lock undo.

*commit* (after the verdict)
    :meth:`apply` takes the whole typed delta of one transaction and makes
    it visible under ONE drain: in-flight requests finish on the old graph,
    requests arriving meanwhile wait and then see the new one.

An abort never touches a live driver object: it only discards prepared ones
(and restores the image locks it changed).

BlockBackends (:class:`RootBackend`) are the parents that are not nodes:
exports hold one and resolve every request through its ``root`` pointer,
which the same delta retargets (QEMU's ``blk->root``), so an export follows
snapshot, filter insertion and replace exactly as QEMU's does.

Every committed change makes a new *generation*. A request bracketed by
:meth:`request` runs entirely inside one generation, which it can read back
with :meth:`request_generation` (the drain tests use it to prove atomicity).

Lock discipline: the control path (the engine's command lock) is the only
caller of prepare/apply; request threads only use :meth:`request`,
:meth:`backend_root` and the driver objects, under the graph lock shared.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from txgraph.errors import BlockError, IOFailure, OpenError
from txgraph.io.drain import NodeTable, RWLock
from txgraph.io.driver import DriverNode, ImageInfo
from txgraph.io.hostpath import host_path
from txgraph.io.limits import check_write_alignment
from txgraph.io.locking import LockState, prepare_perm, relock
from txgraph.io.registry import driver_class
from txgraph.io.throttle_groups import ThrottleGroups, using_groups

__all__ = [
    "Runtime",
    "RootBackend",
    "EventListener",
    "OpenNode",
    "SetChild",
    "SetReadOnly",
    "ReopenNode",
    "CloseNode",
    "OpenBackend",
    "CloseBackend",
    "DeltaOp",
]


# -- the delta: what one atomic graph change consists of --------------------------------------
@dataclass(frozen=True)
class OpenNode:
    """Publish a node: the prepared one of that name, else created here (its children may be
    live nodes or nodes opened earlier in the delta)."""

    name: str
    driver: str
    options: Mapping[str, Any] = field(default_factory=dict)
    children: Mapping[str, str] = field(default_factory=dict)
    read_only: bool = False
    #: the format was probed, not given (raw's CVE-2008-2004 write rule applies)
    probed: bool = False


@dataclass(frozen=True)
class SetChild:
    """Attach, re-target, or (``child=None``) detach the edge ``parent --edge-->``.

    ``parent`` is a node name or a BlockBackend key (edge ``root``).
    """

    parent: str
    edge: str
    child: str | None


@dataclass(frozen=True)
class SetReadOnly:
    """Switch a node between read-only and read-write, keeping its options."""

    name: str
    read_only: bool


@dataclass(frozen=True)
class ReopenNode:
    """The commit half of ``bdrv_reopen``: new options and read-only mode (validated at prepare)."""

    name: str
    options: Mapping[str, Any]
    read_only: bool


@dataclass(frozen=True)
class CloseNode:
    """Remove a node; it is closed once requests have resumed and can no longer reach it."""

    name: str


@dataclass(frozen=True)
class OpenBackend:
    """Create a BlockBackend (``blk_new``); its root is set by a SetChild of edge ``root``."""

    key: str
    root: str | None = None


@dataclass(frozen=True)
class CloseBackend:
    """Remove a BlockBackend (``blk_unref``); requests still holding it then fail ENOMEDIUM."""

    key: str


DeltaOp: TypeAlias = (
    OpenNode | SetChild | SetReadOnly | ReopenNode | CloseNode | OpenBackend | CloseBackend
)

#: ``listener(event_name, data)``: how the QMP layer learns of data-plane events
#: (``QUORUM_REPORT_BAD``, ``QUORUM_FAILURE``...).
EventListener = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class RootBackend:
    """A BlockBackend: a parent that is not a node (export, device), QEMU's ``blk->root``.

    ``root`` is replaced only by :meth:`Runtime.apply` under drain; requests
    read it under the graph lock shared (:meth:`Runtime.backend_root`).
    """

    key: str
    root: DriverNode | None = None


class Runtime:
    """Driver objects by node name, BlockBackends, and the drain lock that makes swaps atomic."""

    def __init__(self, throttle_groups: ThrottleGroups | None = None) -> None:
        self._nodes = NodeTable()
        #: nodes created by prepare_open, not reachable by any request yet
        self._prepared: dict[str, DriverNode] = {}
        self._backends: dict[str, RootBackend] = {}
        # Image-lock state of file nodes (bytes held by their fds), by driver object.
        self._locks: dict[DriverNode, LockState] = {}
        # Readers (I/O requests) hold it shared; graph changes hold it exclusively.
        self._graph_lock = RWLock(self._quiesce_begin, self._quiesce_end)
        self._generation = 0
        #: outermost drained sections entered so far (tests prove one drain per commit)
        self.drain_count = 0
        #: how many times everything was drained without a change (:meth:`drain_all`)
        self.drain_all_count = 0
        self._tls = threading.local()
        #: throttle-group objects (QEMU's ``object-add qom-type=throttle-group``)
        self.throttle_groups = throttle_groups if throttle_groups is not None else ThrottleGroups()
        self.event_listeners: list[EventListener] = []
        #: live nodes whose request alignment is above one byte (rule P5 may refuse a
        #: writer on them even where their edges keep their values); updated wherever
        #: ``_nodes`` changes, under the same exclusive graph lock
        self._aligned: set[str] = set()

    # -- lookups (prepared nodes first: they are what the staged model names) --------------
    def _lookup(self, name: str) -> DriverNode:
        node = self._prepared.get(name)
        if node is None:
            node = self._nodes[name]
        return node

    def aligned_nodes(self) -> frozenset[str]:
        """Live nodes with a request alignment above one byte (see :mod:`txgraph.io.limits`)."""
        return frozenset(self._aligned)

    def _track_alignment(self, name: str, node: DriverNode | None) -> None:
        if node is not None and node.request_alignment > 1:
            self._aligned.add(name)
        else:
            self._aligned.discard(name)

    def has_node(self, name: str) -> bool:
        """Is ``name`` a live node (reachable by requests)?"""
        return name in self._nodes

    def is_prepared(self, name: str) -> bool:
        return name in self._prepared

    def node(self, name: str) -> DriverNode:
        """The live driver object ``name`` (tests and the data path)."""
        return self._nodes[name]

    def driver_object(self, name: str, *, staged: bool) -> DriverNode | None:
        """The driver object ``name``: prepared first when ``staged`` (what the staged
        model names), else the live one (the graph before the change); None if neither."""
        node = self._prepared.get(name) if staged else None
        return node if node is not None else self._nodes.get(name)

    def node_names(self) -> list[str]:
        return list(self._nodes)

    def has_backend(self, key: str) -> bool:
        return key in self._backends

    def children_of(self, key: str) -> dict[str, str] | None:
        """Edge name → child node name of a prepared/live node or a backend; None if unknown."""
        backend = self._backends.get(key)
        if backend is not None:
            return {"root": backend.root.node_name} if backend.root is not None else {}
        node = self._prepared.get(key) or self._nodes.get(key)
        if node is None:
            return None
        return {edge: child.node_name for edge, child in node.children.items()}

    def info(self, name: str) -> ImageInfo:
        """What a prepared or live node reports about its image (``bdrv_query_image_info``)."""
        if name in self._prepared:
            return self._prepared[name].info()
        with self.request():
            return self._nodes[name].info()

    def file_identity(self, name: str) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the file a prepared or live node holds open (None: not a file).

        The open path compares them to find backing chains that loop through aliases.
        """
        node = self._prepared.get(name) or self._nodes.get(name)
        fd = getattr(node, "fd", None)
        if not isinstance(fd, int) or fd < 0:
            return None
        st = os.fstat(fd)
        return st.st_dev, st.st_ino

    def read_only(self, name: str) -> bool:
        """Whether a prepared or live driver object opened read-only (it may fall back)."""
        node = self._prepared.get(name) or self._nodes[name]
        return node.read_only

    def simulate_growth(self, name: str, length: int) -> None:
        """A dry run's record that a simulated job grew ``name`` to ``length`` (the
        truncate of ``commit_run`` / ``mirror_run``). Only a dry run simulates jobs
        (:class:`txgraph.plan.dryrun.DryRunRuntime`); a live job grows its node for real
        (:func:`txgraph.io.truncate.blk_truncate`)."""
        raise BlockError("only a dry run simulates a job's growth")

    def size(self, name: str) -> int:
        if name in self._prepared:
            return self._prepared[name].size()
        with self.request():
            return self._nodes[name].size()

    def read_head(self, name: str, length: int = 512) -> bytes:
        """The first bytes of a prepared or live node (format probing, ``find_image_format``)."""
        if name in self._prepared:
            node = self._prepared[name]
            size = node.size()
            return node.read(0, min(length, size)) if size > 0 else b""
        with self.request():
            node = self._nodes[name]
            size = node.size()
            return node.read(0, min(length, size)) if size > 0 else b""

    # -- prepare ---------------------------------------------------------------------------
    def prepare_open(self, op: OpenNode) -> ImageInfo:
        """Create the driver object of a new node, unreachable until :meth:`apply` publishes it.

        Raises OpenError with QEMU's text; the undo is :meth:`discard_prepared`.
        """
        if op.name in self._prepared:
            raise OpenError(f"Duplicate nodes with node-name='{op.name}'")
        node = self._construct(op, self._prepared)
        try:
            info = node.info()
        except BaseException:
            self._release(node)  # opened, but its size could not be determined: not opened
            raise
        self._prepared[op.name] = node
        return info

    def discard_prepared(self, name: str) -> None:
        """Abort of :meth:`prepare_open`: close the prepared object and drop its locks."""
        node = self._prepared.pop(name, None)
        if node is not None:
            self._release(node)

    def prepare_reopen(self, name: str, options: Mapping[str, Any], read_only: bool) -> None:
        """``bdrv_reopen_prepare``: the driver validates; nothing changes until apply commits."""
        node = self._lookup(name)
        check = getattr(node, "reopen_prepare", None)
        if check is not None:
            check(options, read_only)

    def prepare_read_only(self, name: str, read_only: bool) -> None:
        """:meth:`prepare_reopen` keeping the node's current options (``SetReadOnly``)."""
        node = self._lookup(name)
        self.prepare_reopen(name, node.options, read_only)

    def check_perm(self, name: str, perm: int, shared: int) -> Callable[[], None] | None:
        """Rule P5 (:mod:`txgraph.io.limits`), then the driver's ``bdrv_check_perm``
        (rule P6): file nodes take QEMU's image locks.

        Returns the undo that restores the previous locks, or None if nothing changed.
        """
        node = self._prepared.get(name) or self._nodes.get(name)
        if node is None:
            return None
        check_write_alignment(node, perm)  # P5 comes before the driver's own check
        fd = getattr(node, "fd", -1)
        if fd < 0 or node.options.get("locking", "auto") in ("off", False):
            return None
        state = self._locks.setdefault(node, LockState())
        return prepare_perm(fd, state, perm, shared)

    def check_readable(self, path: str) -> None:
        """Open a host file once for reading (a driver's config file); raise OSError if not possible."""
        with open(host_path(path), "rb"):
            pass

    def create_image(
        self,
        path: str,
        fmt: str,
        size: int,
        *,
        backing: str | None = None,
        backing_format: str | None = None,
    ) -> None:
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
                    text = text[len(prefix) :]
            raise BlockError(text)

    def _construct(self, op: OpenNode, pending: Mapping[str, DriverNode]) -> DriverNode:
        cls = driver_class(op.driver)
        if cls is None:
            raise OpenError(f"Driver '{op.driver}' is not supported by the txgraph data plane")
        kids = {
            edge: pending[child] if child in pending else self._nodes[child]
            for edge, child in op.children.items()
        }
        # Drivers that need runtime services (throttle groups) find them here.
        with using_groups(self.throttle_groups):
            node = cls(op.name, op.options, kids, op.read_only)
        if op.probed:
            setattr(node, "probed", True)  # typed for raw; harmless elsewhere
        if hasattr(node, "event_sink"):
            setattr(node, "event_sink", self.emit)
        return node

    def _release(self, node: DriverNode) -> None:
        """Close a driver object that no request can reach any more."""
        self._locks.pop(node, None)
        node.close()

    # -- immediate changes (setup of a standalone Runtime; the ops layer uses apply) -----------
    def open_node(
        self,
        name: str,
        driver: str,
        options: Mapping[str, Any],
        children: Mapping[str, str],
        read_only: bool,
    ) -> ImageInfo:
        """Create and publish a node at once: prepare, then a one-op apply."""
        info = self.prepare_open(OpenNode(name, driver, options, children, read_only))
        try:
            self.apply([OpenNode(name, driver)])
        except BaseException:
            self.discard_prepared(name)
            raise
        return info

    def close_node(self, name: str) -> None:
        if name in self._nodes:
            self.apply([CloseNode(name)])

    def set_child(self, parent: str, edge: str, child: str | None) -> None:
        """Attach, re-target or (child=None) detach one edge, with the parent drained."""
        self.apply([SetChild(parent, edge, child)])

    def set_read_only(self, name: str, read_only: bool) -> None:
        self.apply([SetReadOnly(name, read_only)])

    def reopen_node(self, name: str, options: Mapping[str, Any], read_only: bool) -> None:
        """Validate, then hand new options and read-only mode to a live driver under drain."""
        self.prepare_reopen(name, options, read_only)
        self.apply([ReopenNode(name, options, read_only)])

    def change_backing_file(
        self,
        node_name: str,
        backing_file: str | None,
        backing_fmt: str | None,
        *,
        require: bool = False,
    ) -> None:
        """Rewrite a live node's backing file string (QEMU's ``bdrv_change_backing_file``).

        Only the image header changes (qcow2: the whole header cluster is
        rebuilt, :mod:`txgraph.io.qcow2.update_header`); the node's ``backing``
        edge is untouched, that is a graph change of its own. Drivers without
        the callback (raw, filters, file...) fail with ENOTSUP, a read-only
        node with EPERM (callers reopen it read-write first, as QEMU's
        ``change-backing-file`` and the block jobs' ``update_filename`` do);
        every failure is an :class:`IOFailure` with QEMU's errno and nothing
        changes.

        Lock discipline: runs as one request (graph lock shared), so the node
        cannot be closed or swapped out while its header is written, without
        draining the guest I/O (QEMU does not drain here either); the driver
        then takes its own node lock around the header rebuild and write.
        Callers holding the graph lock exclusively (inside :meth:`drained`)
        may call it too: :meth:`request` is re-entrant for them.
        """
        with self.request():
            if node_name not in self._nodes:
                raise BlockError(f"Cannot find device='' nor node-name='{node_name}'")
            self._nodes[node_name].change_backing_file(backing_file, backing_fmt, require=require)

    def open_backend(self, key: str, root: str | None) -> None:
        """A standalone BlockBackend (``blk_new`` + ``blk_insert_bs``).

        Not a graph generation: no request can reach a backend nobody serves yet.
        """
        if key in self._backends:
            raise BlockError(f"Block backend '{key}' already exists")
        self._backends[key] = RootBackend(key, self._nodes[root] if root else None)

    def close_backend(self, key: str) -> None:
        """Remove a standalone backend once no request is in flight on it."""
        if key in self._backends:
            with self.drained():
                self._backends.pop(key, None)

    # -- the request interface -------------------------------------------------------------
    def backend_root(self, key: str) -> DriverNode:
        """The node a BlockBackend's requests go to now; call inside :meth:`request`.

        An empty or removed backend answers ENOMEDIUM, as ``blk_co_preadv`` does.
        """
        backend = self._backends.get(key)
        if backend is None or backend.root is None:
            raise IOFailure("No medium found", errno.ENOMEDIUM)
        return backend.root

    def backend_root_name(self, key: str) -> str | None:
        backend = self._backends.get(key)
        return backend.root.node_name if backend is not None and backend.root else None

    # -- state -----------------------------------------------------------------------------
    def state(self) -> tuple[object, ...]:
        """Open nodes (live and prepared), their children, locks and backends.

        Equal states mean an identical data plane.
        """

        def entry(kind: str, name: str, node: DriverNode) -> tuple[object, ...]:
            return (
                kind,
                name,
                tuple(sorted((e, c.node_name) for e, c in node.children.items())),
                node.read_only,
                repr(self._locks.get(node, LockState())),
            )

        nodes = [entry("live", n, d) for n, d in self._nodes.items()]
        nodes += [entry("prepared", n, d) for n, d in self._prepared.items()]
        backends = [
            ("backend", k, b.root.node_name if b.root else None) for k, b in self._backends.items()
        ]
        return tuple(sorted(nodes)) + tuple(sorted(backends, key=repr))

    def close_all(self) -> None:
        """Close every node, parents before children (formats flush into their files)."""
        for name in list(self._prepared):
            self.discard_prepared(name)
        for backend in self._backends.values():
            backend.root = None  # the backends stay (their owners remove them), now empty
        remaining = dict(self._nodes)
        while remaining:
            held = {id(c) for n in remaining.values() for c in n.children.values()}
            tops = [name for name, node in remaining.items() if id(node) not in held] or list(
                remaining
            )
            for name in tops:
                node = self._nodes.pop(name)
                self._track_alignment(name, None)
                self._release(node)
                remaining.pop(name, None)

    # -- events --------------------------------------------------------------------------
    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Forward a driver's event (e.g. quorum's QUORUM_REPORT_BAD) to every listener."""
        for listener in list(self.event_listeners):
            listener(event, data)

    # -- commit ----------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """How many graph changes have been committed so far."""
        return self._generation

    def apply(self, delta: Sequence[DeltaOp]) -> int:
        """Commit ``delta`` atomically with respect to I/O; return the new generation.

        Reproduces the shape of QEMU's drained graph change (``bdrv_drained_begin``
        of the affected parents, graph write lock, edge edits, ``bdrv_drained_end``):

        1. nodes not prepared beforehand are created first, outside the drained
           section, so a failing open changes nothing and does not stall I/O;
        2. the data plane is quiesced once: new requests wait, throttled requests
           are released (``throttle_co_drain_begin``), in-flight requests finish;
        3. the ops are applied in order (publish, edges, backends, reopens,
           removals); if one fails, the ones before it are undone, the nodes
           created in step 1 are closed and prepared nodes stay prepared;
        4. the generation is bumped and requests resume, seeing only the result;
        5. removed nodes are closed after the resume (nothing can reach them).
        """
        created: dict[str, DriverNode] = {}
        try:
            for op in delta:
                if isinstance(op, OpenNode) and op.name not in self._prepared:
                    if op.name in created:
                        raise OpenError(f"Duplicate nodes with node-name='{op.name}'")
                    created[op.name] = self._construct(op, {**self._prepared, **created})
        except BaseException:
            for node in created.values():
                self._release(node)
            raise
        removed: list[DriverNode] = []
        with self.drained():
            undo: list[Callable[[], None]] = []
            try:
                for op in delta:
                    undo.append(self._apply_one(op, created, removed))
            except BaseException:
                for fn in reversed(undo):
                    fn()
                for node in created.values():
                    self._release(node)
                raise
            self._generation += 1
            gen = self._generation
        for node in removed:
            self._release(node)
        return gen

    def _apply_one(
        self, op: DeltaOp, created: dict[str, DriverNode], removed: list[DriverNode]
    ) -> Callable[[], None]:
        if isinstance(op, OpenNode):
            return self._publish(op.name, created)
        if isinstance(op, SetChild):
            return self._set_edge(op)
        if isinstance(op, ReopenNode):
            return self._reopen_undoable(op.name, op.options, op.read_only)
        if isinstance(op, SetReadOnly):
            node = self._nodes[op.name]
            return self._reopen_undoable(op.name, node.options, op.read_only)
        if isinstance(op, CloseNode):
            node = self._nodes.pop(op.name)
            removed.append(node)
            self._track_alignment(op.name, None)

            def unclose() -> None:
                removed.remove(node)
                self._nodes[op.name] = node
                self._track_alignment(op.name, node)

            return unclose
        if isinstance(op, OpenBackend):
            if op.key in self._backends:
                raise BlockError(f"Block backend '{op.key}' already exists")
            self._backends[op.key] = RootBackend(op.key, self._nodes[op.root] if op.root else None)
            key = op.key

            def unopen() -> None:
                self._backends.pop(key, None)

            return unopen
        backend = self._backends.pop(op.key)
        return lambda: self._backends.__setitem__(op.key, backend)

    def _publish(self, name: str, created: dict[str, DriverNode]) -> Callable[[], None]:
        if name in self._nodes:
            raise OpenError(f"Duplicate nodes with node-name='{name}'")
        prepared = name in self._prepared
        node = self._prepared.pop(name) if prepared else created[name]
        self._nodes[name] = node
        self._track_alignment(name, node)

        def unpublish() -> None:
            self._nodes.pop(name, None)
            self._track_alignment(name, None)
            if prepared:
                self._prepared[name] = node

        return unpublish

    def _set_edge(self, op: SetChild) -> Callable[[], None]:
        backend = self._backends.get(op.parent)
        new = self._nodes[op.child] if op.child is not None else None
        if backend is not None:
            old_root = backend.root
            backend.root = new

            def unroot() -> None:
                backend.root = old_root

            return unroot
        kids = self._nodes[op.parent].children
        old = kids.get(op.edge)
        if new is None:
            kids.pop(op.edge, None)
        else:
            kids[op.edge] = new

        def undo() -> None:
            if old is None:
                kids.pop(op.edge, None)
            else:
                kids[op.edge] = old

        return undo

    def _reopen_undoable(
        self, name: str, options: Mapping[str, Any], read_only: bool
    ) -> Callable[[], None]:
        node = self._nodes[name]
        old_options, old_ro, old_align = dict(node.options), node.read_only, node.request_alignment
        self._reopen(name, options, read_only)

        def unreopen() -> None:
            self._reopen(name, old_options, old_ro)
            node.request_alignment = old_align  # an abort leaves the limits as they were
            self._track_alignment(name, node)

        return unreopen

    def _reopen(self, name: str, options: Mapping[str, Any], read_only: bool) -> None:
        """``bdrv_reopen_commit``; image locks follow a replaced descriptor (they belong to
        the open file description)."""
        node = self._nodes[name]
        old_fd = getattr(node, "fd", -1)
        node.reopen(options, read_only)
        self._track_alignment(name, node)
        new_fd = getattr(node, "fd", -1)
        state = self._locks.get(node)
        if state is not None and new_fd >= 0 and new_fd != old_fd:
            self._locks[node] = relock(new_fd, state)

    # -- drain ---------------------------------------------------------------------------
    @contextmanager
    def drained(self) -> Iterator[None]:
        """Wait for in-flight requests to finish and hold new ones back meanwhile.

        Re-entrant for the thread that holds it, like nested drained sections;
        only the outermost section counts in :attr:`drain_count`.
        """
        if not self._graph_lock.held_by_me():
            self.drain_count += 1
        with self._graph_lock.write():
            yield

    def drain_all(self) -> None:
        """``bdrv_drain_all``: wait until no request is in flight (a throttled one is let
        go at once: every node's ``drain_begin`` runs first) and let requests run again.
        Nothing changes, so it is counted in :attr:`drain_all_count`, apart from the
        drained sections that change the graph (:attr:`drain_count`)."""
        self.drain_all_count += 1
        with self._graph_lock.write():
            pass

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

    def parked_requests(self) -> int:
        """How many requests a drained section holds back right now."""
        return self._graph_lock.parked_readers()

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
