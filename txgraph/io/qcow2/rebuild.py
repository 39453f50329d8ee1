"""Refcount rebuild for dirty images (lazy refcounts after a crash).

Reproduces the effect of QEMU 7.2's automatic repair on a read-write open of
a dirty image (``qcow2_do_open`` -> ``qcow2_check_refcounts`` with
``BDRV_FIX_ERRORS | BDRV_FIX_LEAKS``): every cluster's reference count is
recomputed from the metadata (header, L1/L2 tables of the active state and of
every snapshot, refcount table and blocks, snapshot table) and the refcount
blocks are rewritten where they differ. Work is bounded by the metadata size,
which the header validation already capped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from txgraph.errors import OpenError
from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.snapshots import validate_snapshot_l1

if TYPE_CHECKING:
    from txgraph.io.qcow2.writer import Qcow2Writer

__all__ = ["rebuild_refcounts", "compute_references"]


def _span(offset: int, nbytes: int, cs: int) -> np.ndarray:
    if nbytes <= 0:
        return np.empty(0, dtype=np.int64)
    return np.arange(offset // cs, (offset + nbytes - 1) // cs + 1, dtype=np.int64)


def compute_references(w: Qcow2Writer) -> np.ndarray:
    """How many metadata references point at each host cluster of the image file."""
    h, node, cs = w.h, w.node, w.cs
    parts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]  # header cluster
    parts.append(_span(h.refcount_table_offset, h.refcount_table_clusters * cs, cs))
    blocks = w.refs.table[w.refs.table != 0].astype(np.int64) // cs
    parts.append(blocks)
    parts.append(_span(h.snapshots_offset, h.snapshots_size, cs))
    l1s: list[tuple[int, np.ndarray]] = [(h.l1_table_offset, node.l1)]
    for sn in h.snapshots:
        try:
            validate_snapshot_l1(h, sn)
        except OpenError as e:
            raise OpenError(f"Could not repair dirty image: {e.desc}") from None
        raw = node._fread(sn.l1_table_offset, sn.l1_size * 8)
        l1s.append((sn.l1_table_offset, np.frombuffer(raw, dtype=">u8").astype(np.uint64)))
    cmp_shift, cmp_mask = w.map.cmp_shift, w.map.cmp_size_mask
    for l1_off, l1 in l1s:
        parts.append(_span(l1_off, len(l1) * 8, cs))
        for l2off in (l1 & np.uint64(C.L1E_OFFSET_MASK)).tolist():
            if not l2off:
                continue
            parts.append(np.array([l2off // cs], dtype=np.int64))
            ent = np.frombuffer(node._fread(l2off, cs), dtype=">u8").astype(np.uint64)
            if h.extended_l2:
                ent = ent[0::2]
            comp = (ent & np.uint64(C.OFLAG_COMPRESSED)) != 0
            if not h.has_data_file:
                std = ent[~comp] & np.uint64(C.L2E_OFFSET_MASK)
                parts.append((std[std != 0] // np.uint64(cs)).astype(np.int64))
            for ent_raw in ent[comp].tolist():
                coff = ent_raw & ((1 << cmp_shift) - 1)
                nsec = ((ent_raw >> cmp_shift) & cmp_mask) + 1
                parts.append(_span(coff, nsec * 512 - (coff & 511), cs))
    allc = np.concatenate(parts)
    # qcow2_inc_refcounts_imrt: a reference a cluster or more past the end of the
    # file is counted as a corruption and not as a reference, so the count array
    # stays bounded by the file size (a hostile entry cannot make it huge).
    f = node.file
    limit = -(-int(getattr(f, "file_length", f.size)()) // cs)
    allc = allc[(allc >= 0) & (allc < limit)]
    return np.bincount(allc) if len(allc) else np.zeros(1, dtype=np.int64)


def rebuild_refcounts(w: Qcow2Writer) -> None:
    """Make the on-disk refcounts equal to the computed references, then flush."""
    ref = compute_references(w)
    refs = w.refs
    if int(ref.max()) > refs.max:
        raise OpenError("Could not repair dirty image: refcount overflow")
    refs.next_free = max(refs.next_free, len(ref))
    epb = refs.epb
    f = w.node.file
    flen = int(getattr(f, "file_length", f.size)())
    for bi in np.flatnonzero(refs.table).tolist():
        off = int(refs.table[bi])
        if off % w.cs or off >= flen:
            # rebuild_refcount_structure: such a block cannot be kept; a new one is allocated
            refs.table[bi] = 0
            refs.blocks.pop(bi, None)
            refs.dirty_table.add(bi)
    present = [bi for bi in range(len(refs.table)) if int(refs.table[bi])]
    for bi in present:  # existing blocks first: no allocation happens here
        blk = refs._block(bi)
        assert blk is not None
        want = np.zeros(epb, dtype=np.uint64)
        seg = ref[bi * epb : (bi + 1) * epb]
        want[: len(seg)] = seg
        if not np.array_equal(blk, want):
            blk[:] = want
            refs.dirty_blocks.add(bi)
    for c in np.flatnonzero(ref).tolist():
        if c // epb not in present:
            refs.set(c, int(ref[c]))
    refs.write_back()
    w._sync()
