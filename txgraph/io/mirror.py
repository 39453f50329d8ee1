"""The data-plane half of a mirror job: the dirty bitmap and ``mirror_top``'s write path.

QEMU's ``bdrv_mirror_top`` (block/mirror.c) sits above the mirror's source. A
guest write goes to the source and then, in ``background`` copy mode, marks
the written range dirty so the job copies it again; in ``write-blocking``
mode (and, in txgraph, from the moment a finishing job has found source and
target in sync until its pivot) the write is also written to the target
before it completes, so the target never falls behind.

Lock discipline: a :class:`DirtyBitmap` is shared by guest request threads
(marking) and the job thread (taking chunks); its ``_lock`` guards the set and
is never held while doing I/O. :class:`MirrorSink` is installed on the
mirror_top driver object by the job before the job starts and removed at the
job's end; it is read by request threads inside ``Runtime.request()``, and
replaced only by the control path under drain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from txgraph.io.driver import DriverNode

__all__ = ["DirtyBitmap", "MirrorSink"]


class DirtyBitmap:
    """``BdrvDirtyBitmap`` at a granularity: the chunks that still differ on the target."""

    def __init__(self, granularity: int, length: int) -> None:
        self.granularity = granularity
        self.length = length
        self._dirty: set[int] = set()
        self._lock = threading.Lock()

    def mark(self, offset: int, length: int) -> None:
        """``bdrv_set_dirty_bitmap``."""
        if length <= 0:
            return
        g = self.granularity
        with self._lock:
            self._dirty.update(range(offset // g, (offset + length - 1) // g + 1))

    def count(self) -> int:
        """``bdrv_get_dirty_count``: dirty bytes."""
        with self._lock:
            n = len(self._dirty)
            last = (self.length - 1) // self.granularity if self.length else -1
            tail = self.length - last * self.granularity if last in self._dirty else 0
        return (n - (1 if tail else 0)) * self.granularity + tail

    def take_range(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The dirty runs overlapping ``[offset, offset+length)``, whole chunks, cleared."""
        if length <= 0:
            return []
        g = self.granularity
        first, last = offset // g, (offset + length - 1) // g
        with self._lock:
            hit = sorted(c for c in range(first, last + 1) if c in self._dirty)
            for c in hit:
                self._dirty.discard(c)
        runs: list[tuple[int, int]] = []
        for c in hit:
            start = c * g
            n = min(start + g, self.length) - start
            if runs and runs[-1][0] + runs[-1][1] == start:
                runs[-1] = (runs[-1][0], runs[-1][1] + n)
            else:
                runs.append((start, n))
        return runs

    def take(self, max_bytes: int) -> tuple[int, int] | None:
        """The first dirty run (at most ``max_bytes``), cleared: ``(offset, length)``."""
        g = self.granularity
        with self._lock:
            if not self._dirty:
                return None
            first = min(self._dirty)
            run = first
            while run + 1 in self._dirty and (run + 2 - first) * g <= max(max_bytes, g):
                run += 1
            for chunk in range(first, run + 1):
                self._dirty.discard(chunk)
        offset = first * g
        return offset, min((run + 1) * g, self.length) - offset


#: writes a guest request's data to the target (``do_sync_target_write``)
TargetWrite = Callable[[int, bytes | None, int], None]


class MirrorSink:
    """What mirror_top does with a guest write after the source took it."""

    def __init__(self, bitmap: DirtyBitmap, target: Callable[[], DriverNode]) -> None:
        self.bitmap = bitmap
        self._target = target
        #: write-blocking: copy to the target synchronously (``copy-mode`` or a finishing job)
        self.active = False
        #: counts each synchronous copy in the job's progress (``copy-mode: write-blocking``
        #: does, ``job_progress_increase_remaining`` + ``job_progress_update``)
        self.on_active_write: Callable[[int], None] | None = None

    def wrote(self, offset: int, data: bytes | None, length: int, zero: bool) -> None:
        """Called by mirror_top after the source completed the request."""
        if not self.active:
            self.bitmap.mark(offset, length)
            return
        target = self._target()
        if data is not None and not zero:
            target.write(offset, data)
        else:
            target.write_zeroes(offset, length, may_unmap=False)
        counter = self.on_active_write
        if counter is not None:
            counter(length)
