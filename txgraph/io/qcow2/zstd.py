"""The system libzstd through ctypes: the one binding qcow2's compressed reads and writes share.

``compression_type=zstd`` clusters (qcow2 v3) are zstd frames; QEMU 7.2 streams
them (``ZSTD_decompressStream`` into one cluster, ``ZSTD_compressStream2``
with ``ZSTD_e_end`` into ``cluster_size - 1`` bytes). Loaded once at import;
when libzstd is missing, :data:`LIB` is None and the callers answer as QEMU
built without zstd would (EIO on such a cluster).

Thread discipline: the library object is immutable after loading; each call
makes and frees its own context.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["LIB", "Buffer", "E_END"]

#: ``ZSTD_e_end``: finish the frame in this call
E_END = 2


class Buffer(ctypes.Structure):
    """``ZSTD_inBuffer`` / ``ZSTD_outBuffer`` (the same layout: pointer, size, position)."""

    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


def _load() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
    except OSError:
        return None
    buf = ctypes.POINTER(Buffer)
    lib.ZSTD_createCCtx.restype = ctypes.c_void_p
    lib.ZSTD_freeCCtx.argtypes = [ctypes.c_void_p]
    lib.ZSTD_compressStream2.argtypes = [ctypes.c_void_p, buf, buf, ctypes.c_int]
    lib.ZSTD_compressStream2.restype = ctypes.c_size_t
    lib.ZSTD_createDCtx.restype = ctypes.c_void_p
    lib.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
    lib.ZSTD_decompressStream.argtypes = [ctypes.c_void_p, buf, buf]
    lib.ZSTD_decompressStream.restype = ctypes.c_size_t
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    lib.ZSTD_isError.restype = ctypes.c_uint
    return lib


LIB = _load()
