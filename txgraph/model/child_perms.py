"""The per-edge permission formulas: a child edge's perms from its parent's.

Reproduces QEMU 7.2's ``bdrv_child_perm`` and the driver ``bdrv_child_perm``
callbacks (block.c; reference/qemu-graph.md §2): an edge's ``perm`` and
``shared`` are a function of its role and of the parent's *cumulative*
permissions (the union of what the parent's own parents need and the
intersection of what they share). The bits themselves are in
:mod:`txgraph.model.perm_bits`; the refresh that applies the formulas over the
graph is :mod:`txgraph.model.perm_refresh`; their z3 twin is
:mod:`txgraph.checker.perm_smt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from txgraph.model.perm_bits import Perm, Role

__all__ = ["ChildPermContext", "child_perm"]


@dataclass(frozen=True)
class ChildPermContext:
    """What a child-permission formula needs to know about the parent node."""

    #: the parent driver's permission function family (see :func:`child_perm`)
    family: str
    #: the parent is writable (BDRV_O_RDWR after any pending reopen)
    parent_writable: bool
    #: the parent was opened with BDRV_O_INACTIVE (incoming migration)
    parent_inactive: bool = False
    #: the parent was opened with BDRV_O_NO_IO
    parent_no_io: bool = False
    #: blkdebug's take-child-perms / unshare-child-perms options
    take_perms: Perm = Perm.NONE
    unshare_perms: Perm = Perm.NONE
    #: quorum rewrite-corrupted
    rewrite_corrupted: bool = False
    #: the parent itself has parents (copy-before-write asks ``QLIST_EMPTY(&bs->parents)``)
    has_parents: bool = False


# Plain-int twins of the flags for the formulas' hot path.
_R, _W, _U, _S = 0x1, 0x2, 0x4, 0x8
_ALL = 0xF
_DATA, _META, _FILT, _COW = 1 << 0, 1 << 1, 1 << 2, 1 << 3


def _filter_perms(perm: int, shared: int) -> tuple[int, int]:
    """``bdrv_filter_default_perms``: a filter passes its parents' needs through."""
    return perm, shared


def _cow_perms(ctx: ChildPermContext, perm: int, shared: int) -> tuple[int, int]:
    """``bdrv_default_perms_for_cow``: a backing child is only ever read.

    Writes to the backing are shared only if the parent's users share writes
    themselves, since the overlay then cannot rely on a stable backing either.
    """
    nperm = perm & _R
    nshared = _R | _U
    if shared & _W or ctx.parent_inactive:
        nshared |= _W | _S
    return nperm, nshared


def _storage_perms(ctx: ChildPermContext, role: int, perm: int, shared: int) -> tuple[int, int]:
    """``bdrv_default_perms_for_storage``: data and metadata children of formats.

    A writable format node always needs to write and resize the file that
    holds its metadata (even with no users), and never lets anyone else do so;
    a node that does I/O reads its metadata.
    """
    nperm, nshared = perm, shared
    if role & _META:
        if ctx.parent_writable:
            nperm |= _W | _S
        if not ctx.parent_no_io:
            nperm |= _R
        nshared &= ~(_W | _S)
    if role & _DATA:
        nshared &= ~_S
        if nperm & _U:
            nperm |= _W
        if nperm & _W:
            nperm |= _S
    if ctx.parent_inactive:
        nshared |= _W | _S
    return nperm, nshared


def _default_perms(ctx: ChildPermContext, role: int, perm: int, shared: int) -> tuple[int, int]:
    """``bdrv_default_perms``: dispatch on the child's role."""
    if role & _FILT:
        return _filter_perms(perm, shared)
    if role & _COW:
        return _cow_perms(ctx, perm, shared)
    if role & (_DATA | _META):
        return _storage_perms(ctx, role, perm, shared)
    # A child with no role at all takes nothing and shares everything.
    return 0, _ALL


def child_perm(ctx: ChildPermContext, role: Role, perm: Perm, shared: Perm) -> tuple[Perm, Perm]:
    """See :func:`_child_perm`; bit arithmetic runs on plain ints (IntFlag ops are slow)."""
    nperm, nshared = _child_perm(ctx, int(role), int(perm), int(shared))
    return Perm(nperm), Perm(nshared)


def _child_perm(ctx: ChildPermContext, role: int, perm: int, shared: int) -> tuple[int, int]:
    """Compute (perm, shared) of one child edge from the parent's cumulative perms.

    ``ctx.family`` selects the driver's ``bdrv_child_perm`` implementation:

    - ``default``: ``bdrv_default_perms`` (file-less protocols never have children)
    - ``raw``: raw-format's variant (default rules; the data child only takes
      write/resize when its parents need them, raw having no metadata)
    - ``quorum``: ``quorum_child_perm`` (never shares write or resize so that
      children cannot diverge)
    - ``copy-on-read``: ``cor_child_perm`` (adds write-unchanged for populating reads)
    - ``blkdebug``: default plus the take/unshare child-perm options
    - ``commit_top``: ``bdrv_commit_top_child_perm`` (nothing taken, everything shared)
    - ``vvfat``: ``vvfat_child_perm`` (the write target: consistent read and write,
      only write-unchanged shared)
    - ``crypto``: ``block_crypto_child_perms`` (luks: default rules, but write and
      resize only taken when the parents need them, and shared when they share them)
    """
    family = ctx.family
    if family == "vvfat":
        return _R | _W, _U  # vvfat_child_perm: a private write target, whatever the parents
    if family == "copy-before-write":
        # cbw_child_perm: the target is written and shared but for resize; the source
        # is a filtered child that, under users, stops sharing write and resize.
        if not role & _FILT:
            return _W, _ALL & ~_S
        nperm, nshared = _default_perms(ctx, role, perm, shared)
        if ctx.has_parents:
            if perm & _W:
                nperm |= _R
            nshared &= ~(_W | _S)
        return nperm, nshared
    if family in ("commit_top", "mirror_top-stop"):
        return 0, _ALL  # bdrv_commit_top_child_perm; a stopped bdrv_mirror_top_child_perm
    if family == "mirror_top-commit":
        # bdrv_mirror_top_child_perm of an active commit: no consistent read, write shared
        nperm, nshared = _default_perms(ctx, role, perm, shared)
        return nperm & ~_R, nshared | _W
    if family == "quorum":
        nperm = perm | (_W if ctx.rewrite_corrupted else 0)
        nshared = shared & (_R | _U)
        return nperm, nshared
    if family == "copy-on-read":
        nperm, nshared = _default_perms(ctx, role, perm, shared)
        if role & _FILT:
            nperm |= _U
        return nperm, nshared
    nperm, nshared = _default_perms(ctx, role, perm, shared)
    if family == "raw" and role & _DATA and not role & _META:
        # raw has no metadata of its own: write and resize only when asked for.
        nperm = (nperm & ~(_W | _S)) | (perm & (_W | _S))
    if family == "crypto" and role & (_DATA | _META):  # luks has storage children only
        nshared |= shared & (_W | _S)
        nperm = (nperm & ~(_W | _S)) | (perm & (_W | _S))
    if family == "blkdebug":
        nperm |= ctx.take_perms
        nshared &= ~ctx.unshare_perms
    return nperm, nshared
