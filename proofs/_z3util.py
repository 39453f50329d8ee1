"""Small helpers shared by the proofs."""

from __future__ import annotations

import z3


def subset(a: z3.BitVecRef, b: z3.BitVecRef) -> z3.BoolRef:
    """a ⊆ b on permission bit sets."""
    return (a & ~b) == 0


def valid(claim: z3.BoolRef) -> z3.ModelRef | None:
    """None if ``claim`` holds for all values of its free variables, else a counterexample."""
    s = z3.Solver()
    s.set("random_seed", 0)
    s.add(z3.Not(claim))
    res = s.check()
    assert res != z3.unknown, s.reason_unknown()
    return s.model() if res == z3.sat else None
