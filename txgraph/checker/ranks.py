"""Fixed ranks for the delta encoding of acyclicity (G1).

The z3 engine gives every region node a symbolic integer rank and every
other node a constant one, and asks for ``rank(parent) > rank(child)`` on the
edges that touch the region (reference/qmp-and-tooling.md §2.1 item 2). The
constants must be a topological numbering of the fixed part of the graph;
they are kept per graph across checks, because the engine checks the same
live graph after every transaction:

- ranks z3 chose for a region are kept *pending* with the graph generation
  they were computed at, and adopted only once that generation was committed
  (an aborted transaction must not leave ranks for edges that no longer
  exist);
- a missing constant triggers a full topological numbering (networkx), as
  does a false alarm: fixed ranks are only sufficient, so an unsat rank core
  without a real cycle means the constants left no room, never a cycle.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import networkx as nx

from txgraph.model.graph import BlockGraph

__all__ = ["RankState", "ranks_for", "renumber", "record"]

#: gap between consecutive fixed ranks, so new nodes fit between old ones
SPACING = 1 << 12


@dataclass
class RankState:
    ranks: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    pending_generation: int = -1


_STATES: weakref.WeakKeyDictionary[BlockGraph, RankState] = weakref.WeakKeyDictionary()


def renumber(graph: BlockGraph, skip: set[str]) -> dict[str, int] | None:
    """Topological ranks (children low) of the graph without ``skip``; None if it has a cycle."""
    g = graph.g
    sub = g.subgraph(n for n in graph.nodes if n not in skip) if skip else g.subgraph(graph.nodes)
    try:
        order = list(nx.topological_sort(sub))
    except nx.NetworkXUnfeasible:
        return None
    total = len(order)
    return {n: (total - i) * SPACING for i, n in enumerate(order)}


def ranks_for(
    graph: BlockGraph, region: set[str], needed: set[str], force: bool = False
) -> dict[str, int] | None:
    """Constant ranks for ``needed`` (nodes outside ``region``), or None if the fixed part is cyclic."""
    state = _STATES.get(graph)
    if state is None:
        state = RankState()
        _STATES[graph] = state
    if state.pending:
        if graph.generation > state.pending_generation:
            state.ranks.update(state.pending)
        state.pending = {}
    if force:
        # After a false alarm: number the whole graph, region included, so the
        # constants respect paths that run through the region. (If only the
        # fixed part is cyclic, fall back to numbering without the region.)
        fresh = renumber(graph, set()) or renumber(graph, region)
    elif any(n not in state.ranks for n in needed):
        fresh = renumber(graph, region)
    else:
        return state.ranks
    if fresh is None:
        return None
    state.ranks = fresh
    return state.ranks


def record(graph: BlockGraph, ranks: dict[str, int]) -> None:
    """Remember ranks z3 chose for region nodes, valid once this generation commits."""
    state = _STATES.setdefault(graph, RankState())
    state.pending = dict(ranks)
    state.pending_generation = graph.generation


def seed(graph: BlockGraph, ranks: dict[str, int]) -> None:
    """Install a complete numbering (from a whole-graph check of an acyclic graph)."""
    state = _STATES.setdefault(graph, RankState())
    state.ranks = dict(ranks)
    state.pending = {}
