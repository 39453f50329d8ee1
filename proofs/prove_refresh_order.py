"""Theorem: one pass of the permission refresh in topological order is a fixed point.

Claim (all graphs): the value of edge (u -> v) is f_u(cum(u)), where cum(u)
depends only on the edges *into* u. Walking nodes parents-first
(``bdrv_topological_dfs``), when u is processed every edge into u already has
its final value (its parent precedes u), so the edges out of u get their final
values; by induction over the order, after one pass every edge equals its
formula, i.e. a second pass changes nothing.

What z3 proves here, for all root requests (two BlockBackends with symbolic
perm/shared) and all initial edge values, on a graph with two paths into one
node — bb0 -> top -> thr -> mid -> base and bb1 -> side(raw) -> mid, mid a
qcow2-like node with an IMAGE child: the topological pass yields values
satisfying every edge equation (second pass = identity). And z3 finds root requests for which a pass in a
non-topological order (a child before one of its parents) leaves an edge that
violates its equation — topological order is needed, not just convenient
(reference/qemu-graph.md §2.2 P7, §7 #7).
"""

from __future__ import annotations

import functools

import z3

from proofs._z3util import valid
from txgraph.checker.perm_smt import bv, smt_child_perm
from txgraph.model.child_perms import ChildPermContext
from txgraph.model.perm_bits import Role

FP = Role.FILTERED | Role.PRIMARY
# node -> (context, [(child, role)])
GRAPH: dict[str, tuple[ChildPermContext, list[tuple[str, Role]]]] = {
    "top": (ChildPermContext("default", parent_writable=True), [("thr", FP)]),
    "thr": (ChildPermContext("default", parent_writable=True), [("mid", FP)]),
    "side": (ChildPermContext("raw", parent_writable=True), [("mid", FP)]),
    "mid": (ChildPermContext("default", parent_writable=True), [("base", Role.IMAGE)]),
    "base": (ChildPermContext("default", parent_writable=True), []),
}
TOPO = ["top", "side", "thr", "mid", "base"]
BAD = ["top", "side", "mid", "thr", "base"]  # mid before its parent thr

Edges = dict[tuple[str, str], tuple[z3.BitVecRef, z3.BitVecRef]]


def _roots() -> Edges:
    return {
        ("bb0", "top"): (z3.BitVec("p0", 4), z3.BitVec("s0", 4)),
        ("bb1", "side"): (z3.BitVec("p1", 4), z3.BitVec("s1", 4)),
    }


def _initial() -> Edges:
    edges = _roots()
    for u, (_ctx, kids) in GRAPH.items():
        for v, _role in kids:
            edges[(u, v)] = (z3.BitVec(f"init_{u}_{v}_p", 4), z3.BitVec(f"init_{u}_{v}_s", 4))
    return edges


def _cum(edges: Edges, node: str) -> tuple[z3.BitVecRef, z3.BitVecRef]:
    ins = [val for (u, v), val in edges.items() if v == node]
    return (
        functools.reduce(lambda a, b: a | b, (p for p, _ in ins), bv(0)),
        functools.reduce(lambda a, b: a & b, (s for _, s in ins), bv(0xF)),
    )


def _pass(edges: Edges, order: list[str]) -> Edges:
    out = dict(edges)
    for u in order:
        ctx, kids = GRAPH[u]
        cp, cs = _cum(out, u)
        for v, role in kids:
            out[(u, v)] = smt_child_perm(ctx, role, cp, cs)
    return out


def _fixed(edges: Edges) -> z3.BoolRef:
    eqs = []
    for u, (ctx, kids) in GRAPH.items():
        cp, cs = _cum(edges, u)
        for v, role in kids:
            fp, fs = smt_child_perm(ctx, role, cp, cs)
            eqs += [edges[(u, v)][0] == fp, edges[(u, v)][1] == fs]
    return z3.And(eqs)


def test_topological_pass_reaches_fixed_point() -> None:
    assert valid(_fixed(_pass(_initial(), TOPO))) is None


def test_non_topological_pass_can_miss_it() -> None:
    assert valid(_fixed(_pass(_initial(), BAD))) is not None
