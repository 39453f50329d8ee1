"""Decompression of qcow2 compressed clusters (zlib raw deflate and zstd).

Reproduces QEMU 7.2's ``qcow2_zlib_decompress`` (raw deflate, window 2^12,
success only when exactly one cluster of output was produced) and
``qcow2_zstd_decompress`` (streaming, output bounded by the cluster size).
The zstd path calls the system ``libzstd`` (QEMU links the same library) via
ctypes, so no extra Python dependency is needed. Output is never larger than
one cluster, whatever the input claims (CVE-2015-5162 class: bounded work).

Inflate: :mod:`txgraph.io.qcow2.inflate` makes QEMU's one ``inflate(Z_FINISH)``
call (window bits -12), with zlib-ng as a fast path that accepts the same
streams; Python's own ``zlib.decompressobj`` does not (its output blocks limit
back-references to the 4 KiB window again).

Parallel inflate: QEMU's ``qcow2_co_preadv_part`` runs up to
``QCOW2_MAX_WORKERS`` (8) cluster tasks of one request at once, each
decompressing in the thread pool (``qcow2_co_decompress``).
:func:`decompress_many` does the same for the compressed clusters of one
request: zlib and libzstd release the GIL while they work.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from txgraph.io.qcow2 import zstd
from txgraph.io.qcow2.inflate import InflateError, inflate_cluster

__all__ = [
    "decompress",
    "decompress_many",
    "DecompressError",
    "ClusterCache",
    "zstd_available",
    "MAX_WORKERS",
]

#: QEMU's QCOW2_MAX_WORKERS: cluster tasks of one request at once
MAX_WORKERS = 8
#: mean stored bytes per compressed cluster below which the clusters of a request are
#: inflated in the caller's thread: a stream that short inflates in a few microseconds
#: (long matches), less than handing it to a pool thread and back costs
PARALLEL_MIN_STORED = 4096
_CPUS = os.cpu_count() or 1


class DecompressError(Exception):
    """The stream does not decode to exactly one cluster."""


def _zlib(data: bytes, cluster_size: int) -> bytes:
    try:
        return inflate_cluster(data, cluster_size)
    except InflateError as e:
        raise DecompressError(str(e)) from None


def zstd_available() -> bool:
    return zstd.LIB is not None


def _zstd(data: bytes, cluster_size: int) -> bytes:
    lib = zstd.LIB
    if lib is None:
        raise DecompressError("libzstd is not available")
    dctx = lib.ZSTD_createDCtx()
    try:
        src = ctypes.create_string_buffer(data, len(data))
        dst = ctypes.create_string_buffer(cluster_size)
        inb = zstd.Buffer(ctypes.cast(src, ctypes.c_void_p), len(data), 0)
        outb = zstd.Buffer(ctypes.cast(dst, ctypes.c_void_p), cluster_size, 0)
        # Like QEMU: feed input until the output cluster is full or input ends.
        while outb.pos < cluster_size and inb.pos < inb.size:
            ret = lib.ZSTD_decompressStream(dctx, ctypes.byref(outb), ctypes.byref(inb))
            if lib.ZSTD_isError(ret):
                raise DecompressError("zstd error")
            if ret == 0 and outb.pos < cluster_size and inb.pos >= inb.size:
                break
        if outb.pos != cluster_size:
            raise DecompressError("short zstd stream")
        return dst.raw
    finally:
        lib.ZSTD_freeDCtx(dctx)


def decompress(compression_type: int, data: bytes, cluster_size: int) -> bytes:
    """One cluster of plain data from a compressed stream (0 = zlib, 1 = zstd)."""
    return _zstd(data, cluster_size) if compression_type == 1 else _zlib(data, cluster_size)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """The process's inflate pool (made on first use; its lock only guards the making)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = max(1, min(MAX_WORKERS, _CPUS))
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="txgraph-inflate")
        return _pool


def decompress_many(
    compression_type: int,
    extents: list[tuple[int, int]],
    fetch: Callable[[int, int], bytes],
    cluster_size: int,
) -> list[bytes | None]:
    """Inflate several clusters at once: ``fetch(offset, length)`` reads each stream.

    An entry is None when its read or its stream failed, or when the streams are too
    short to be worth a thread (:data:`PARALLEL_MIN_STORED`): the caller's ordinary
    one-cluster path then inflates it, or meets (and reports) the same failure, so
    errors are exactly those of :func:`decompress`.
    """

    def one(extent: tuple[int, int]) -> bytes | None:
        try:
            return decompress(compression_type, fetch(*extent), cluster_size)
        except Exception:  # re-raised by the caller's sequential path, with its mapping
            return None

    stored = sum(length for _, length in extents)
    if len(extents) < 2 or _CPUS < 2 or stored < PARALLEL_MIN_STORED * len(extents):
        return [None] * len(extents)
    return list(_executor().map(one, extents))


class ClusterCache:
    """A small LRU of decompressed clusters keyed by their compressed host extent.

    Random small reads of a compressed image would otherwise inflate a whole
    cluster per request (the reference measured 3 400 IOPS without a cache).
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._d: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def get(self, key: tuple[int, int]) -> bytes | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: tuple[int, int], value: bytes) -> None:
        self._d[key] = value
        if len(self._d) > self.capacity:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()
