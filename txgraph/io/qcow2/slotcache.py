"""The bound on compiled L2 slots: an LRU with QEMU's cache-size semantics.

QEMU keeps L2 tables in a fixed-size cache (``qcow2_cache_create`` with the
size from ``read_cache_sizes``: the ``l2-cache-size`` option, else a share of
``cache-size``, else at most 32 MiB on Linux, never less than two tables) and
drops entries unused for ``cache-clean-interval`` seconds
(``cache_clean_timer_cb``, default 600 s). The compiled map of txgraph
(:class:`~txgraph.io.qcow2.l2map.L2Map`) holds one decoded copy of each touched
L2 table, so the same two rules bound it here:

* at most ``cap`` slots are held; compiling one more evicts the least recently
  used slot that is not *pinned*;
* when ``interval`` > 0, a compile that happens ``interval`` seconds or more
  after the last clean drops every unpinned slot not used since that clean
  (QEMU runs a timer; txgraph cleans lazily, on the next compile, which frees
  the same slots without a thread).

Pinned slots are the ones with unwritten changes (the writer's dirty set, until
the next flush): they are never evicted, so the cache may exceed ``cap`` by
their number until the flush. Recency is updated on compile and on lookups that
go through :meth:`touch`; the driver's one-cluster read fast path does not
touch (it only reads an already compiled slot), which makes the order an
approximation of LRU, as QEMU's own per-entry ``lru_counter`` is.

Lock discipline: a SlotCache belongs to one L2Map and is only used through
it, under the owning node's ``lock`` (``Qcow2Node.lock``): every
:meth:`touch`, :meth:`add`, :meth:`forget` and eviction happens in a compile
or lookup that holds it, and ``pinned`` is the writer's ``dirty_slots`` set,
changed (in place, never rebound) only under that lock. The lock-free read
path of the driver never calls into the cache; it indexes an already compiled
``codes`` array, which an eviction only unpublishes (the array a reader holds
stays valid; the next lookup recompiles under the lock). A slot is pinned in
the same locked section in which its entries change, and stays pinned until
the flush that wrote it clears the set.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["SlotCache", "DEFAULT_L2_CACHE_BYTES", "MIN_SLOTS", "cache_limits"]

#: QEMU's DEFAULT_L2_CACHE_MAX_SIZE on Linux
DEFAULT_L2_CACHE_BYTES = 32 << 20
#: QEMU's MIN_L2_CACHE_SIZE (tables)
MIN_SLOTS = 2
#: QEMU's DEFAULT_CACHE_CLEAN_INTERVAL (seconds)
DEFAULT_CLEAN_INTERVAL = 600


def _size(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def cache_limits(
    options: Mapping[str, Any], cluster_size: int, table_bytes: int
) -> tuple[int, float]:
    """(slot cap, clean interval) from the qcow2 options, as ``read_cache_sizes`` sizes them.

    ``table_bytes`` is what one compiled slot stands for on disk (one L2 table).
    ``l2-cache-size`` wins; with only ``cache-size``, QEMU gives the L2 cache
    what the whole disk needs within that total (approximated here by the
    total minus the default refcount cache of 4 clusters).
    """
    l2 = _size(options.get("l2-cache-size"))
    total = _size(options.get("cache-size"))
    if l2 is None and total is not None:
        l2 = max(0, total - 4 * cluster_size)
    if l2 is None:
        l2 = DEFAULT_L2_CACHE_BYTES
    cap = max(MIN_SLOTS, l2 // max(1, table_bytes))
    interval = _size(options.get("cache-clean-interval"))
    return cap, float(DEFAULT_CLEAN_INTERVAL if interval is None else interval)


class SlotCache:
    """Which compiled slots are held, in recency order, and which are pinned."""

    def __init__(
        self,
        cap: int,
        drop: Callable[[int], None],
        interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cap = max(MIN_SLOTS, cap)
        self.interval = interval
        self._drop = drop
        self._clock = clock
        self._order: OrderedDict[int, float] = OrderedDict()
        self._last_clean = clock()
        #: slots with unwritten changes; the writer adds and clears them
        self.pinned: set[int] = set()
        #: counters for tests and diagnostics
        self.compiles = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._order)

    def held(self) -> Iterable[int]:
        return list(self._order)

    def touch(self, i: int) -> None:
        if i in self._order:
            self._order[i] = self._clock()
            self._order.move_to_end(i)
            if len(self._order) > self.cap:  # slots unpinned by a flush are over the cap
                self._trim(i)

    def _trim(self, keep: int) -> None:
        for k in list(self._order):
            if len(self._order) <= self.cap:
                break
            if k != keep and k not in self.pinned:
                self._evict(k)

    def add(self, i: int) -> None:
        """Record that slot ``i`` was just compiled; evict what the bounds require."""
        now = self._clock()
        self.compiles += 1
        self._order[i] = now
        self._order.move_to_end(i)
        if self.interval > 0 and now - self._last_clean >= self.interval:
            stale = [
                k
                for k, used in self._order.items()
                if used < self._last_clean and k not in self.pinned and k != i
            ]
            for k in stale:
                self._evict(k)
            self._last_clean = now
        if len(self._order) > self.cap:
            self._trim(i)

    def forget(self, i: int) -> None:
        self._order.pop(i, None)

    def _evict(self, i: int) -> None:
        self._order.pop(i, None)
        self.evictions += 1
        self._drop(i)
