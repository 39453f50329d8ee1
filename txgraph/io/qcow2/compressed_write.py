"""Compressed cluster writes: ``BDRV_REQ_WRITE_COMPRESSED`` on a qcow2 node.

Reproduces QEMU 7.2's ``qcow2_co_pwritev_compressed_part`` and its task
(``qcow2_co_pwritev_compressed_task``):

* no external data file (ENOTSUP); the request starts on a cluster boundary
  and covers whole clusters, except a last one ending at the image end
  (EINVAL otherwise); each cluster is one task;
* the cluster (zero-padded at the image end) is compressed into at most
  ``cluster_size - 1`` bytes: zlib raw deflate (window 2^12, memLevel 9, the
  default level: ``qcow2_zlib_compress``) or one ``ZSTD_compressStream2``
  call (``qcow2_zstd_compress``); output that does not fit is written as a
  normal cluster instead;
* ``qcow2_alloc_compressed_cluster_offset``: the L2 table is made writable
  (allocated or copied first, as ``get_cluster_table`` does), an entry that
  already has a host offset is EIO (compression never overwrites), the bytes
  come from ``qcow2_alloc_bytes`` (streams are packed one after the other,
  a stream may run into the next cluster when that one is the next free one;
  every cluster a stream touches gets one more reference) and the entry is
  ``offset | COMPRESSED | (sectors - 1) << csize_shift`` (bitmap 0 with
  extended L2); the metadata overlap check passes before the data write.

The descriptor layout is the reader's (``L2Map.compressed_extent`` decodes
what :func:`descriptor` encodes). Python's zlib is the zlib QEMU links, so the
streams are byte for byte QEMU's for the same input.

Differences, on purpose: the data is written before the L2 entry is set (QEMU
sets the entry, then writes: a failed write there leaves an entry pointing at
garbage; here the bytes are given back and nothing points at them).

Lock discipline: the compression runs without the node lock; allocation, the
data write and the entry update run in one section under the node's ``lock``
(QEMU holds ``s->lock`` for the allocation). ``_FREE_BYTE`` (QEMU's
``s->free_byte_offset``, per writer) is read and written only under that lock.
"""

from __future__ import annotations

import ctypes
import errno as E
import os
import weakref
from typing import TYPE_CHECKING

from txgraph.errors import IOFailure
from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2 import zstd
from txgraph.io.qcow2.deflate import raw_deflate

if TYPE_CHECKING:
    from txgraph.io.qcow2.driver import Qcow2Node
    from txgraph.io.qcow2.writer import Qcow2Writer

__all__ = ["compress_cluster", "descriptor", "write_compressed"]

#: ``s->free_byte_offset`` of each writer (guarded by its node's lock)
_FREE_BYTE: weakref.WeakKeyDictionary[Qcow2Writer, int] = weakref.WeakKeyDictionary()


def _zstd(data: bytes, limit: int) -> bytes | None:
    lib = zstd.LIB
    if lib is None:
        raise IOFailure(os.strerror(E.EIO), E.EIO)
    cctx = lib.ZSTD_createCCtx()
    try:
        src = ctypes.create_string_buffer(data, len(data))
        dst = ctypes.create_string_buffer(limit)
        inb = zstd.Buffer(ctypes.cast(src, ctypes.c_void_p), len(data), 0)
        outb = zstd.Buffer(ctypes.cast(dst, ctypes.c_void_p), limit, 0)
        ret = lib.ZSTD_compressStream2(cctx, ctypes.byref(outb), ctypes.byref(inb), zstd.E_END)
        if ret:
            if lib.ZSTD_isError(ret):
                raise IOFailure(os.strerror(E.EIO), E.EIO)
            return None  # the output did not fit
        return dst.raw[: outb.pos]
    finally:
        lib.ZSTD_freeCCtx(cctx)


def compress_cluster(compression_type: int, data: bytes, cluster_size: int) -> bytes | None:
    """``qcow2_co_compress`` into ``cluster_size - 1`` bytes; None when it does not fit."""
    limit = cluster_size - 1
    if compression_type == 1:
        return _zstd(data, limit)
    out = raw_deflate(data)
    return out if len(out) <= limit else None


def descriptor(node: Qcow2Node, host: int, size: int) -> int:
    """The L2 entry of a compressed stream of ``size`` bytes at ``host``."""
    m = node.map
    sectors = (host + size - 1) // 512 - host // 512
    assert sectors & m.cmp_size_mask == sectors
    return host | C.OFLAG_COMPRESSED | (sectors << m.cmp_shift)


def write_compressed(node: Qcow2Node, offset: int, data: bytes) -> None:
    """``qcow2_co_pwritev_compressed_part``: one compressed cluster per cluster of ``data``."""
    w = node._w()
    h = node.header
    cs = h.cluster_size
    if h.has_data_file:
        raise IOFailure(os.strerror(E.ENOTSUP), E.ENOTSUP)
    if not data:
        return
    size = node.size()
    if offset % cs or (len(data) % cs and offset + len(data) != size):
        raise IOFailure(os.strerror(E.EINVAL), E.EINVAL)
    if offset < 0 or offset + len(data) > size:
        raise IOFailure(os.strerror(E.EIO), E.EIO)
    for pos in range(0, len(data), cs):
        chunk = bytes(data[pos : pos + cs])
        _one_cluster(node, w, offset + pos, chunk)


def _one_cluster(node: Qcow2Node, w: Qcow2Writer, offset: int, chunk: bytes) -> None:
    """``qcow2_co_pwritev_compressed_task``."""
    h = node.header
    cs = h.cluster_size
    buf = chunk + bytes(cs - len(chunk))
    out = compress_cluster(h.compression_type, buf, cs)
    if out is None:
        w.write(offset, chunk)  # could not compress: a normal cluster
        return
    c = offset >> h.cluster_bits
    with node.lock:
        w._writable_slot(c >> node.map.l2b)  # get_cluster_table
        raw, _bm = node.map.raw_entry(c)
        if raw & C.L2E_OFFSET_MASK:
            raise IOFailure(os.strerror(E.EIO), E.EIO)  # compression never overwrites
        w._before_metadata_change()
        host = _alloc_bytes(node, w, len(out))
        # the entry is set in the cached table before the stream is written
        node.announce("l2_update_compressed")
        try:
            node.overlap.check_data(host, len(out))
            node.file.debug_event("write_compressed")
            node.file.write(host, out)
        except BaseException:
            _unref_bytes(w, host, len(out))
            raise
        node.map.set_entry(c, descriptor(node, host, len(out)), 0)
        w.dirty_slots.add(c >> node.map.l2b)
        # a reused host extent must not answer from an old decompressed copy
        node.cache.put(node.map.compressed_extent(descriptor(node, host, len(out))), buf)


def _alloc_bytes(node: Qcow2Node, w: Qcow2Writer, size: int) -> int:
    """``qcow2_alloc_bytes``: ``size`` bytes packed after the previous stream."""
    refs = w.refs
    cs = node.header.cluster_size
    node.announce("cluster_alloc_bytes")
    offset = _FREE_BYTE.get(w, 0)
    if offset and refs.get(offset // cs) == refs.max:
        offset = 0
    free_in_cluster = cs - (offset % cs)
    if not offset or free_in_cluster < size:
        new = refs._first_free(refs.next_free)  # alloc_clusters_noref: one cluster
        if new == 0:
            raise node.signal_corruption(
                "Preventing invalid allocation of compressed cluster at offset 0"
            )
        refs.next_free = new + 1
        if not offset or -(-offset // cs) != new:
            offset = new * cs
    # disk space for the stream before anything refers to it (ENOSPC changes nothing);
    # only its bytes: QEMU's file, too, ends where the last stream ends
    refs._reserve(offset, size)
    first, last = offset // cs, (offset + size - 1) // cs
    for k in range(first, last + 1):  # update_refcount(offset, size, +1)
        refs.add(k, 1)
    end = offset + size
    _FREE_BYTE[w] = 0 if end % cs == 0 else end
    return offset


def _unref_bytes(w: Qcow2Writer, host: int, size: int) -> None:
    """Give back what :func:`_alloc_bytes` took for a stream that was never referenced."""
    cs = w.cs
    for k in range(host // cs, (host + size - 1) // cs + 1):
        w.refs.release(k)
    _FREE_BYTE[w] = 0
