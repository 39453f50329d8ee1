"""The region a check looks at, and small read-only views of the graph.

A transaction touches a few nodes (``Transaction.touched``: nodes whose
vertex or edges changed). Every rule is local: it constrains a node, its
parent edges or its child edges. So the rules that can have changed are the
ones about touched nodes, their child edges, the edges into them and the
nodes directly below them (a re-targeted or re-permissioned edge changes what
its child sees). The rest of the graph is held fixed and assumed valid;
``touched=None`` makes every node part of the region.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from txgraph.checker.verdict import EdgeRef
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Edge, ParentKind
from txgraph.model.perm_bits import PERM_ALL, Perm

__all__ = ["Region", "edge_label", "in_edges", "out_edges", "cumulative", "node_edges_only"]


def edge_label(ref: EdgeRef) -> str:
    """``parent/name``: how edges appear in literal names and sentences."""
    return f"{ref[0]}/{ref[1]}"


def in_edges(graph: BlockGraph, child: str) -> list[tuple[EdgeRef, Edge]]:
    """Parent edges of ``child`` in a canonical (sorted) order."""
    # The adjacency dicts directly: networkx's edge views cost several times more,
    # and these run for every node of every check. The sort makes the order canonical.
    out = [
        ((p, key, child), data["obj"])
        for p, keys in graph._pred[child].items()
        for key, data in keys.items()
    ]
    out.sort(key=_ref)
    return out


def out_edges(graph: BlockGraph, parent: str) -> list[tuple[EdgeRef, Edge]]:
    """Child edges of ``parent`` in a canonical (sorted) order."""
    out = [
        ((parent, key, c), data["obj"])
        for c, keys in graph._succ[parent].items()
        for key, data in keys.items()
    ]
    out.sort(key=_ref)
    return out


def _ref(item: tuple[EdgeRef, Edge]) -> EdgeRef:
    return item[0]


def node_edges_only(edges: Iterable[tuple[EdgeRef, Edge]]) -> list[tuple[EdgeRef, Edge]]:
    return [(ref, e) for ref, e in edges if e.parent_kind is ParentKind.NODE]


def cumulative(graph: BlockGraph, node: str) -> tuple[Perm, Perm]:
    """``bdrv_get_cumulative_perm`` over the stored edge values."""
    perm, shared = Perm.NONE, PERM_ALL
    for keys in graph._pred[node].values():
        for data in keys.values():
            edge: Edge = data["obj"]
            perm |= edge.perm
            shared &= edge.shared
    return perm, shared


@dataclass
class Region:
    """Which nodes, backends and edges the rules are evaluated on.

    ``nodes`` are the touched block nodes (the per-node rules run on them);
    ``below`` adds their children (P3/P4 also run there); ``backends`` are
    touched non-node parents (their root edges are checked too).
    """

    graph: BlockGraph
    nodes: set[str]
    backends: set[str]
    whole: bool
    below: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, graph: BlockGraph, touched: Iterable[str] | None) -> Region:
        if touched is None:
            return cls(graph, set(graph.nodes), set(graph.backends), True, set(graph.nodes))
        nodes: set[str] = set()
        backends: set[str] = set()
        for key in touched:
            if key in graph.nodes:
                nodes.add(key)
            elif key in graph.backends:
                backends.add(key)
        below = set(nodes)
        for parent in nodes | backends:
            below.update(graph._succ[parent])
        return cls(graph, nodes, backends, False, below)

    def edges_in_scope(self) -> list[tuple[EdgeRef, Edge]]:
        """Edges whose P1 formula can have changed: out of and into region members."""
        succ, pred = self.graph._succ, self.graph._pred
        seen: set[EdgeRef] = set()
        out: list[tuple[EdgeRef, Edge]] = []
        owners = self.nodes | self.backends if not self.whole else succ
        for owner in owners:
            for c, keys in succ[owner].items():
                for key, data in keys.items():
                    ref = (owner, key, c)
                    if ref not in seen:
                        seen.add(ref)
                        out.append((ref, data["obj"]))
        if not self.whole:
            for child in self.nodes:
                for p, keys in pred[child].items():
                    for key, data in keys.items():
                        ref = (p, key, child)
                        if ref not in seen:
                            seen.add(ref)
                            out.append((ref, data["obj"]))
        # Sorted by reference, which is unique: the order does not depend on the walk's.
        out.sort(key=_ref)
        return out
