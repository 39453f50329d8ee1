"""The raw inflate QEMU's qcow and qcow2 run on a compressed cluster, exactly.

``qcow2_zlib_decompress`` (block/qcow2-threads.c) and qcow's
``decompress_buffer`` (block/qcow.c) set up raw inflate with window bits -12
and make **one** ``inflate(Z_FINISH)`` call into the whole cluster buffer; the
read succeeds when that call fills the buffer (``Z_STREAM_END``, or
``Z_BUF_ERROR`` with more output pending). Within one call zlib accepts a
back-reference anywhere in the output produced so far, so a stream whose
distances exceed the 4 KiB window still reads, up to deflate's own 32 KiB
limit.

Python's ``zlib.decompressobj(-12).decompress`` is not that call: it fills its
output in blocks (the first of 32 KiB) and calls ``inflate`` once per block,
and a block boundary limits back-references to the 4 KiB window again. On a
64 KiB cluster whose stream refers more than 4 KiB back across that
boundary, Python's zlib fails where QEMU reads (random streams found 2,547 of
60,000; ``tests/unit/io/test_inflate_semantics.py``). So this module calls the
system libz (the library QEMU links) through ctypes, the way QEMU does.

Fast path: zlib-ng's inflate with window bits -15 accepts exactly the streams
the one-call inflate accepts (every legal deflate distance, as long as it
points into the output so far) and decodes them to the same bytes, several
times faster on long runs (its overlapping copies are vectorised). It is tried
first; whenever it does not produce a whole cluster the libz call decides, so
every refusal, and every success zlib-ng might miss, is QEMU's own. The
property test compares both paths with the libz call on random and corrupted
streams.

Thread discipline: the library handle is immutable after import; each call
owns its stream state and buffers. Both libraries release the GIL while they
inflate (ctypes drops it for every foreign call).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from types import ModuleType

__all__ = ["InflateError", "inflate_cluster", "inflate_cluster_libz", "FAST_PATH"]


class InflateError(Exception):
    """The stream does not fill the cluster in QEMU's one inflate call."""


class _ZStream(ctypes.Structure):
    """zlib's ``z_stream`` (zlib.h); ``inflateInit2_`` checks the size we pass."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR, _Z_FINISH = 0, 1, -5, 4
#: QEMU's window bits for compressed clusters (raw deflate, 4 KiB window)
WINDOW_BITS = -12


def _load_libz() -> tuple[ctypes.CDLL, bytes]:
    lib = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1")
    stream = ctypes.POINTER(_ZStream)
    lib.zlibVersion.restype = ctypes.c_char_p
    lib.inflateInit2_.argtypes = [stream, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.inflateInit2_.restype = ctypes.c_int
    lib.inflate.argtypes = [stream, ctypes.c_int]
    lib.inflate.restype = ctypes.c_int
    lib.inflateEnd.argtypes = [stream]
    lib.inflateEnd.restype = ctypes.c_int
    version: bytes = lib.zlibVersion()
    return lib, version


# Python's own zlib module links this library, so it is present wherever Python is.
_LIBZ, _LIBZ_VERSION = _load_libz()


def inflate_cluster_libz(data: bytes, cluster_size: int) -> bytes:
    """QEMU's inflate of one cluster, made the way QEMU makes it (see the module docstring).

    :raise InflateError: the call does not fill ``cluster_size`` bytes.
    """
    stream = _ZStream()
    if (
        _LIBZ.inflateInit2_(
            ctypes.byref(stream), WINDOW_BITS, _LIBZ_VERSION, ctypes.sizeof(_ZStream)
        )
        != _Z_OK
    ):
        raise InflateError("inflateInit2 failed")
    src = ctypes.create_string_buffer(data, len(data))
    dst = ctypes.create_string_buffer(cluster_size)
    try:
        stream.next_in = ctypes.cast(src, ctypes.c_void_p)
        stream.avail_in = len(data)
        stream.next_out = ctypes.cast(dst, ctypes.c_void_p)
        stream.avail_out = cluster_size
        ret = _LIBZ.inflate(ctypes.byref(stream), _Z_FINISH)
        if ret not in (_Z_STREAM_END, _Z_BUF_ERROR) or stream.avail_out != 0:
            raise InflateError("the stream does not fill the cluster")
        return dst.raw
    finally:
        _LIBZ.inflateEnd(ctypes.byref(stream))


def _load_zlib_ng() -> ModuleType | None:
    try:
        from zlib_ng import zlib_ng
    except ImportError:  # an install without it reads alike, only slower
        return None
    return zlib_ng


_ZLIB_NG = _load_zlib_ng()
#: whether zlib-ng's fast path is in use (benchmarks report it)
FAST_PATH = _ZLIB_NG is not None


def inflate_cluster(data: bytes, cluster_size: int) -> bytes:
    """One cluster of plain data from a raw deflate stream, as QEMU reads it.

    :raise InflateError: QEMU's inflate call would not fill the cluster.
    """
    if _ZLIB_NG is not None:
        try:
            out: bytes = _ZLIB_NG.decompressobj(-15).decompress(data, cluster_size)
        except _ZLIB_NG.error:
            out = b""
        if len(out) == cluster_size:
            return out
    return inflate_cluster_libz(data, cluster_size)
