"""The child-permission formulas as z3 bit-vector terms.

A symbolic twin of :func:`txgraph.model.child_perms.child_perm`: the parent's
context (driver family, writable/inactive/no-io flags, blkdebug options) and
the edge role are concrete, the parent's cumulative ``perm``/``shared`` are
4-bit vectors. ``proofs/prove_encoding.py`` proves the twin equal to the
model on all inputs; the other proofs reason about the twin.

The checker uses the terms as SMT-LIB ``define-fun`` templates, cached per
(context, role), so a check only pays for string formatting.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any, TypeAlias

import z3

from txgraph.model.child_perms import ChildPermContext
from txgraph.model.perm_bits import Perm, Role

__all__ = ["BV", "bv", "smt_child_perm", "template", "ALL"]

#: a z3 bit-vector term (z3's Python API is untyped, so terms are ``Any`` to mypy)
BV: TypeAlias = Any
ALL = 0xF
_SERIAL = itertools.count()
_R, _W, _U, _S = (
    int(Perm.CONSISTENT_READ),
    int(Perm.WRITE),
    int(Perm.WRITE_UNCHANGED),
    int(Perm.RESIZE),
)


def bv(value: int) -> BV:
    return z3.BitVecVal(value, 4)


def _has(x: BV, bit: int) -> z3.BoolRef:
    return (x & bv(bit)) != bv(0)


def _cow(ctx: ChildPermContext, p: BV, s: BV) -> tuple[BV, BV]:
    """``bdrv_default_perms_for_cow``: only ever read; writes shared if the parent shares them."""
    nperm = p & bv(_R)
    base = bv(_R | _U)
    if ctx.parent_inactive:
        return nperm, base | bv(_W | _S)
    return nperm, z3.If(_has(s, _W), base | bv(_W | _S), base)


def _storage(ctx: ChildPermContext, role: Role, p: BV, s: BV) -> tuple[BV, BV]:
    """``bdrv_default_perms_for_storage``: metadata always written by a writable parent."""
    nperm, nshared = p, s
    if role & Role.METADATA:
        if ctx.parent_writable:
            nperm = nperm | bv(_W | _S)
        if not ctx.parent_no_io:
            nperm = nperm | bv(_R)
        nshared = nshared & bv(ALL & ~(_W | _S))
    if role & Role.DATA:
        nshared = nshared & bv(ALL & ~_S)
        nperm = z3.If(_has(nperm, _U), nperm | bv(_W), nperm)
        nperm = z3.If(_has(nperm, _W), nperm | bv(_S), nperm)
    if ctx.parent_inactive:
        nshared = nshared | bv(_W | _S)
    return nperm, nshared


def _default(ctx: ChildPermContext, role: Role, p: BV, s: BV) -> tuple[BV, BV]:
    """``bdrv_default_perms``: dispatch on the role bits, FILTERED first."""
    if role & Role.FILTERED:
        return p, s
    if role & Role.COW:
        return _cow(ctx, p, s)
    if role & (Role.DATA | Role.METADATA):
        return _storage(ctx, role, p, s)
    return bv(0), bv(ALL)


def smt_child_perm(ctx: ChildPermContext, role: Role, p: BV, s: BV) -> tuple[BV, BV]:
    """(perm, shared) of an edge with role ``role`` under a parent with context ``ctx``."""
    if ctx.family == "vvfat":  # vvfat_child_perm
        return bv(_R | _W), bv(_U)
    if ctx.family == "copy-before-write":
        if not role & Role.FILTERED:
            return bv(_W), bv(ALL & ~_S)
        nperm, nshared = _default(ctx, role, p, s)
        if ctx.has_parents:
            nperm = z3.If(_has(p, _W), nperm | bv(_R), nperm)
            nshared = nshared & bv(ALL & ~(_W | _S))
        return nperm, nshared
    if ctx.family in ("commit_top", "mirror_top-stop"):
        # bdrv_commit_top_child_perm: the job holds the chain, the filter takes nothing.
        return bv(0), bv(ALL)
    if ctx.family == "mirror_top-commit":
        nperm, nshared = _default(ctx, role, p, s)
        return nperm & bv(ALL & ~_R), nshared | bv(_W)
    if ctx.family == "quorum":
        # quorum_child_perm: never share write or resize, so children cannot diverge.
        nperm = p | bv(_W) if ctx.rewrite_corrupted else p
        return nperm, s & bv(_R | _U)
    nperm, nshared = _default(ctx, role, p, s)
    if ctx.family == "copy-on-read" and role & Role.FILTERED:
        nperm = nperm | bv(_U)
    if ctx.family == "raw" and role & Role.DATA and not role & Role.METADATA:
        nperm = (nperm & bv(ALL & ~(_W | _S))) | (p & bv(_W | _S))
    if ctx.family == "crypto" and role & (Role.DATA | Role.METADATA):  # block_crypto_child_perms
        nshared = nshared | (s & bv(_W | _S))
        nperm = (nperm & bv(ALL & ~(_W | _S))) | (p & bv(_W | _S))
    if ctx.family == "blkdebug":
        nperm = nperm | bv(int(ctx.take_perms))
        nshared = nshared & bv(ALL & ~int(ctx.unshare_perms))
    return nperm, nshared


@lru_cache(maxsize=4096)
def template(ctx: ChildPermContext, role: int) -> tuple[str, str]:
    """``(name, define-fun text)`` of a function ``(p, s) -> (concat perm shared)``.

    One 8-bit result keeps the template a single definition: perm in the high
    nibble, shared in the low one.
    """
    p, s = z3.BitVec("p", 4), z3.BitVec("s", 4)
    nperm, nshared = smt_child_perm(ctx, Role(role), p, s)
    body = z3.simplify(z3.Concat(nperm, nshared)).sexpr()
    name = f"cp{next(_SERIAL)}"  # never reused, even after cache eviction
    text = f"(define-fun {name} ((p (_ BitVec 4)) (s (_ BitVec 4))) (_ BitVec 8) {body})"
    return name, text
