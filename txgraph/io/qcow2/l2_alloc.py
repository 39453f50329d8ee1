"""qcow2 metadata write-back inside a request: L2 tables, L1 sectors, ``l2_allocate``.

QEMU 7.2's qcow2 keeps L2 tables and refcount blocks in caches written back
at flush, except when a request allocates a new L2 table (``l2_allocate`` in
block/qcow2-cluster.c, reached through ``get_cluster_table`` by writes, zero
writes and discards). There, inside the guest's request, it

1. flushes the refcount block cache (``qcow2_cache_flush``: the dirty blocks
   written, then ``bdrv_flush`` of the file), so the new table's refcount is
   stable;
2. flushes the L2 table cache: the new table (zeroes, or a copy of the shared
   table it replaces) and every other table with unwritten entries, then
   ``bdrv_flush`` of the file;
3. points the L1 entry at it and writes that L1 sector (``qcow2_write_l1_entry``:
   ``bdrv_pwrite_sync``).

Every flush is ``node.file.flush()`` through the file's generic layer, so a
blkdebug file sees it as QEMU's does (its flush rules checked when written since
its last flush) and a failure fails the guest's request. On failure QEMU's
``fail:`` path is reproduced: the L1 entry keeps its old value in memory and
the new cluster is freed again (its refcount drops to 0 and it is reused
next); what was written stays in the file.

The writer's ``flush`` (``qcow2_co_flush_to_os``) uses the same table and L1
writers. Everything here runs under the node's ``lock``, held by the writer's
caller (QEMU's ``s->lock``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.overlap import OL_ACTIVE_L1, OL_ACTIVE_L2

if TYPE_CHECKING:
    from txgraph.io.qcow2.writer import Qcow2Writer

__all__ = ["l2_allocate", "write_dirty_tables", "write_l1_sectors", "write_refcounts"]


def _table_bytes(w: Qcow2Writer, i: int) -> bytes:
    """The on-disk form of L2 slot ``i`` as the map holds it (entries, and bitmaps
    for extended L2 entries)."""
    raw = w.map.raw[i]
    if raw is None:  # evicted (a clean slot): compile it again
        w.map.slot(i)
        raw = w.map.raw[i]
    assert raw is not None
    if w.h.extended_l2:
        both = np.empty(2 * w.map.n, dtype=np.uint64)
        both[0::2], both[1::2] = raw, w.map.bitmaps[i]  # type: ignore[assignment]
        table = both.astype(">u8").tobytes()
    else:
        table = raw.astype(">u8").tobytes()
    assert len(table) == w.map.n * w.h.l2_entry_size
    return table


def _write_table(w: Qcow2Writer, i: int, l2off: int) -> None:
    table = _table_bytes(w, i)
    w.node.overlap.check(l2off, len(table), OL_ACTIVE_L2)
    w.node.announce("l2_update")  # qcow2_cache_entry_flush of an L2 table
    w._fwrite(l2off, table)


def write_dirty_tables(w: Qcow2Writer) -> None:
    """``qcow2_cache_write`` of the L2 table cache: every table with unwritten entries,
    at the offset its L1 entry names (no flush: the caller's)."""
    for i in sorted(w.dirty_slots):
        _write_table(w, i, int(w.map.l1[i]) & C.L1E_OFFSET_MASK)
    w.dirty_slots.clear()


def write_l1_sectors(w: Qcow2Writer, slots: set[int]) -> None:
    """The L1 sectors holding ``slots``, each 512-byte sector written whole with the
    entries in memory (no flush: the caller's)."""
    for sector in sorted({i // 64 for i in slots}):
        chunk = w.map.l1[sector * 64 : (sector + 1) * 64].astype(">u8").tobytes()
        off = w.h.l1_table_offset + sector * 512
        w.node.overlap.check(off, len(chunk), OL_ACTIVE_L1)
        w.node.announce("l1_update")  # qcow2_write_l1_entry
        w._fwrite(off, chunk)


def write_refcounts(w: Qcow2Writer) -> bool:
    """``qcow2_cache_write`` of the refcount block cache: when a request freed clusters
    since (the cache depends on the L2 cache), ``qcow2_cache_flush_dependency`` first -
    the dirty L2 tables written and the file flushed - and only if some block is dirty;
    a failure there leaves the blocks unwritten, as in QEMU. Whether anything was
    written."""
    if w.refs_after_l2 and w.refs.dirty():
        write_dirty_tables(w)
        w._sync()
        w.refs_after_l2 = False
    return w.refs.write_back()


def l2_allocate(w: Qcow2Writer, i: int) -> int:
    """``l2_allocate`` for L1 slot ``i``, whose entry is not COPIED (no table, or one
    shared with a snapshot): a new table, made stable and hooked into the L1 table
    inside the request. Returns the new table's offset. The slot must be compiled
    (``w.map.slot(i)``: its entries are what the new table starts with)."""
    cs = w.cs
    old = int(w.map.l1[i])
    w.node.announce("cluster_alloc")  # qcow2_alloc_clusters for the table
    new = w.refs.alloc(1)
    try:
        # qcow2_cache_flush(refcount_block_cache)
        write_refcounts(w)
        w._sync()
        if old & C.L1E_OFFSET_MASK:
            w.node.announce("l2_alloc_cow_read")  # the old table's entries are copied
        w.node.announce("l2_alloc_write")
        # qcow2_cache_flush(l2_table_cache): the new table with the other dirty ones
        write_dirty_tables(w)
        _write_table(w, i, new)
        w._sync()
        w.map.set_l1(i, new | C.OFLAG_COPIED)
        try:
            write_l1_sectors(w, {i})  # qcow2_write_l1_entry: bdrv_pwrite_sync
            w._sync()
        except BaseException:
            w.map.set_l1(i, old)
            raise
    except BaseException:
        if w.refs.release(new // cs) == 0:  # qcow2_free_clusters (QCOW2_DISCARD_ALWAYS)
            w.node.file.discard(new, cs)
        w.refs_after_l2 = True
        raise
    return new
