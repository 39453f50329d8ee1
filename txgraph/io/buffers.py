"""Page-aligned I/O buffers (what ``qemu_blockalign`` gives QEMU's block layer), and
reads into caller buffers.

A ``bytearray`` starts 16 bytes into a page (the allocator's header); glibc's
copy into such a destination measured several times slower for 4 KiB-1 MiB
than into a page-aligned one. Anonymous mappings are always page-aligned,
zero-filled and returned to the kernel when the last view goes.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import Any

from txgraph.io.driver import reacts_to_events

__all__ = ["aligned_buffer", "announced_reader", "child_readinto", "PAGE"]

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


def announced_reader(child: Any, event: str) -> Callable[[int, memoryview], None]:
    """``child``'s read into a caller buffer, announcing ``event`` first
    (``BLKDBG_EVENT(bs->file, event)`` before a format driver's data request).

    Only blkdebug reacts to announcements; for every other child the result is
    its bound ``readinto`` itself, so a caller that keeps it (per child) pays
    for neither the announcement nor the lookup on each request.
    """
    ri = getattr(child, "readinto", None)
    if ri is not None and not reacts_to_events(child):
        return ri  # type: ignore[no-any-return]

    def read(offset: int, out: memoryview) -> None:
        child.debug_event(event)
        child_readinto(child, offset, out)

    return read
