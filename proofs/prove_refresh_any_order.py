"""Theorem (bounded, z3): the permission refresh reaches the same fixed point in any order.

For every graph of :mod:`proofs._graphspace` (up to 3 block nodes and one
BlockBackend, whose request (perm, shared) is left symbolic: all 256 values at once),
with each edge's equation ``edge = formula(parent context, role, cum(parent))``
(:func:`txgraph.checker.perm_smt.smt_child_perm` on the model's own
``child_perm_context``; force-share on the child makes shared ALL, as
``bdrv_child_perm``'s caller does):

1. the equations have exactly one solution (two solutions are equal, for every root
   request) — so whatever order a refresh visits nodes in, if it stops at a fixed
   point it stops at this one;
2. starting from *arbitrary* edge values, ``n`` passes over the nodes in *any* of the
   ``n!`` orders (``n`` = number of nodes; ``bdrv_refresh_perms`` order or not) reach
   that solution — chaotic iteration converges within the graph's depth;
3. the model's refresh (:func:`txgraph.model.perm_refresh.compute_refresh`, which
   visits parents first once) computes that solution for the graph's concrete request.

prove_refresh_order shows one topological pass suffices on a fixed graph; this is the
converse direction, over the whole bounded space. Breaking it: acyclicity is what makes
the solution unique; :func:`counterexample` on a cycle of two throttle filters finds two
different fixed points.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import z3

from proofs._graphspace import FP, graphs
from txgraph.checker.perm_smt import bv, smt_child_perm
from txgraph.checker.smt import _LOCK
from txgraph.model.graph import BlockGraph
from txgraph.model.node import BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.perm_bits import PERM_ALL, Perm
from txgraph.model.perm_refresh import child_perm_context, compute_refresh

Ref = tuple[str, str, str]
Vals = dict[Ref, tuple[Any, Any]]


def _refs(g: BlockGraph) -> list[Ref]:
    return sorted((p, k, c) for p, c, k in g.g.edges(keys=True))


def _cum(g: BlockGraph, vals: Vals, node: str) -> tuple[Any, Any]:
    ins = [v for (p, k, c), v in vals.items() if c == node]
    return (
        functools.reduce(lambda a, b: a | b, (p for p, _ in ins), bv(0)),
        functools.reduce(lambda a, b: a & b, (s for _, s in ins), bv(0xF)),
    )


def _formula(g: BlockGraph, vals: Vals, ref: Ref, root: tuple[Any, Any]) -> tuple[Any, Any]:
    p, k, c = ref
    if p in g.backends:
        return root
    node = g.nodes[p]
    cp, cs = _cum(g, vals, p)
    has_parents = any(True for _ in g.g.in_edges(p))
    ctx = child_perm_context(node, node.writable, has_parents)
    perm, shared = smt_child_perm(ctx, g.g.edges[p, c, k]["obj"].role, cp, cs)
    return perm, (bv(0xF) if g.nodes[c].force_share else shared)


def _vars(g: BlockGraph, tag: str) -> Vals:
    return {r: (z3.BitVec(f"{tag}p:{r}", 4), z3.BitVec(f"{tag}s:{r}", 4)) for r in _refs(g)}


def _fixed(g: BlockGraph, vals: Vals, root: tuple[Any, Any]) -> Any:
    eqs = []
    for r in vals:
        fp, fs = _formula(g, vals, r, root)
        eqs += [vals[r][0] == fp, vals[r][1] == fs]
    return z3.And(eqs)


def _pass(g: BlockGraph, vals: Vals, order: tuple[str, ...], root: tuple[Any, Any]) -> Vals:
    out = dict(vals)
    for key in ("bb", *order):
        for r in [r for r in out if r[0] == key]:
            out[r] = _formula(g, out, r, root)
    return out


def _solver() -> z3.Solver:
    s = z3.Solver()
    s.set("random_seed", 0)
    return s


def counterexample(g: BlockGraph, passes: bool = True) -> str | None:
    """None if 1-3 hold on ``g``, else which one fails."""
    with _LOCK:  # smt_child_perm builds terms in z3's global context
        root = (z3.BitVec("rp", 4), z3.BitVec("rs", 4))
        a, b = _vars(g, "a"), _vars(g, "b")
        s = _solver()
        s.add(_fixed(g, a, root), _fixed(g, b, root))
        s.add(z3.Or([z3.Or(a[r][0] != b[r][0], a[r][1] != b[r][1]) for r in a] + [False]))
        if s.check() != z3.unsat:
            return "two fixed points"
        if passes:
            for order in itertools.permutations(sorted(g.nodes)):
                v = a
                for _ in range(len(order)):
                    v = _pass(g, v, order, root)
                s = _solver()
                s.add(z3.Not(_fixed(g, v, root)))
                if s.check() != z3.unsat:
                    return f"order {order} does not converge"
        if "bb" in g.backends:
            be = g.backends["bb"]
            concrete = (bv(int(be.perm)), bv(int(be.shared)))
            want = {
                (ch.parent, ch.name): (ch.perm, ch.shared)
                for ch in compute_refresh(g, list(g.nodes), collect=[])
            }
            s = _solver()
            s.add(_fixed(g, a, concrete))
            assert s.check() == z3.sat
            m = s.model()
            for r in a:
                e = g.g.edges[r[0], r[2], r[1]]["obj"]
                got = (m.eval(a[r][0]).as_long(), m.eval(a[r][1]).as_long())
                exp = want.get((r[0], r[1]), (e.perm, e.shared))
                if got != (int(exp[0]), int(exp[1])):
                    return f"compute_refresh differs on {r}"
    return None


def test_refresh_has_one_fixed_point_reached_in_any_order() -> None:
    bad = [(sorted(g.nodes), c) for g in graphs() if (c := counterexample(g)) is not None]
    assert bad == []


def _filter_cycle() -> BlockGraph:
    g = BlockGraph()
    for n in ("t0", "t1"):
        g.add_node(BlockNode(n, "throttle", flags=OpenFlag.RDWR))
    for p, c in (("t0", "t1"), ("t1", "t0")):
        g.attach(p, c, Edge("file", FP, ParentKind.NODE, Perm.NONE, PERM_ALL))
    return g


def test_a_cycle_has_several_fixed_points() -> None:
    assert counterexample(_filter_cycle(), passes=False) == "two fixed points"
