"""qcow2 refcounts: lookup, update, cluster allocation, table growth.

Reproduces the on-disk effects of QEMU 7.2's block/qcow2-refcount.c
(``qcow2_get_refcount``, ``update_refcount``, ``alloc_refcount_block``,
``qcow2_alloc_clusters``, ``qcow2_refcount_area``) with a simpler policy:

* allocation takes the first cluster with refcount 0, scanning from the start
  of the image at open as ``alloc_clusters_noref`` does from
  ``free_cluster_index`` 0 (so a hostile refcount of 0 on a metadata cluster
  leads to the same overlap-check refusal as in QEMU); a cluster whose
  refcount drops to 0 moves the scan position back to it, as
  ``update_refcount`` does — the writer releases clusters only after the
  change that unreferenced them is on disk (after the flush), so the reuse
  can never alias an entry a crash would bring back;
* a run a write continues right after host clusters it already gathered is
  placed exactly there, as many clusters as are free
  (``qcow2_alloc_clusters_at``, :meth:`Refcounts.free_run_at` and ``plan(at=)``),
  and leaves the scan position where it was;
* before a refcount block is written back, the metadata-overlap check runs
  (``qcow2_cache_entry_flush`` with ``QCOW2_OL_REFCOUNT_BLOCK`` ignored), and
  an unaligned refcount block offset is a corruption
  (``qcow2_get_refcount``), reported through the node's
  ``signal_corruption``;
* a refcount that would drop below 0 is not changed (``update_refcount``
  refuses with -EINVAL and ``qcow2_free_clusters`` only logs it);
* refcount blocks are cached decoded (numpy uint64, any width 1..64 bits,
  sub-byte widths LSB-first) and written back by :meth:`Refcounts.write_back`,
  which the writer calls *before* the L2/L1 updates that need them (the
  "L2 cache depends on refcount cache" rule), so a crash can only leak;
* a new refcount block describes itself when it falls inside its own range;
* a full refcount table is replaced by a larger, self-describing one written
  to fresh clusters and switched in the header with one 12-byte write between
  two flushes; the old table is freed afterwards;
* every cluster handed out by :meth:`Refcounts.alloc` (data, L2 tables) or
  taken for a new refcount block is first backed by disk space with the
  ``reserve`` callback (the file driver's ``fallocate``), so a full disk fails
  the allocation before any metadata refers to the cluster.

Owner and lock: the :class:`~.writer.Qcow2Writer`; every call happens under
the node's ``lock`` (QEMU's ``s->lock``); this class takes no lock itself.
That covers the allocation state added for QEMU's placement (``next_free``
lowered by :meth:`Refcounts.release`, the run planned by :meth:`Refcounts.plan`
for the next :meth:`Refcounts.alloc_data`: plan and allocation happen in one
locked section of the writer). The overlap check and ``signal_corruption``
called from here (write-back, unaligned refcount block) run under the same,
re-entrant lock.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from txgraph.errors import IOFailure
from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.header import Qcow2Header
from txgraph.io.qcow2.overlap import OL_REFCOUNT_BLOCK
from txgraph.io.qcow2.validate import refblock_message

if TYPE_CHECKING:
    from txgraph.io.qcow2.driver import Qcow2Node

__all__ = ["Refcounts"]

ReadFn = Callable[[int, int], bytes]
WriteFn = Callable[[int, bytes], None]
ReserveFn = Callable[[int, int], None]


class Refcounts:
    """The refcount table and the refcount blocks touched so far."""

    def __init__(
        self,
        h: Qcow2Header,
        read: ReadFn,
        write: WriteFn,
        sync: Callable[[], None],
        file_length: int,
        reserve: ReserveFn | None = None,
        table_raw: bytes | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.h = h
        self._reserve: ReserveFn = reserve or (lambda offset, length: None)
        self._read, self._write, self._sync = read, write, sync
        self.cs = h.cluster_size
        self.bits = h.refcount_bits
        self.max = (1 << self.bits) - 1
        self.epb = self.cs * 8 // self.bits
        #: ``BLKDBG_EVENT`` on the image's file child (the node's ``announce``)
        self.announce: Callable[[str], None] = announce or (lambda event: None)
        raw = table_raw
        if raw is None:  # (the node read it at open unless a writer was made before)
            raw = read(h.refcount_table_offset, h.refcount_table_clusters * self.cs)
        self.table = np.frombuffer(raw, dtype=">u8").astype(np.uint64) & np.uint64(
            C.REFT_OFFSET_MASK
        )
        self.blocks: dict[int, np.ndarray] = {}
        self.dirty_blocks: set[int] = set()
        self.dirty_table: set[int] = set()
        #: next cluster index to try when allocating (QEMU's free_cluster_index)
        self.next_free = 0
        self._node: Qcow2Node | None = None
        self._plan = 0
        #: where the planned run must start (``qcow2_alloc_clusters_at``), else None
        self._at: int | None = None
        #: during a run placed at a given cluster: (free_cluster_index before it, the
        #: run's end), restored once the run is allocated (QEMU's index never moved)
        self._resume: tuple[int, int] | None = None
        #: the end of the planned run being allocated (0: none): QEMU allocates the run
        #: at once, so a refcount block it needs goes after the whole run
        self._run_end = 0
        #: ``qcow2_cache_flush(l2_table_cache)``, set by the writer once it is ready:
        #: a new refcount block first makes the L2 tables stable (``alloc_refcount_block``)
        self.flush_l2: Callable[[], None] | None = None

    def install(self, node: Qcow2Node) -> None:
        """Route overlap checks and corruption reports through ``node``."""
        self._node = node

    # -- block codec -----------------------------------------------------------
    def _decode(self, buf: bytes) -> np.ndarray:
        if self.bits >= 8:
            return np.frombuffer(buf, dtype=f">u{self.bits // 8}").astype(np.uint64)
        b = np.frombuffer(buf, dtype=np.uint8)
        shifts = np.arange(0, 8, self.bits, dtype=np.uint8)
        return ((b[:, None] >> shifts) & self.max).astype(np.uint64).reshape(-1)

    def _encode(self, vals: np.ndarray) -> bytes:
        if self.bits >= 8:
            return vals.astype(f">u{self.bits // 8}").tobytes()
        per = 8 // self.bits
        shifts = np.arange(0, 8, self.bits, dtype=np.uint64)
        v = vals.reshape(-1, per) << shifts
        return bytes(v.sum(axis=1).astype(np.uint8).tobytes())

    def _block(self, bi: int) -> np.ndarray | None:
        blk = self.blocks.get(bi)
        if blk is None:
            if bi >= len(self.table) or int(self.table[bi]) == 0:
                return None
            off = int(self.table[bi])
            if off % self.cs:
                msg = refblock_message(off, bi)
                if self._node is not None:
                    raise self._node.signal_corruption(msg)
                raise IOFailure("Input/output error", 5)
            self.announce("refblock_load")  # load_refcount_block, then the cache's read
            blk = self._decode(self._read(off, self.cs))
            self.blocks[bi] = blk
        return blk

    # -- queries and updates ----------------------------------------------------
    def get(self, cluster: int) -> int:
        blk = self._block(cluster // self.epb)
        return 0 if blk is None else int(blk[cluster % self.epb])

    def count_referenced(self, end: int, limit: int) -> int:
        """How many of clusters ``[0, end)`` have a refcount, counted until ``limit``
        are found (``qcow2_detect_metadata_preallocation``'s loop of
        ``qcow2_get_refcount``): refcount blocks are loaded in order, and none after
        the one where the count reaches ``limit``. An unaligned block offset raises,
        as the lookup does."""
        count = 0
        known = max(len(self.table), max(self.blocks, default=-1) + 1)  # the rest: refcount 0
        for bi in range(min(-(-end // self.epb), known)):
            blk = self._block(bi)
            if blk is not None:
                count += int(np.count_nonzero(blk[: end - bi * self.epb]))
            if count >= limit:
                break
        return count

    def set(self, cluster: int, value: int) -> None:
        if not 0 <= value <= self.max:
            raise IOFailure("Numerical result out of range", 34)
        bi = cluster // self.epb
        # update_refcount reaches the block through alloc_refcount_block, which
        # announces itself whether the block exists or is made now
        self.announce("refblock_alloc")
        blk = self._block(bi)
        if blk is None:
            blk = self._new_block(bi)
        blk[cluster % self.epb] = value
        self.dirty_blocks.add(bi)

    def add(self, cluster: int, delta: int) -> int:
        v = self.get(cluster) + delta
        self.set(cluster, v)
        return v

    def release(self, cluster: int) -> int:
        """Drop one reference; a refcount already 0 stays 0 (QEMU logs and goes on)."""
        v = self.get(cluster)
        if v == 0:
            return -1
        bi = cluster // self.epb
        if v == 1 and int(self.table[bi]) == cluster * self.cs:
            # update_refcount drops a refcount block that reaches 0 from its cache
            # without writing it; when the block describes itself, the decrement
            # goes with it, so the cluster stays allocated on disk and in memory.
            return v
        self.set(cluster, v - 1)
        if v == 1 and cluster < self.next_free:
            # update_refcount lowers free_cluster_index: the cluster is reused next.
            # The writer releases only after the change that unreferenced it is
            # on disk, so the reuse cannot alias anything a crash would bring back.
            self.next_free = cluster
        return v - 1

    def _first_free(self, c: int) -> int:
        """The first cluster ``>= c`` with refcount 0, one refcount block at a time."""
        while True:
            bi = c // self.epb
            blk = self._block(bi)
            if blk is None or blk[c % self.epb] == 0:  # (the usual case: no scan)
                return c
            rest = np.flatnonzero(blk[c % self.epb :] == 0)
            if len(rest):
                return c + int(rest[0])
            c = (bi + 1) * self.epb

    def _take(self) -> int:
        """The next free cluster index (``alloc_clusters_noref`` for one cluster)."""
        c = self._first_free(self.next_free)
        self.next_free = c + 1
        return c

    def plan(self, n: int, at: int | None = None) -> None:
        """The next :meth:`alloc_data` starts a run of ``n`` contiguous clusters: the
        first fit (``qcow2_alloc_clusters``), or with ``at`` exactly at that cluster,
        whose ``n`` clusters the caller found free with :meth:`free_run_at`."""
        self._end_fixed_run(abandoned=True)  # a run a failed request left unfinished
        self._plan = n
        self._at = at
        self._run_end = 0

    def free_run_at(self, at: int, n: int) -> int:
        """How many of the ``n`` clusters from ``at`` are free, up to the first that is
        not: what ``qcow2_alloc_clusters_at`` can allocate there (clusters past the
        refcount table count as free)."""
        k = 0
        while k < n and self.get(at + k) == 0:
            k += 1
        return k

    def _end_fixed_run(self, *, abandoned: bool = False) -> None:
        """Once a run placed with ``at`` is allocated (or ``abandoned``), the scan
        position is back where it was: ``qcow2_alloc_clusters_at`` leaves
        ``free_cluster_index`` alone (frees since then only lowered it)."""
        if self._resume is not None and (abandoned or self.next_free >= self._resume[1]):
            self.next_free = min(self.next_free, self._resume[0])
            self._resume = None

    def alloc_data(self, *, reserve: bool = True) -> int:
        """One data cluster; the first of a planned run is placed where the whole run fits.

        QEMU's ``handle_alloc`` allocates all clusters of a write that need
        allocation in one ``qcow2_alloc_clusters`` call (first fit of the run);
        later clusters of the run then follow contiguously. Without ``reserve`` the
        caller reserves what it writes (a write of some subclusters only).
        """
        n, self._plan = self._plan, 0
        at, self._at = self._at, None
        self.announce("cluster_alloc")  # qcow2_alloc_clusters, once for the run
        if at is not None:
            self._resume = (self.next_free, at + n)
            self.next_free = at
            self._run_end = at + n
        elif n > 1:
            start = self._first_free(self.next_free)
            while self._busy(start, n):
                start = self._first_free(start + 1)
            self.next_free = start
            self._run_end = start + n
        host = self.alloc(1, reserve=reserve)
        self._end_fixed_run()
        return host

    def _busy(self, start: int, n: int) -> bool:
        """Does some cluster of ``[start, start+n)`` have a non-zero refcount?"""
        bi, j = divmod(start, self.epb)
        if j + n <= self.epb:  # within one block: one vector test
            blk = self._block(bi)
            return blk is not None and bool(blk[j : j + n].any())
        return any(self.get(c) for c in range(start, start + n))

    def alloc_data_run(self, n: int) -> list[int]:
        """The host byte offsets of ``n`` data clusters, exactly as :meth:`alloc_data`
        followed by ``n - 1`` calls of ``alloc(1)`` would place them (``handle_alloc``'s
        one ``qcow2_alloc_clusters`` for the run), but with one reservation and one
        refcount-block update per stretch of free clusters in a block that exists.

        A failure (ENOSPC) hands every cluster of the run back, as QEMU's
        ``qcow2_alloc_cluster_abort`` frees the whole allocation.
        """
        hosts = [self.alloc_data()]
        try:
            while len(hosts) < n:
                c = self._first_free(self.next_free)
                bi, j = divmod(c, self.epb)
                blk = self._block(bi)
                if blk is None:  # a new refcount block: the one-at-a-time path places it
                    hosts.append(self.alloc(1))
                    continue
                seg = blk[j : j + min(n - len(hosts), self.epb - j)]
                busy = np.flatnonzero(seg)
                k = int(busy[0]) if len(busy) else len(seg)  # >= 1: c itself is free
                self._reserve(c * self.cs, k * self.cs)
                self.announce("refblock_alloc")
                seg[:k] = 1
                self.dirty_blocks.add(bi)
                self.next_free = c + k
                hosts.extend(range(c * self.cs, (c + k) * self.cs, self.cs))
        except BaseException:
            self._end_fixed_run(abandoned=True)
            for host in reversed(hosts):
                self.release(host // self.cs)
            raise
        self._end_fixed_run()
        return hosts

    def alloc(self, n: int = 1, *, reserve: bool = True) -> int:
        """Allocate ``n`` contiguous clusters (refcount 1); returns the host byte offset.

        ``reserve`` backs them with disk space first (see ``Qcow2Writer._reserve``)."""
        start = self._first_free(self.next_free)
        while any(self.get(c) for c in range(start, start + n)):
            start = self._first_free(start + 1)
        if reserve:
            self._reserve(start * self.cs, n * self.cs)  # ENOSPC here changes nothing
        self.next_free = start + n
        done: list[int] = []
        try:
            for c in range(start, start + n):
                self.set(c, 1)
                done.append(c)
        except BaseException:
            for c in done:  # a refcount block could not be reserved: hand them back
                self.set(c, 0)
            self.next_free = min(self.next_free, start)  # and reuse them next, as QEMU's rollback
            raise
        return start * self.cs

    def _new_block(self, bi: int) -> np.ndarray:
        """``alloc_refcount_block``: a block for range ``bi``, self-describing if it can be.

        Inside the request, in QEMU's order, each step durable before the next: the
        L2 tables (:attr:`flush_l2`), the block's own refcount when another block
        holds it (that block written and the file flushed), the new block written and
        flushed (``qcow2_cache_flush``), then its refcount table entry
        (``bdrv_pwrite_sync``). The table entry is set in memory once that succeeded;
        a failure forgets the block (its cluster stays allocated: a leak, as in QEMU).
        """
        if self.flush_l2 is not None:
            self.flush_l2()
        if bi >= len(self.table):
            self._grow_table(bi)
            blk = self._block(bi)
            if blk is not None:
                return blk
        if self._run_end > self.next_free:
            # qcow2_alloc_clusters took the whole run before update_refcount needed this
            # block: it lands after the run (free_cluster_index), the run stays in place;
            # the index moves past it, so a block needed for the block's own refcount
            # (a nested call) lands after it, not on it
            x = self._first_free(self._run_end)
            self._run_end = x + 1
        else:
            x = self._take()
        self._reserve(x * self.cs, self.cs)  # on failure only a gap is left behind
        blk = np.zeros(self.epb, dtype=np.uint64)
        self.blocks[bi] = blk
        self.table[bi] = x * self.cs  # where write_back puts it; hooked up below
        try:
            if x // self.epb == bi:
                blk[x % self.epb] = 1
            else:
                self.set(x, 1)
                if self.flush_l2 is not None:
                    self.write_back(tables=False)
                    self._sync()
            self.dirty_blocks.add(bi)
            if self.flush_l2 is None:  # (the writer is not ready: hooked up at write-back)
                self.dirty_table.add(bi)
                return blk
            self.announce("refblock_alloc_write")
            self.write_back(tables=False)
            self._sync()
            self.announce("refblock_alloc_hookup")
            self._write(self.h.refcount_table_offset + bi * 8, struct.pack(">Q", x * self.cs))
            self._sync()
        except BaseException:
            self.table[bi] = 0
            self.blocks.pop(bi, None)
            self.dirty_blocks.discard(bi)
            raise
        return blk

    def _last_used(self) -> int:
        """The highest cluster with a non-zero refcount (-1 if none)."""
        for bi in np.flatnonzero(self.table).tolist()[::-1]:
            blk = self._block(bi)
            if blk is not None:
                nz = np.flatnonzero(blk)
                if len(nz):
                    return bi * self.epb + int(nz[-1])
        return -1

    def _grow_table(self, need_index: int) -> None:
        """Replace the refcount table with a larger one (``qcow2_refcount_area``)."""
        old_off, old_clusters = self.h.refcount_table_offset, self.h.refcount_table_clusters
        # The new area must be free as a whole: place it after the last used cluster.
        start = max(self.next_free, self._last_used() + 1)
        entries = max(need_index + 1, len(self.table) * 2)
        while True:
            tc = -(-entries * 8 // self.cs)
            missing: list[int] = []
            end = start + tc
            while True:  # blocks for the area itself, placed right after the table
                ranges = {c // self.epb for c in range(start, end + len(missing))}
                new = sorted(r for r in ranges if r >= len(self.table) or int(self.table[r]) == 0)
                if len(new) == len(missing):
                    break
                missing = new
            if max([need_index, *missing]) < entries and tc * self.cs <= C.MAX_REFTABLE_SIZE:
                break
            entries = max([need_index, *missing]) + 1
            if -(-entries * 8 // self.cs) * self.cs > C.MAX_REFTABLE_SIZE:
                raise IOFailure("File too large", 27)
        table = np.zeros(tc * self.cs // 8, dtype=np.uint64)
        table[: len(self.table)] = self.table
        self.table = table
        for k, bi in enumerate(missing):
            self.table[bi] = (start + tc + k) * self.cs
            self.blocks[bi] = np.zeros(self.epb, dtype=np.uint64)
            self.dirty_blocks.add(bi)
        self.next_free = start + tc + len(missing)
        for c in range(start, self.next_free):
            self.set(c, 1)
        self.announce("refblock_alloc_write_blocks")
        self.write_back(tables=False)
        self.announce("refblock_alloc_write_table")
        self._write(start * self.cs, self.table.astype(">u8").tobytes())
        self._sync()
        # One write switches offset and size together (bytes 48..59 of the header).
        self.announce("refblock_alloc_switch_table")
        self._write(48, struct.pack(">QI", start * self.cs, tc))
        self._sync()
        self.h.refcount_table_offset, self.h.refcount_table_clusters = start * self.cs, tc
        self.dirty_table.clear()
        for c in range(old_off // self.cs, old_off // self.cs + old_clusters):
            self.add(c, -1)

    # -- persistence -------------------------------------------------------------
    def write_back(self, tables: bool = True) -> bool:
        """Write dirty blocks, then (after a barrier if any block is new) table entries."""
        wrote = False
        for bi in sorted(self.dirty_blocks):
            if self._node is not None:
                self._node.overlap.check(int(self.table[bi]), self.cs, OL_REFCOUNT_BLOCK)
            self.announce("refblock_update_part")  # qcow2_cache_entry_flush
            self._write(int(self.table[bi]), self._encode(self.blocks[bi]))
            wrote = True
        self.dirty_blocks.clear()
        if tables and self.dirty_table:
            self._sync()  # blocks must be stable before the table points at them
            per = self.cs // 8
            for tcl in sorted({i // per for i in self.dirty_table}):
                chunk = self.table[tcl * per : (tcl + 1) * per].astype(">u8").tobytes()
                self._write(self.h.refcount_table_offset + tcl * self.cs, chunk)
            self.dirty_table.clear()
            wrote = True
        return wrote

    def dirty(self) -> bool:
        return bool(self.dirty_blocks or self.dirty_table)
