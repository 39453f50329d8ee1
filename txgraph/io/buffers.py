"""Page-aligned I/O buffers (what ``qemu_blockalign`` gives QEMU's block layer).

A ``bytearray`` starts 16 bytes into a page (the allocator's header); glibc's
copy into such a destination measured several times slower for 4 KiB-1 MiB
than into a page-aligned one. Anonymous mappings are always page-aligned,
zero-filled and returned to the kernel when the last view goes.
"""

from __future__ import annotations

import mmap

__all__ = ["aligned_buffer", "PAGE"]

PAGE = mmap.PAGESIZE


def aligned_buffer(n: int) -> memoryview:
    """A writable, zero-filled, page-aligned buffer of ``n`` bytes (``n`` may be 0)."""
    if n <= 0:
        return memoryview(bytearray(0))
    return memoryview(mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
