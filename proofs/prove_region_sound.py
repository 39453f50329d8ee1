"""Theorem (bounded): the region check is sound.

If the pre-graph satisfies every rule and the region check of a transaction's
``touched`` set passes on the post-graph, the whole post-graph satisfies every
rule. Bound: every graph and every one-primitive transaction of
:mod:`proofs._graphspace` (up to 3 block nodes and one BlockBackend; file, qcow2,
throttle; by default 338 valid graphs and 4,684 transactions, with
``TXGRAPH_PROOF_FULL=1`` 887 and 14,113), with the real ``Transaction``
computing ``touched`` and the real ``Region``/``enumerate_instances`` choosing the
region's rule instances. The contract of ``touched`` (every primitive adds the
nodes whose vertex or edges it changed, ``set_edge_perm`` both ends of the edge) is
what makes the rest of the graph fixed; the proof also lets the permission refresh
rewrite any edge between touched nodes, and the touched set may grow by any set of
nodes (``TXGRAPH_PROOF_EXTRA=1``: every subset, otherwise none and all descendants
of the touched nodes, which is what a refresh walks).

What z3 decides, per (graph, transaction, touched set): the edge permissions of the
pre-graph and of the post-graph are free 4-bit variables; the pre-graph's whole-graph
rule instances hold; every edge that neither the transaction nor the refresh may
change keeps its value; the region's instances hold on the post-graph; and some
whole-graph instance of the post-graph fails. Unsat everywhere is the theorem. The
rule formulas are the checker's own SMT text (:mod:`txgraph.symbolic.graphsmt`), so
P1 (with every driver formula), P3, P4, G2, G3, G4, G5, N1, N2 and FS1 are covered as
the checker states them. G1 (acyclicity) is global: it is decided per case by the same
networkx search the region check uses (``cycles_through`` restricted to the touched
nodes) against the whole graph's; F1, J1, S1, S2 compare with the pre-state and are
evaluated by the checker from the transaction's journal over every link that may
have changed, not over the region, so there is nothing region-local to prove.

Breaking it: :func:`counterexamples` takes the region builder; the test hands it a
region that leaves out the edges *into* touched nodes, and z3 finds the transaction
(force-share on a node under a qcow2 parent) whose parent's edge breaks P1 unseen.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable

import networkx as nx
import z3

from proofs._graphspace import Delta, clone, deltas, graphs
from txgraph.checker.encode import esc
from txgraph.checker.explain import cycles_through
from txgraph.checker.instances import enumerate_instances
from txgraph.checker.region import Region
from txgraph.checker.rules import rules_for
from txgraph.model.graph import BlockGraph
from txgraph.ops.undo_log import Transaction
from txgraph.symbolic.graphsmt import NAME_PRELUDE, SymbolicEncoder, edge_symbols, text

RegionOf = Callable[[BlockGraph, set[str]], Region]
RULES = rules_for("qemu") - {"G1-acyclic"}


def _extra_sets(post: BlockGraph, touched: set[str]) -> Iterable[set[str]]:
    yield set()
    nodes = sorted(post.nodes)
    if os.environ.get("TXGRAPH_PROOF_EXTRA"):
        for k in range(1, len(nodes) + 1):
            yield from (set(c) for c in itertools.combinations(nodes, k))
        return
    below: set[str] = set()
    for t in touched:
        if t in post.g:
            below |= nx.descendants(post.g, t)
    if below - touched:
        yield below


def _edges(g: BlockGraph) -> dict[tuple[str, str, str], None]:
    return {(p, k, c): None for p, c, k in g.g.edges(keys=True)}


class Session:
    """One private z3 context and solver for a whole run; each case is one push/pop scope
    (declarations outlive the scope in z3's parser, so they are made once)."""

    def __init__(self) -> None:
        self.ctx = z3.Context()
        self.solver = z3.Solver(ctx=self.ctx)
        self.declared: set[str] = set()
        self.solver.from_string(NAME_PRELUDE)


def case(
    pre: BlockGraph, post: BlockGraph, touched: set[str], region_of: RegionOf, session: Session
) -> str | None:
    """None if the theorem holds for this transaction, else the whole-graph rule that fails."""
    region = region_of(post, touched)
    if not cycles_through(post, region.nodes, "qemu") and cycles_through(post, None, "qemu"):
        return "G1-acyclic"
    whole = list(enumerate_instances(Region.of(post, None), RULES, None))
    region_keys = {i.key for i in enumerate_instances(region, RULES, None)}
    if {i.key for i in whole} <= region_keys:
        return None  # the region asks every question the whole check asks
    declared = session.declared
    enc_pre = SymbolicEncoder(pre, declared, "pre:")
    enc_pre.encode(enumerate_instances(Region.of(pre, None), RULES, None))
    enc_post = SymbolicEncoder(post, declared, "post:")
    enc_post.encode(whole)
    keys = {i.key for i in whole}
    enc_post.encode(i for i in enumerate_instances(region, RULES, None) if i.key not in keys)
    claim = [f"(assert |{k}|)" for k in enc_pre.lits]
    claim += [f"(assert |{k}|)" for k in enc_post.lits if _key(k) in region_keys]
    whole_lits = [f"|post:{esc(i.key)}|" for i in whole]
    claim.append(f"(assert (not (and true {' '.join(whole_lits)})))")
    pre_edges = _edges(pre)
    for ref in _edges(post):
        p, _k, c = ref
        free = c in touched and (p in touched or p in post.backends)
        if free or ref not in pre_edges:
            continue
        for a, b in zip(edge_symbols("pre:", ref), edge_symbols("post:", ref)):
            if a in enc_pre.used and b in enc_post.used:
                claim.append(f"(assert (= |{a}| |{b}|))")
    ctx, s = session.ctx, session.solver
    s.push()
    try:
        s.from_string(text((enc_pre, enc_post), prelude=False) + "\n" + "\n".join(claim))
        res = s.check()
        assert res != z3.unknown, s.reason_unknown()
        if res == z3.unsat:
            return None
        m = s.model()
        bad = [i.key for i in whole if z3.is_false(m.eval(z3.Bool(f"post:{esc(i.key)}", ctx)))]
    finally:
        s.pop()
    return bad[0] if bad else "?"


def _key(lit: str) -> str:
    return lit.removeprefix("post:")


def counterexamples(region_of: RegionOf = Region.of, limit: int = 1) -> list[str]:
    """Transactions of the bounded space for which the theorem fails (at most ``limit``)."""
    found: list[str] = []
    session = Session()
    for pre in graphs():
        for delta in deltas(pre):
            post, touched = _apply(pre, delta)
            for extra in _extra_sets(post, touched):
                t = touched | extra
                bad = case(pre, post, t, region_of, session)
                if bad is not None:
                    found.append(f"{sorted(pre.nodes)} {delta.label} touched={sorted(t)}: {bad}")
                    if len(found) >= limit:
                        return found
    return found


def _apply(pre: BlockGraph, delta: Delta) -> tuple[BlockGraph, set[str]]:
    post = clone(pre)
    tx = Transaction(post)
    delta.apply(tx)
    tx.commit()
    return post, set(tx.touched)


def _without_parent_edges(graph: BlockGraph, touched: set[str]) -> Region:
    """A broken region: the edges into touched nodes are left out of P1's scope."""
    region = Region.of(graph, touched)

    class Broken(Region):
        def edges_in_scope(self):  # type: ignore[no-untyped-def]
            return [
                (r, e) for r, e in super().edges_in_scope() if r[0] in self.nodes | self.backends
            ]

    return Broken(region.graph, region.nodes, region.backends, region.whole, region.below)


def test_region_check_is_sound() -> None:
    assert counterexamples() == []


def test_a_region_without_parent_edges_is_not() -> None:
    found = counterexamples(_without_parent_edges)
    assert found and "P1:edge=" in found[0], found
