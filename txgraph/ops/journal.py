"""The before-values of a transaction: the graph as it was, read through what changed.

The ``safe`` policy's data-loss rules and F1 compare the staged graph with the
graph before the change (:class:`txgraph.checker.before.Before`). Copying the
graph for that costs O(graph) per transaction (785 ms at 10,000 nodes); the
undo log already sees every change, so the :class:`Journal` records the
*first* value of everything a transaction changes, before it changes:

- node membership: whether a node name existed (``add_node``/``remove_node``);
- link slots: which child ``parent``/``name`` pointed at, and whether that
  edge was frozen (``attach``/``detach``/``retarget``);
- an edge's ``frozen`` flag (``Transaction.set`` on an Edge).

Anything not recorded is unchanged, so it is read from the live graph. That is
exact as long as every change goes through :class:`~txgraph.ops.undo_log.Transaction`
(the only writer of the staged graph, see its module docstring). The cost is
O(change) per transaction and per check.

Owner and lock discipline: a Journal belongs to one Transaction (plus,
optionally, one *outer* journal that spans several transactions, e.g. one plan
step, :func:`txgraph.plan.verify.verify_plan`); it is written and read only by
the thread holding the engine's command lock, like the graph itself. It is
valid while the graph has not changed behind its back: during the
transaction, and after it ended until the next one starts. A first value stays
right after an abort too (abort restores exactly that value), which is why an
outer journal may outlive aborted transactions.
"""

from __future__ import annotations

from collections.abc import Callable

from txgraph.checker.verdict import EdgeRef
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Edge

__all__ = ["Journal"]

#: (child, edge, frozen) of a link slot, or None when the slot was empty
_Slot = tuple[str, Edge, bool] | None


class Journal:
    """First values of what a transaction changed; a :class:`~txgraph.checker.before.Before`."""

    def __init__(self, graph: BlockGraph, outer: Journal | None = None) -> None:
        self.graph = graph
        self.outer = outer
        self._had: dict[str, bool] = {}
        self._slots: dict[tuple[str, str], _Slot] = {}
        #: id(edge) -> (edge, frozen before); the edge is held so its id stays unique
        self._frozen: dict[int, tuple[Edge, bool]] = {}
        #: what the committed transactions touched (the checker's region for all of them)
        self.touched: set[str] = set()
        #: called with a vertex key before anything of it changes (a plan step's diff
        #: takes its before-image there, :class:`txgraph.plan.diff.PreImage`)
        self.watch: Callable[[str], None] | None = None

    # -- recording (call *before* the change) --------------------------------------------
    def note_change(self, key: str) -> None:
        """Something of vertex ``key`` (a node's attributes, a parent's child edges) is about
        to change; only watchers care (the other notes call this too)."""
        if self.watch is not None:
            self.watch(key)
        if self.outer is not None:
            self.outer.note_change(key)

    def note_vertex(self, key: str) -> None:
        """Node or backend ``key`` is about to be added or removed."""
        if self.watch is not None:
            self.watch(key)
        if key not in self._had:
            self._had[key] = key in self.graph.g
        if self.outer is not None:
            self.outer.note_vertex(key)

    def note_slot(self, parent: str, name: str) -> None:
        """The link ``parent``/``name`` is about to be attached, detached or moved."""
        if self.watch is not None:
            self.watch(parent)
        slot = (parent, name)
        if slot not in self._slots:
            found = self.graph.child_edge(parent, name) if parent in self.graph.g else None
            self._slots[slot] = (found[0], found[1], found[1].frozen) if found else None
        if self.outer is not None:
            self.outer.note_slot(parent, name)

    def note_frozen(self, edge: Edge) -> None:
        """``edge.frozen`` is about to be set."""
        if id(edge) not in self._frozen:
            self._frozen[id(edge)] = (edge, edge.frozen)
        if self.outer is not None:
            self.outer.note_frozen(edge)

    def committed(self, touched: set[str]) -> None:
        """A transaction recorded here committed, having touched ``touched``."""
        self.touched.update(touched)
        if self.outer is not None:
            self.outer.committed(touched)

    # -- Before --------------------------------------------------------------------------
    def had_node(self, name: str) -> bool:
        # Node names and backend keys never collide (BlockGraph), so a recorded
        # vertex named like a node was that node.
        return self._had.get(name, name in self.graph.nodes)

    def changed_parents(self) -> set[str]:
        """Parents (nodes or backends) of the link slots recorded here."""
        return {parent for parent, _name in self._slots}

    def had_vertex(self, key: str) -> bool:
        """Node or backend ``key`` existed before (the guest-view rule asks about roots)."""
        return self._had.get(key, key in self.graph.g)

    def child_before(self, parent: str, name: str) -> str | None:
        slot = (parent, name)
        if slot in self._slots:
            old = self._slots[slot]
            return old[0] if old else None
        if parent not in self.graph.g:
            return None
        found = self.graph.child_edge(parent, name)
        return found[0] if found else None

    def frozen_links(self) -> list[EdgeRef]:
        """Frozen links among the slots that changed; untouched slots kept their child."""
        out: list[EdgeRef] = []
        for (parent, name), old in self._slots.items():
            if old is None:
                continue
            child, edge, frozen = old
            if self._frozen.get(id(edge), (edge, frozen))[1]:
                out.append((parent, name, child))
        out.sort(key=lambda r: (r[0], r[2], r[1]))
        return out
