"""Growing a qcow2 image: ``qcow2_co_truncate`` to a larger size, preallocation off.

Reproduces what QEMU 7.2 writes when a block job (commit, active commit)
grows its base (``blk_truncate(base, len, false, PREALLOC_MODE_OFF, flags)``):

1. the metadata the writer still caches reaches the disk first, so the new L1
   table copies nothing that is not on disk yet (QEMU writes its L1 entries
   through at once; txgraph's writer defers them to the flush);
2. ``qcow2_grow_l1_table(exact)``: when the new size needs more L1 entries,
   a new table of exactly that many entries goes to freshly allocated
   clusters (refcounts written back first), is synced, and the header's
   ``l1_size``/``l1_table_offset`` switch to it with one 12-byte synced write;
   the old table's clusters are then freed;
3. with an external data file, that file grows to the new size too;
4. ``BDRV_REQ_ZERO_WRITE`` (the block layer sets it when the backing file is
   longer than the old size, so its data must not show through): the new
   area from the old size rounded up to a subcluster becomes zero clusters
   (``qcow2_subcluster_zeroize``; v2 images with a backing file cannot,
   ENOTSUP), an unaligned head gets written zeros;
5. the header's ``size`` field is written (synced).

The compiled L2 map is sized for one virtual size, so it is made again for the
new one (nothing is dirty after step 1; the writer's pinned-slot set moves to
the new map's cache). Shrinking is not modelled (ENOTSUP): no job shrinks.

Lock discipline: everything runs under the node's ``lock`` (QEMU's
``s->lock``); callers run it drained (:func:`txgraph.io.truncate.blk_truncate`),
so no request holds an array of the old map while it is replaced.
"""

from __future__ import annotations

import errno as E
import os
import struct
from typing import TYPE_CHECKING

import numpy as np

from txgraph.errors import IOFailure
from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.l2map import L2Map

if TYPE_CHECKING:
    from collections.abc import Callable

    from txgraph.io.driver import DriverNode
    from txgraph.io.qcow2.driver import Qcow2Node
    from txgraph.io.qcow2.writer import Qcow2Writer

__all__ = ["qcow2_grow", "qcow2_extend_for_write"]

#: offsets of header fields (QCowHeader)
_SIZE_FIELD = 24
_L1_FIELDS = 36


def _err(code: int, desc: str | None = None) -> IOFailure:
    return IOFailure(desc or os.strerror(code), code)


def qcow2_grow(
    node: Qcow2Node,
    new_size: int,
    zero_write: bool,
    grow_child: Callable[[DriverNode, int], None],
) -> None:
    """``qcow2_co_truncate(offset=new_size, prealloc=off, flags)`` for a growing size;
    ``grow_child`` is the block layer's truncate, for an external data file."""
    if new_size % 512:
        raise _err(E.EINVAL, "The new size must be a multiple of 512")
    w = node._w()  # alive, writable and not corrupt, else EIO/EPERM/ENOMEDIUM
    with node.lock:
        h = node.header
        if h.snapshots and h.version < 3:
            raise _err(E.ENOTSUP, "Can't resize a v2 image which has snapshots")
        old = node.size()
        if new_size < old:
            raise _err(E.ENOTSUP, "Shrinking a qcow2 image is not supported by txgraph")
        w.flush()
        l1_span = h.cluster_size * h.l2_entries
        _grow_l1(node, w, -(-new_size // l1_span))
        dc = node.children.get("data-file")
        if h.has_data_file and dc is not None:
            grow_child(dc, new_size)
        old_header_size = h.size
        h.size = new_size
        _remap(node, w)
        try:
            if zero_write and new_size > old:
                _zero_new_area(node, w, old, new_size)
            w._fwrite(_SIZE_FIELD, struct.pack(">Q", new_size))
            w._sync()
        except BaseException:
            h.size = old_header_size
            w.flush()
            _remap(node, w)
            raise


def qcow2_extend_for_write(node: Qcow2Node, w: Qcow2Writer, end: int) -> None:
    """A parent writes past the image's end: the length grows in memory only.

    ``bdrv_co_write_req_finish`` sets ``total_sectors`` to the request's end in
    whole sectors and qcow2 writes there like anywhere else; ``get_cluster_table``
    grows the L1 table when the cluster lies beyond it (``qcow2_grow_l1_table``
    without ``exact_size``: the size is bumped by half until it fits). The
    header's ``size`` field stays as it is: nothing writes it (qcow2_update_header
    would, from the grown length, when something else changes the header).

    txgraph grows the length before the request instead of after it, and the L1
    table at the start of the request rather than at the first cluster it does not
    cover: the same result unless one request both allocates below and needs a
    larger L1 table.
    """
    h = node.header
    with node.lock:
        new_size = -(-end // 512) * 512
        if new_size <= node.size():
            return
        w.flush()  # the map is made again: nothing may be pending in the old one
        l1_span = h.cluster_size * h.l2_entries
        need = -(-new_size // l1_span)
        if need > h.l1_size:
            grown = max(h.l1_size, 1)
            while need > grown:
                grown = -(-grown * 3 // 2)
            _grow_l1(node, w, grown)
        h.size = new_size
        _remap(node, w)


def _grow_l1(node: Qcow2Node, w: Qcow2Writer, min_size: int) -> None:
    """``qcow2_grow_l1_table(bs, min_size, exact_size=true)``."""
    h = node.header
    if min_size <= h.l1_size:
        return
    if min_size > C.MAX_L1_SIZE // 8:
        raise _err(E.EFBIG)
    nbytes = min_size * 8
    clusters = -(-nbytes // h.cluster_size)
    node.announce("l1_grow_alloc_table")
    node.announce("cluster_alloc")  # qcow2_alloc_clusters
    offset = w.refs.alloc(clusters)
    try:
        w.refs.write_back()  # qcow2_cache_flush(refcount_block_cache)
        node.overlap.check(offset, nbytes)
        table = np.zeros(min_size, dtype=np.uint64)
        table[: h.l1_size] = node.l1[: h.l1_size]
        node.announce("l1_grow_write_table")
        w._fwrite(offset, table.astype(">u8").tobytes())
        w._sync()
        node.announce("l1_grow_activate_table")
        w._fwrite(_L1_FIELDS, struct.pack(">IQ", min_size, offset))
        w._sync()
    except BaseException:
        for c in range(offset // h.cluster_size, offset // h.cluster_size + clusters):
            w.refs.release(c)
        raise
    old_offset, old_size = h.l1_table_offset, h.l1_size
    h.l1_table_offset, h.l1_size = offset, min_size
    node.l1 = table
    if old_size:
        first = old_offset // h.cluster_size
        last = (old_offset + old_size * 8 - 1) // h.cluster_size
        for c in range(first, last + 1):  # qcow2_free_clusters (no discard: DISCARD_OTHER)
            w.refs.release(c)


def _remap(node: Qcow2Node, w: Qcow2Writer) -> None:
    """A map for the current header size and L1 table; the writer follows it."""
    pinned = w.dirty_slots
    assert not pinned, "the writer flushed before the map is made again"
    new = L2Map(node.header, node.l1, node._fread, node.options, node.announce)
    new.cache.pinned = pinned  # the writer's dirty set stays the one pinned set
    node.map = new
    w.map = new


def _zero_new_area(node: Qcow2Node, w: Qcow2Writer, old: int, new_size: int) -> None:
    """The ``BDRV_REQ_ZERO_WRITE`` part of ``qcow2_co_truncate``."""
    h = node.header
    sub = h.cluster_size // C.EXTL2_SUBCLUSTERS if h.extended_l2 else h.cluster_size
    zero_start = -(-old // sub) * sub
    if new_size > zero_start:
        if h.version < 3 and node.children.get("backing") is not None:
            # qcow2_subcluster_zeroize: v2 has no zero clusters to hide the backing with
            raise _err(E.ENOTSUP)
        w.write_zeroes(zero_start, new_size - zero_start, False)
    if zero_start > old:
        w.write(old, bytes(min(zero_start, new_size) - old))
