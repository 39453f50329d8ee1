"""The raw deflate stream QEMU's qcow and qcow2 write for a compressed cluster.

``qcow2_compress`` (block/qcow2-threads.c) and ``qcow_co_pwritev_compressed``
(block/qcow.c) both run zlib with its default level, no zlib header and a
4 KiB window (``windowBits`` -12), ``memLevel`` 9 and the default strategy,
over the system zlib, which Python's ``zlib`` links too: the same bytes.
"""

from __future__ import annotations

import zlib

__all__ = ["raw_deflate"]


def raw_deflate(data: bytes) -> bytes:
    """``data`` as one finished raw deflate stream."""
    stream = zlib.compressobj(
        zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9, zlib.Z_DEFAULT_STRATEGY
    )
    return stream.compress(data) + stream.flush(zlib.Z_FINISH)
