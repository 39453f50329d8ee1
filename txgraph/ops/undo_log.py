"""The undo log: a transaction's model primitives, each recording its inverse.

(Not to be confused with the QMP ``transaction`` command, which lives in
:mod:`txgraph.ops.qmp_transaction` and stages several actions into one of these.)


Follows QEMU's util/transactions.c discipline ("do immediately, register the
undo"; reference/qemu-graph.md §4.1): each primitive changes the staged graph
at once and pushes its inverse; ``abort`` replays the inverses newest first,
so the graph ends byte-identical to before (tests check the digest);
``commit`` runs the deferred irreversible work and bumps the graph
generation. What the data plane must do is kept beside the log in
:attr:`Transaction.rt` (:class:`~txgraph.ops.stage.RuntimeStage`): prepare
steps with their undos, and the typed delta the Session hands to
``Runtime.apply`` after the checker's verdict.

Staging happens in place on the live graph under the engine's command lock:
nothing else reads the graph while a transaction is open, and the data plane
only sees a change when the commit hands it over under drain. This costs
O(change) per transaction instead of a full copy, which matters at 10,000
nodes. A ``fail_at`` counter injects a fault before the k-th primitive, which
is how the tests prove every operation is all-or-nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from txgraph.io.runtime import Runtime
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Backend, BlockNode, Edge
from txgraph.model.perm_bits import Perm
from txgraph.ops.journal import Journal
from txgraph.ops.stage import InjectedFault, RuntimeStage

__all__ = ["Transaction", "TxState", "InjectedFault"]


class TxState(enum.Enum):
    OPEN = "open"
    COMMITTED = "committed"
    ABORTED = "aborted"


class Transaction:
    """A set of staged graph changes that commit or abort as one."""

    def __init__(
        self,
        graph: BlockGraph,
        *,
        fail_at: int | None = None,
        runtime: Runtime | None = None,
        fail_prepare_at: int | None = None,
        outer_journal: Journal | None = None,
    ) -> None:
        self.graph = graph
        #: first values of everything this transaction changes (the checker's ``before``)
        self.journal = Journal(graph, outer_journal)
        self.state = TxState.OPEN
        self._undo: list[Callable[[], None]] = []
        self._on_commit: list[Callable[[], None]] = []
        self._start_seq = graph._seq
        #: nodes whose vertices or edges changed: the checker's region
        self.touched: set[str] = set()
        #: nodes whose whole subtree the command drains (``bdrv_subtree_drained_begin``
        #: of blockdev-reopen): the jobs above any node of it pause at commit
        self.drained_subtrees: set[str] = set()
        #: nodes an action drains until the transaction ends (``bdrv_drained_begin`` in a
        #: prepare, paired with ``.clean``): the jobs above them pause, commit or abort
        self.drained_nodes: set[str] = set()
        self.steps = 0
        self._fail_at = fail_at
        #: parents (node names, backend keys) whose child edges changed
        self.edge_parents: dict[str, None] = {}
        #: nodes an edge was detached from or moved away from: their cumulative
        #: permissions may have shrunk, so a permission refresh whose walk reaches them
        #: must recompute them even where no edge into them changed its values
        self.lost_parents: set[str] = set()
        #: the data plane's side of this transaction
        self.rt = RuntimeStage(runtime, self.undo, fail_prepare_at)

    # -- bookkeeping ---------------------------------------------------------------------
    def _step(self) -> None:
        assert self.state is TxState.OPEN, f"transaction is {self.state.value}"
        self.steps += 1
        if self._fail_at is not None and self.steps == self._fail_at:
            raise InjectedFault(f"fault injected at primitive step {self.steps}")

    def undo(self, fn: Callable[[], None]) -> None:
        """Register a custom inverse (for state outside the graph, e.g. a runtime open)."""
        self._undo.append(fn)

    def on_commit(self, fn: Callable[[], None]) -> None:
        """Register irreversible work that must only happen if the transaction commits."""
        self._on_commit.append(fn)

    @staticmethod
    def _discard(_removed: object) -> None:
        """Undo callbacks return nothing; the removed object is dropped."""

    # -- primitives ----------------------------------------------------------------------
    def add_node(self, node: BlockNode) -> None:
        self._step()
        node.seq = self.graph.next_seq()
        self.journal.note_vertex(node.name)
        self.graph.add_node(node)
        self.touched.add(node.name)
        self._undo.append(lambda: self._discard(self.graph.remove_node(node.name)))

    def remove_node(self, name: str) -> BlockNode:
        self._step()
        self.journal.note_vertex(name)
        node = self.graph.remove_node(name)
        self.touched.discard(name)
        self._undo.append(lambda: self.graph.add_node(node))
        return node

    def add_backend(self, backend: Backend) -> None:
        self._step()
        backend.seq = self.graph.next_seq()
        self.journal.note_vertex(backend.key)
        self.graph.add_backend(backend)
        self.touched.add(backend.key)
        self._undo.append(lambda: self._discard(self.graph.remove_backend(backend.key)))

    def remove_backend(self, key: str) -> Backend:
        self._step()
        self.journal.note_vertex(key)
        backend = self.graph.remove_backend(key)
        self.touched.discard(key)
        self._undo.append(lambda: self.graph.add_backend(backend))
        return backend

    def attach(self, parent: str, child: str, edge: Edge) -> Edge:
        """Create an edge; it goes to the head of both the parent's and child's lists."""
        self._step()
        old_seqs = (edge.seq, edge.parent_seq)
        edge.seq = self.graph.next_seq()
        edge.parent_seq = edge.seq
        self.journal.note_slot(parent, edge.name)
        self.graph.attach(parent, child, edge)
        self.touched.update((parent, child))
        self.edge_parents[parent] = None

        def undo() -> None:
            self.graph.detach(parent, edge.name)
            edge.seq, edge.parent_seq = old_seqs

        self._undo.append(undo)
        return edge

    def detach(self, parent: str, name: str) -> tuple[str, Edge]:
        self._step()
        self.journal.note_slot(parent, name)
        child, edge = self.graph.detach(parent, name)
        self.touched.update((parent, child))
        self.edge_parents[parent] = None
        self.lost_parents.add(child)
        self._undo.append(lambda: self.graph.attach(parent, child, edge))
        return child, edge

    def retarget(self, parent: str, name: str, new_child: str) -> str:
        """``bdrv_replace_child_noperm``: the same edge now points at ``new_child``."""
        self._step()
        self.journal.note_slot(parent, name)
        old_child, edge = self.graph.detach(parent, name)
        old_parent_seq = edge.parent_seq
        edge.parent_seq = self.graph.next_seq()
        self.graph.attach(parent, new_child, edge)
        self.touched.update((parent, old_child, new_child))
        self.edge_parents[parent] = None
        self.lost_parents.add(old_child)

        def undo() -> None:
            self.graph.detach(parent, name)
            edge.parent_seq = old_parent_seq
            self.graph.attach(parent, old_child, edge)

        self._undo.append(undo)
        return old_child

    def set(self, obj: Any, attr: str, value: Any) -> None:
        """Set one attribute of a node, backend or edge, remembering the old value."""
        self._step()
        old = getattr(obj, attr)
        if isinstance(obj, Edge) and attr == "frozen":
            self.journal.note_frozen(obj)
        elif isinstance(obj, BlockNode):
            self.journal.note_change(obj.name)
        elif isinstance(obj, Backend):
            self.journal.note_change(obj.key)
        setattr(obj, attr, value)
        if isinstance(obj, BlockNode):
            self.touched.add(obj.name)
            if obj.name in self.graph.nodes:
                self.graph.invalidate_filenames(obj.name)
        elif isinstance(obj, Backend):
            self.touched.add(obj.key)

        def undo() -> None:
            setattr(obj, attr, old)
            if isinstance(obj, BlockNode) and obj.name in self.graph.nodes:
                self.graph.invalidate_filenames(obj.name)

        self._undo.append(undo)

    def set_edge_perm(self, parent: str, name: str, perm: Perm, shared: Perm) -> None:
        """``bdrv_child_set_perm``: recorded so abort restores the old values."""
        found = self.graph.child_edge(parent, name)
        assert found is not None
        child, edge = found
        self._step()
        self.journal.note_change(parent)
        old = (edge.perm, edge.shared)
        edge.perm, edge.shared = perm, shared
        self.touched.update((parent, child) if parent in self.graph.nodes else (child,))

        def undo() -> None:
            edge.perm, edge.shared = old

        self._undo.append(undo)

    # -- outcome -------------------------------------------------------------------------
    def commit(self) -> None:
        assert self.state is TxState.OPEN
        self.state = TxState.COMMITTED
        self.graph.generation += 1
        self.journal.committed(self.touched)
        for fn in self._on_commit:
            fn()
        self._undo.clear()
        self._on_commit.clear()

    def abort(self) -> None:
        """Replay every inverse newest first; the graph is as before the transaction."""
        if self.state is not TxState.OPEN:
            return
        self.state = TxState.ABORTED
        while self._undo:
            self._undo.pop()()
        self.graph._seq = self._start_seq
        self._on_commit.clear()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
