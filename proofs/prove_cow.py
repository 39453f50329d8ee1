"""Theorem: a COW (backing) edge never requires WRITE, WRITE_UNCHANGED or RESIZE.

For every parent context of the families that dispatch COW children through
``bdrv_default_perms_for_cow`` (default, raw, copy-on-read, and blkdebug
without ``take-child-perms``) and every parent cumulative (perm, shared), the
perm of an edge whose role has the COW bit but not FILTERED is ⊆ {R}. So a
read-only backing node can always serve as a backing file (P4 never fires on
it because of its overlay), and two overlays can share one backing node
without a write conflict. blkdebug's take-child-perms is the one documented
way to break it, and z3 finds that counterexample.
"""

from __future__ import annotations

import z3

from proofs._contexts import contexts
from proofs._z3util import subset, valid
from txgraph.checker.perm_smt import bv, smt_child_perm
from txgraph.model.child_perms import ChildPermContext
from txgraph.model.perm_bits import Perm, Role

_R = bv(int(Perm.CONSISTENT_READ))


def test_cow_edge_only_reads() -> None:
    p, s = z3.BitVec("p", 4), z3.BitVec("s", 4)
    checked = 0
    for ctx, _role in contexts():
        if ctx.family == "quorum" or ctx.take_perms:
            continue
        perm, _shared = smt_child_perm(ctx, Role.COW, p, s)
        assert valid(subset(perm, _R)) is None, ctx
        checked += 1
    assert checked > 0


def test_blkdebug_take_perms_is_the_exception() -> None:
    p, s = z3.BitVec("p", 4), z3.BitVec("s", 4)
    ctx = ChildPermContext("blkdebug", parent_writable=True, take_perms=Perm.WRITE)
    perm, _shared = smt_child_perm(ctx, Role.COW, p, s)
    assert valid(subset(perm, _R)) is not None
