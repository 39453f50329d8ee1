"""The Runtime as one transaction sees it: prepare steps with undo, and the typed delta.

A command never changes what a request can see while it is staged. What it
needs from the data plane before the verdict goes through :class:`RuntimeStage`:

* *prepare steps* (they touch files): opening a node's driver object
  (:meth:`open`), validating a reopen (:meth:`reopen`), taking image locks
  (:meth:`check_perm`), reading a config file, creating an image. Each one
  registers its undo in the transaction at once (QEMU's "do, register the
  abort", reference/qemu-graph.md §4.1), and each one is a fault-injection
  point (``fail_at``), like the model primitives are;
* *reads* of prepared or live node facts (size, header, first sector for
  probing): not steps, they change nothing;
* *delta entries*: node removals, backend creation/removal and reopen commits
  recorded in order.

:meth:`delta` then turns the transaction into the Runtime's ops: publish the
prepared nodes still in the model, set every edge of every touched parent
(nodes, prepared nodes and BlockBackends alike) to what the model says, the
reopen commits, the removals. Because the edges are derived from the model,
every parent — exports included — follows every graph change; no command can
forget to tell the data plane.

Lock discipline: one RuntimeStage per transaction, used only by the thread
that holds the engine's command lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from txgraph.errors import BlockError, TxgraphError
from txgraph.io.driver import ImageInfo
from txgraph.io.runtime import (
    CloseBackend,
    CloseNode,
    DeltaOp,
    OpenBackend,
    OpenNode,
    ReopenNode,
    Runtime,
    SetChild,
    SetReadOnly,
)
from txgraph.model.graph import BlockGraph

__all__ = ["RuntimeStage", "InjectedFault"]


class InjectedFault(Exception):
    """Raised by a transaction whose fault counter ran out (fault-injection tests)."""


Undo = Callable[[], None]


class RuntimeStage:
    """Prepare steps and delta of one transaction over ``runtime``."""

    def __init__(
        self,
        runtime: Runtime | None,
        register_undo: Callable[[Undo], None],
        fail_at: int | None = None,
    ) -> None:
        self._runtime = runtime
        self._undo = register_undo
        self._fail_at = fail_at
        #: prepare steps run so far (fault-injection tests iterate over them)
        self.steps = 0
        self._opened: list[OpenNode] = []
        self._recorded: list[DeltaOp] = []
        self._closed: set[str] = set()

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise BlockError("This transaction has no data plane")
        return self._runtime

    def _step(self) -> None:
        self.steps += 1
        if self._fail_at is not None and self.steps == self._fail_at:
            raise InjectedFault(f"fault injected at prepare step {self.steps}")

    def _record(self, op: DeltaOp) -> None:
        self._recorded.append(op)
        self._undo(lambda: self._recorded.remove(op))

    # -- prepare steps -----------------------------------------------------------------------
    def open(
        self,
        name: str,
        driver: str,
        options: Mapping[str, Any],
        children: Mapping[str, str],
        read_only: bool,
        *,
        probed: bool = False,
    ) -> ImageInfo:
        """``bdrv_open_driver``: the node's driver object, prepared (not yet reachable)."""
        rt = self.runtime
        self._step()
        op = OpenNode(name, driver, dict(options), dict(children), read_only, probed)
        info = rt.prepare_open(op)
        self._opened.append(op)

        def discard() -> None:
            rt.discard_prepared(name)
            if op in self._opened:
                self._opened.remove(op)

        self._undo(discard)
        return info

    def reopen(self, name: str, options: Mapping[str, Any], read_only: bool) -> None:
        """``bdrv_reopen_prepare``: the driver validates; the commit is part of the delta."""
        rt = self.runtime
        self._step()
        try:
            rt.prepare_reopen(name, options, read_only)
        except TxgraphError as err:
            raise BlockError(err.desc) from err
        self._record(ReopenNode(name, dict(options), read_only))

    def aligned_nodes(self) -> frozenset[str]:
        """Live nodes whose request alignment is above one byte (rule P5)."""
        return self.runtime.aligned_nodes()

    def check_perm(self, name: str, perm: int, shared: int) -> None:
        """``bdrv_check_perm`` of the driver: image locks, undone on abort."""
        undo = self.check_perm_undo(name, perm, shared)
        if undo is not None:
            self._undo(undo)

    def check_perm_undo(self, name: str, perm: int, shared: int) -> Undo | None:
        """:meth:`check_perm` whose undo the caller owns (a refusal it ignores, as
        ``bdrv_reopen_set_read_only`` callers do)."""
        rt = self.runtime
        self._step()
        return rt.check_perm(name, perm, shared)

    def set_read_only(self, names: Iterable[str], read_only: bool) -> None:
        """``bdrv_reopen_set_read_only`` of several nodes: the options stay, the mode changes.

        Raises BlockError if a driver refuses; records nothing then.
        """
        rt = self.runtime
        names = list(names)
        for name in names:
            self._step()
            try:
                rt.prepare_read_only(name, read_only)
            except TxgraphError as err:
                raise BlockError(err.desc) from err
        for name in names:
            self._record(SetReadOnly(name, read_only))

    def check_readable(self, path: str) -> None:
        """A driver's config file is read before its children are opened (blkdebug)."""
        self._step()
        self.runtime.check_readable(path)

    def create_image(
        self,
        path: str,
        fmt: str,
        size: int,
        *,
        backing: str | None = None,
        backing_format: str | None = None,
    ) -> None:
        """``bdrv_img_create``: not undone, as in QEMU (reference/qemu-graph.md §4.3)."""
        self._step()
        self.runtime.create_image(path, fmt, size, backing=backing, backing_format=backing_format)

    def change_backing_file(
        self,
        name: str,
        backing_file: str | None,
        backing_fmt: str | None,
        old_file: str | None,
        old_fmt: str | None,
    ) -> None:
        """``bdrv_change_backing_file``: the image header names a new backing file now.

        A prepare step that writes the header at once (a job's prepare needs the
        result); an abort writes the old name back.
        """
        rt = self.runtime
        self._step()
        change = getattr(rt, "change_backing_file", None)
        if change is None:
            return
        try:
            change(name, backing_file, backing_fmt)
        except TxgraphError as err:
            raise BlockError(err.desc) from err

        def undo() -> None:
            try:
                change(name, old_file, old_fmt)
            except TxgraphError:
                pass  # the image keeps the new name; the graph goes back regardless

        self._undo(undo)

    # -- reads -------------------------------------------------------------------------------
    def knows(self, name: str) -> bool:
        """Does the data plane have a (prepared or live) driver object for ``name``?"""
        if self._runtime is None:
            return False
        return self._runtime.is_prepared(name) or (
            self._runtime.has_node(name) and name not in self._closed
        )

    def info(self, name: str) -> ImageInfo:
        return self.runtime.info(name)

    def file_identity(self, name: str) -> tuple[int, int] | None:
        """(device, inode) of the host file a prepared or live node holds open, if any."""
        return self.runtime.file_identity(name)

    def read_only(self, name: str) -> bool:
        """Whether the prepared or live driver object is read-only (auto-read-only fallback)."""
        return self.runtime.read_only(name)

    def size(self, name: str) -> int:
        return self.runtime.size(name)

    def read_head(self, name: str, length: int = 512) -> bytes:
        return self.runtime.read_head(name, length)

    # -- delta entries -----------------------------------------------------------------------
    def close(self, name: str) -> None:
        """A node left the model: discard it if prepared here, else close it at commit."""
        rt = self._runtime
        if rt is None:
            return
        op = next((o for o in self._opened if o.name == name), None)
        if op is not None and rt.is_prepared(name):
            # Never reachable: closing it now touches no live object. Abort
            # finds nothing left to discard.
            rt.discard_prepared(name)
            self._opened.remove(op)
            return
        if rt.has_node(name) and name not in self._closed:
            self._closed.add(name)
            self._undo(lambda: self._closed.discard(name))
            self._record(CloseNode(name))

    def open_backend(self, key: str) -> None:
        """``blk_new`` for an export: its root edge is set from the model at commit."""
        self._record(OpenBackend(key))

    def close_backend(self, key: str) -> None:
        self._record(CloseBackend(key))

    # -- commit ------------------------------------------------------------------------------
    def delta(self, graph: BlockGraph, edge_parents: Iterable[str]) -> list[DeltaOp]:
        """The whole transaction as Runtime ops, in the order :meth:`Runtime.apply` needs."""
        if self._runtime is None:
            return []
        rt = self._runtime
        closes = [op for op in self._recorded if isinstance(op, CloseNode)]
        opens = [op for op in self._opened if op.name in graph.nodes]
        backends_new = [op for op in self._recorded if isinstance(op, OpenBackend)]
        backends_gone = [op for op in self._recorded if isinstance(op, CloseBackend)]
        reopens = [op for op in self._recorded if isinstance(op, (ReopenNode, SetReadOnly))]
        closed = {op.name for op in closes}
        # A name closed and opened again in one transaction is a new object:
        # every edge to it must be set again even though the name is the same.
        renewed = closed & {op.name for op in opens}
        new_backends = {op.key for op in backends_new}
        gone_backends = {op.key for op in backends_gone}
        parents = list(dict.fromkeys([*edge_parents, *(op.name for op in opens), *new_backends]))
        edges: list[DeltaOp] = []
        for parent in parents:
            if parent in gone_backends:
                continue
            if parent in graph.nodes:
                if parent in closed and parent not in renewed:
                    continue
                current = {} if parent in renewed else rt.children_of(parent)
            elif parent in graph.backends:
                current = {} if parent in new_backends else rt.children_of(parent)
            else:
                continue
            if current is None:
                continue  # a parent without a data-plane object (a job)
            desired = {edge.name: child for child, edge in graph.children(parent)}
            for name in [*desired, *(e for e in current if e not in desired)]:
                want = desired.get(name)
                if want != current.get(name) or want in renewed:
                    edges.append(SetChild(parent, name, want))
        return [*closes, *opens, *backends_new, *edges, *reopens, *backends_gone]
