"""The symbolic encoder is the checker's encoding: with the free edge permissions pinned to
a graph's values, exactly the rule instances the structural engine refuses are false."""

from __future__ import annotations

import itertools

import z3

from proofs._graphspace import clone, graphs
from txgraph.checker.encode import esc
from txgraph.checker.instances import enumerate_instances
from txgraph.checker.region import Region
from txgraph.checker.rules import rules_for
from txgraph.checker.structural import holds
from txgraph.model.perm_bits import Perm
from txgraph.symbolic.graphsmt import SymbolicEncoder, edge_symbols, text

RULES = rules_for("qemu") - {"G1-acyclic"}


def _false_keys(g: object) -> tuple[set[str], set[str]]:
    insts = list(enumerate_instances(Region.of(g, None), RULES, None))  # type: ignore[arg-type]
    enc = SymbolicEncoder(g, set(), "g:")  # type: ignore[arg-type]
    enc.encode(insts)
    ctx = z3.Context()
    s = z3.Solver(ctx=ctx)
    s.from_string(text([enc]))
    for p, c, k in g.g.edges(keys=True):  # type: ignore[attr-defined]
        e = g.g.edges[p, c, k]["obj"]  # type: ignore[attr-defined]
        for sym, val in zip(edge_symbols("g:", (p, k, c)), (e.perm, e.shared)):
            if sym in enc.used:
                s.add(z3.BitVec(sym, 4, ctx) == int(val))
    assert s.check() == z3.sat
    m = s.model()
    smt = {i.key for i in insts if z3.is_false(m.eval(z3.Bool(f"g:{esc(i.key)}", ctx)))}
    structural = {i.key for i in insts if not holds(i, g)}  # type: ignore[arg-type]
    return smt, structural


def test_pinned_encoding_agrees_with_the_structural_engine() -> None:
    checked = broken = 0
    for g in itertools.islice(graphs(2), 60):
        assert _false_keys(g) == (set(), set())
        for p, c, k in list(g.g.edges(keys=True)):
            bad = clone(g)
            edge = bad.g.edges[p, c, k]["obj"]
            edge.perm = Perm(int(edge.perm) ^ int(Perm.WRITE))
            smt, structural = _false_keys(bad)
            assert smt == structural and smt, (p, k, c)
            broken += 1
        checked += 1
    assert checked and broken
