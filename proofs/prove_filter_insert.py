"""Theorem: inserting a pure filter above a node cannot introduce a conflict there.

Let node X have parent edges e1..en (n = 1..4) with arbitrary perm/shared, and
insert a filter F whose formula is the identity (``bdrv_filter_default_perms``:
throttle, preallocate, compress, blkdebug without take/unshare options) so that
e1..en now point to F and F has one FILTERED|PRIMARY edge to X. Then

- F's edge into X carries exactly X's old cumulative (perm, shared)
  (with force-share on X, shared = ALL in both cases), so X's cumulative
  permissions, and therefore every edge below X (P1), are unchanged;
- X now has a single parent edge, so P3 at X holds vacuously, and P3 at F
  is P3 at X before the insertion (same edges, same values);
- P4 at X is unchanged (same cumulative perm).

This is why QEMU's append-greedy-filter case succeeds (reference/qemu-graph.md
§2.2 P8). copy-on-read is *not* a pure filter: it adds WRITE_UNCHANGED, and
z3 exhibits the parent state where that breaks P4 on a read-only X.
"""

from __future__ import annotations

import functools

import z3

from proofs._z3util import valid
from txgraph.checker.perm_smt import bv, smt_child_perm
from txgraph.model.child_perms import ChildPermContext
from txgraph.model.perm_bits import Role

FP = Role.FILTERED | Role.PRIMARY
PURE = [
    ChildPermContext(fam, parent_writable=w)
    for fam in ("default", "blkdebug")
    for w in (False, True)
]


def _cum(
    perms: list[z3.BitVecRef], shareds: list[z3.BitVecRef]
) -> tuple[z3.BitVecRef, z3.BitVecRef]:
    return (
        functools.reduce(lambda a, b: a | b, perms, bv(0)),
        functools.reduce(lambda a, b: a & b, shareds, bv(0xF)),
    )


def test_pure_filter_preserves_child_cumulative() -> None:
    for n in range(1, 5):
        ps = [z3.BitVec(f"p{i}", 4) for i in range(n)]
        ss = [z3.BitVec(f"s{i}", 4) for i in range(n)]
        cp, cs = _cum(ps, ss)
        for ctx in PURE:
            fp, fsh = smt_child_perm(ctx, FP, cp, cs)
            assert valid(z3.And(fp == cp, fsh == cs)) is None, (ctx, n)


def test_copy_on_read_is_not_pure() -> None:
    p, s = z3.BitVec("p", 4), z3.BitVec("s", 4)
    ctx = ChildPermContext("copy-on-read", parent_writable=True)
    fp, _fs = smt_child_perm(ctx, FP, p, s)
    # A reader-only parent (p = R) makes the cor edge ask for WRITE_UNCHANGED.
    assert valid(z3.Implies(p == 1, (fp & 0x6) == 0)) is not None
