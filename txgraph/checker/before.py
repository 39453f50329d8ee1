"""What the checker needs to know about the graph *before* a transaction.

Two rules compare with the state before the change: F1 (a frozen link keeps
its child) and, under ``safe``, S1/S2 (a backing link that existed is gone).
They ask three questions only, so ``before`` is this small read-only
interface instead of a second graph:

- did node ``name`` exist (``had_node``);
- which child did the link ``parent``/``name`` point at (``child_before``);
- which links were frozen and may have changed (``frozen_links``).

Two implementations: :class:`GraphBefore` reads a separate copy of the old
graph (tests and callers that hold one), and the transaction journal
(:class:`txgraph.ops.journal.Journal`) answers from the before-values the
transaction recorded, so its cost is O(change), never O(graph).

``frozen_links`` may return more links than changed (a full copy returns
every frozen link): an F1 instance on a link whose child is unchanged holds
by construction, so the verdict is the same either way.
"""

from __future__ import annotations

from typing import Protocol

from txgraph.checker.verdict import EdgeRef
from txgraph.model.graph import BlockGraph

__all__ = ["Before", "GraphBefore", "as_before"]


class Before(Protocol):
    """The state before a transaction, as far as F1/S1/S2 read it."""

    def had_node(self, name: str) -> bool:
        """Block node ``name`` existed."""
        ...

    def child_before(self, parent: str, name: str) -> str | None:
        """The child the link ``parent``/``name`` pointed at (None: no such link)."""
        ...

    def frozen_links(self) -> list[EdgeRef]:
        """Frozen links, sorted by (parent, child, name), that may have changed."""
        ...


class GraphBefore:
    """:class:`Before` over a full copy of the old graph (the copy is the caller's)."""

    def __init__(self, graph: BlockGraph) -> None:
        self.graph = graph

    def had_node(self, name: str) -> bool:
        return name in self.graph.nodes

    def child_before(self, parent: str, name: str) -> str | None:
        if parent not in self.graph.g:
            return None
        found = self.graph.child_edge(parent, name)
        return found[0] if found else None

    def frozen_links(self) -> list[EdgeRef]:
        return sorted(
            (
                (p, key, c)
                for p, c, key, data in self.graph.g.edges(keys=True, data=True)
                if data["obj"].frozen
            ),
            key=lambda r: (r[0], r[2], r[1]),
        )


def as_before(before: BlockGraph | Before | None) -> Before | None:
    """Accept either a graph copy or a :class:`Before` (``check``'s ``before``)."""
    if isinstance(before, BlockGraph):
        return GraphBefore(before)
    return before
