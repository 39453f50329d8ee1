"""Theorem (QEMU's P9 assumption): loosening a request never creates a conflict.

(a) For every parent context and role (:mod:`proofs._contexts`) and all
p1, p2, s1, s2 ∈ 2^{R,W,U,S}: if p1 ⊆ p2 and s2 ⊆ s1 then
child_perm(p1, s1).perm ⊆ child_perm(p2, s2).perm and
child_perm(p2, s2).shared ⊆ child_perm(p1, s1).shared — the formulas are
monotone in the parent's needs and antitone in what it shares. Proved
symbolically by z3 on the twin encoding, equal to the model by
``prove_encoding``. force-share only replaces shared by ALL, which preserves both.

(b) Consequently (proved here for two parents of one node, symbolically): if
the edges into a node satisfy P3 (bdrv_parent_perms_conflict) and one edge's
values are replaced by looser ones (perm ⊆ old perm, shared ⊇ old shared),
P3 still holds. By induction over the refresh (a), a loosened request only
loosens every edge below it, which is why ``bdrv_child_try_set_perm`` may
ignore refresh errors when a request only loosens.
"""

from __future__ import annotations

import z3

from proofs._contexts import contexts
from proofs._z3util import subset, valid
from txgraph.checker.perm_smt import smt_child_perm


def monotonicity_counterexamples() -> list[str]:
    p1, p2, s1, s2 = (z3.BitVec(n, 4) for n in ("p1", "p2", "s1", "s2"))
    bad = []
    for ctx, role in contexts():
        a_perm, a_shared = smt_child_perm(ctx, role, p1, s1)
        b_perm, b_shared = smt_child_perm(ctx, role, p2, s2)
        claim = z3.Implies(
            z3.And(subset(p1, p2), subset(s2, s1)),
            z3.And(subset(a_perm, b_perm), subset(b_shared, a_shared)),
        )
        m = valid(claim)
        if m is not None:
            bad.append(f"{ctx} {role!r}: {m}")
    return bad


def test_formulas_monotone_in_perm_antitone_in_shared() -> None:
    assert monotonicity_counterexamples() == []


def test_loosening_one_edge_keeps_p3() -> None:
    ap, ash, bp, bsh, bp2, bsh2 = (z3.BitVec(n, 4) for n in ("ap", "as", "bp", "bs", "bp2", "bs2"))

    def p3(xp: z3.BitVecRef, xs: z3.BitVecRef, yp: z3.BitVecRef, ys: z3.BitVecRef) -> z3.BoolRef:
        return z3.And(subset(yp, xs), subset(xp, ys))

    claim = z3.Implies(
        z3.And(p3(ap, ash, bp, bsh), subset(bp2, bp), subset(bsh, bsh2)), p3(ap, ash, bp2, bsh2)
    )
    assert valid(claim) is None
