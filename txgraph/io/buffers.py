"""Page-aligned I/O buffers (what ``qemu_blockalign`` gives QEMU's block layer), and
reads into caller buffers.

A ``bytearray`` starts 16 bytes into a page (the allocator's header); glibc's
copy into such a destination measured several times slower for 4 KiB-1 MiB
than into a page-aligned one. Anonymous mappings are always page-aligned,
zero-filled and returned to the kernel when the last view goes.
"""

from __future__ import annotations

import mmap
from typing import Any

__all__ = ["aligned_buffer", "child_readinto", "PAGE"]

PAGE = mmap.PAGESIZE


def aligned_buffer(n: int) -> memoryview:
    """A writable, zero-filled, page-aligned buffer of ``n`` bytes (``n`` may be 0)."""
    if n <= 0:
        return memoryview(bytearray(0))
    return memoryview(mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))


def child_readinto(child: Any, offset: int, out: memoryview) -> None:
    """Read through a node's ``readinto`` fast path when it has one, else its ``read``."""
    ri = getattr(child, "readinto", None)
    if ri is not None:
        ri(offset, out)
    else:
        out[:] = child.read(offset, len(out))
