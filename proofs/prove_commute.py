"""Theorem (bounded, exhaustive over the real engine, no z3 of its own): two
transactions on disjoint regions commute.

A transaction here is one primitive of :mod:`proofs._graphspace` followed by the
engine's permission refresh (``compute_refresh`` recorded through
``set_edge_perm``, as :func:`txgraph.ops.perm_apply.refresh_perms` does), checked by the
real checker on its ``touched`` region (z3 engine, ``qemu`` policy) and committed if
the verdict is ok, aborted otherwise — the session's commit path. Its *region* is
what that check reads: ``Region.of(post, touched)``'s nodes, backends and the nodes
below them. For every graph of the space (bound: up to 2 block nodes with one BlockBackend, 3
without; :data:`FULL` for all of it) and every pair (A, B) of its transactions whose regions, each computed on its own
post-graph from the common start, are disjoint:

- A's verdict is the same whether it runs first or after B, and so is B's;
- the final graphs of A;B and B;A are equal (nodes, backends, edges with role,
  perm, shared and frozen flag; sequence numbers aside, they count creations).

Why it should hold: every rule instance of a region reads only the region
(prove_region_sound), and a disjoint transaction writes nothing there. Breaking it:
:func:`counterexamples` takes the region used to decide disjointness; the region of
the primitive alone (leaving out the nodes the permission refresh rewrote below it)
finds an order-dependent pair.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from proofs._graphspace import Delta, clone, deltas, graphs
from txgraph.checker import check
from txgraph.checker.region import Region
from txgraph.model.graph import BlockGraph
from txgraph.model.perm_refresh import compute_refresh
from txgraph.ops.undo_log import Transaction

#: the checker engine deciding verdicts; both agree on every verdict (tests/unit/checker),
#: the structural one is ten times faster on graphs this small. TXGRAPH_PROOF_ENGINE=z3.
ENGINE = os.environ.get("TXGRAPH_PROOF_ENGINE", "structural")
#: default bound: graphs of up to 2 nodes, and of 3 nodes without a BlockBackend
#: (TXGRAPH_PROOF_FULL=1: the whole space of :mod:`proofs._graphspace`)
FULL = bool(os.environ.get("TXGRAPH_PROOF_FULL"))
#: (post-graph, touched, touched by the primitive alone) -> the names a transaction owns
Footprint = Callable[[BlockGraph, set[str], set[str]], set[str]]


def region_footprint(post: BlockGraph, touched: set[str], _primitive: set[str]) -> set[str]:
    r = Region.of(post, touched)
    return r.nodes | r.backends | r.below


def primitive_only(post: BlockGraph, _touched: set[str], primitive: set[str]) -> set[str]:
    """A broken notion of independence: the region of the primitive, without the nodes the
    permission refresh then rewrote."""
    r = Region.of(post, primitive)
    return r.nodes | r.backends


def _canon(g: BlockGraph) -> Any:
    nodes = sorted((n.name, n.driver, int(n.flags), n.force_share) for n in g.nodes.values())
    backends = sorted((b.key, int(b.perm), int(b.shared)) for b in g.backends.values())
    edges = sorted(
        (p, c, e.name, int(e.role), int(e.perm), int(e.shared), e.frozen) for p, c, e in g.edges()
    )
    return nodes, backends, edges


def _run(g: BlockGraph, delta: Delta) -> tuple[bool, set[str]]:
    """Stage, refresh, check the region, commit or abort: (verdict ok, touched)."""
    tx = Transaction(g)
    delta.apply(tx)
    for ch in compute_refresh(g, list(g.nodes), collect=[]):
        tx.set_edge_perm(ch.parent, ch.name, ch.perm, ch.shared)
    touched = set(tx.touched)
    ok = check(g, touched, policy="qemu", before=tx.journal, engine=ENGINE).ok
    if ok:
        tx.commit()
    else:
        tx.abort()
    return ok, touched


def counterexamples(footprint: Footprint = region_footprint, limit: int = 1) -> list[str]:
    found: list[str] = []
    pairs = 0
    for g in graphs():
        if len(g.nodes) > 2 and g.backends and not FULL:
            continue  # the default bound; the pairs grow quadratically
        ds = list(deltas(g))
        feet: list[set[str]] = []
        for d in ds:
            post = clone(g)
            touched, primitive = _run_uncommitted(post, d)
            # a removed vertex leaves ``touched``, but its name is still what it wrote
            gone = (set(g.nodes) | set(g.backends)) - (set(post.nodes) | set(post.backends))
            feet.append(footprint(post, touched, primitive) | gone)
        for i, a in enumerate(ds):
            for j in range(i + 1, len(ds)):
                b = ds[j]
                if feet[i] & feet[j]:
                    continue
                pairs += 1
                ab, ba = clone(g), clone(g)
                va1, _ = _run(ab, a)
                vb2, _ = _run(ab, b)
                vb1, _ = _run(ba, b)
                va2, _ = _run(ba, a)
                if va1 != va2 or vb1 != vb2 or _canon(ab) != _canon(ba):
                    found.append(
                        f"{sorted(g.nodes)} A=[{a.label}] B=[{b.label}]: "
                        f"A {va1}/{va2}, B {vb2}/{vb1}, same graph {_canon(ab) == _canon(ba)}"
                    )
                    if len(found) >= limit:
                        return found
    assert pairs > 0
    return found


def _run_uncommitted(g: BlockGraph, delta: Delta) -> tuple[set[str], set[str]]:
    """Stage and commit without a check: (touched, touched before the refresh)."""
    tx = Transaction(g)
    delta.apply(tx)
    primitive = set(tx.touched)
    for ch in compute_refresh(g, list(g.nodes), collect=[]):
        tx.set_edge_perm(ch.parent, ch.name, ch.perm, ch.shared)
    tx.commit()
    return set(tx.touched), primitive


def test_disjoint_transactions_commute() -> None:
    assert counterexamples() == []


def test_ignoring_the_refresh_is_not_enough() -> None:
    assert counterexamples(primitive_only) != []
