"""Theorem: the checker's z3 twin of the child-permission formulas equals the model.

For every parent context and role of :mod:`proofs._contexts` and every parent
cumulative (perm, shared) in 16 x 16, ``txgraph.checker.perm_smt.smt_child_perm``
evaluates to exactly ``txgraph.model.child_perms.child_perm``. The input space is
finite, so exhaustive evaluation is the proof; the other proofs reason about
the twin symbolically and, through this theorem, about the model
(block.c ``bdrv_default_perms`` & co., reference/qemu-graph.md §2.3).
"""

from __future__ import annotations

import z3

from proofs._contexts import contexts
from txgraph.checker.perm_smt import smt_child_perm
from txgraph.model.child_perms import child_perm
from txgraph.model.perm_bits import Perm


def mismatches() -> list[str]:
    p, s = z3.BitVec("p", 4), z3.BitVec("s", 4)
    bad: list[str] = []
    for ctx, role in contexts():
        nperm, nshared = smt_child_perm(ctx, role, p, s)
        both = z3.Concat(nperm, nshared)
        for pv in range(16):
            for sv in range(16):
                got = z3.simplify(
                    z3.substitute(both, (p, z3.BitVecVal(pv, 4)), (s, z3.BitVecVal(sv, 4)))
                ).as_long()
                wp, ws = child_perm(ctx, role, Perm(pv), Perm(sv))
                if got != (int(wp) << 4 | int(ws)):
                    bad.append(f"{ctx} {role!r} p={pv:#x} s={sv:#x}: z3 {got:#04x}")
    return bad


def test_encoding_equals_model() -> None:
    assert mismatches() == []
