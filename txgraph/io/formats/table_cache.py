"""The metadata-table caches of QEMU's qcow, vmdk and qed drivers.

Which table reads reach the ``file`` child (and so which ``l2_load`` events a
blkdebug node below sees, and which reads an armed error rule can fail) is
decided by these caches, so txgraph keeps them as QEMU 7.2 does:

* :class:`CountingCache` is qcow's and vmdk's L2 cache (``get_cluster_offset``:
  16 tables, a hit counts up - all counts halve when one would reach
  0xffffffff - and a miss replaces the first table with the lowest count);
* :class:`LruCache` is qed's (``qed-l2-cache.c``: the least recently found
  table is dropped once the cache holds more than its limit).

Tables are written through: the driver updates the cached copy together with the
file. Lock discipline: a cache is owned by its format node and only used under
that node's ``lock``.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["CountingCache", "LruCache"]


class CountingCache:
    """``l2_cache``/``l2_cache_offsets``/``l2_cache_counts`` of qcow and vmdk."""

    def __init__(self, size: int = 16) -> None:
        self.offsets = [0] * size
        self.counts = [0] * size
        self.tables: list[bytearray | None] = [None] * size

    def find(self, offset: int) -> bytearray | None:
        """The cached table at ``offset`` (a hit counts), or None."""
        for i, cached in enumerate(self.offsets):
            if cached == offset and self.tables[i] is not None:
                self.counts[i] += 1
                if self.counts[i] == 0xFFFFFFFF:
                    self.counts = [c >> 1 for c in self.counts]
                return self.tables[i]
        return None

    def insert(self, offset: int, table: bytearray) -> bytearray:
        """Load ``table`` into the least used slot (the first of the lowest count)."""
        slot = min(range(len(self.counts)), key=lambda i: (self.counts[i], i))
        self.offsets[slot], self.counts[slot], self.tables[slot] = offset, 1, table
        return table

    def clear(self) -> None:
        size = len(self.offsets)
        self.offsets, self.counts, self.tables = [0] * size, [0] * size, [None] * size


class LruCache:
    """qed's ``L2TableCache``: found tables move to the end, the oldest goes first."""

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self.tables: OrderedDict[int, bytearray] = OrderedDict()

    def find(self, offset: int) -> bytearray | None:
        table = self.tables.get(offset)
        if table is not None:
            self.tables.move_to_end(offset)
        return table

    def insert(self, offset: int, table: bytearray) -> bytearray:
        self.tables[offset] = table
        self.tables.move_to_end(offset)
        while len(self.tables) > self.limit:
            self.tables.popitem(last=False)
        return table

    def clear(self) -> None:
        self.tables.clear()
