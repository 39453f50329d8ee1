"""The compiled L2 map: guest cluster -> (host code, raw entry), per L1 slot.

QEMU walks L1 -> cached L2 slice -> entry type on every request
(``qcow2_get_host_offset``, ``qcow2_get_subcluster_type``). txgraph instead
decodes each L2 table once, with numpy, into an int64 *host code* per guest
cluster and keeps the raw big-endian entry beside it (needed for compressed
descriptors, subcluster bitmaps and the COPIED flag):

=========  ==================================================================
code >= 0  plain data: cluster-aligned host offset (in the data file if any)
ZERO       reads as zeros (zero-plain or zero-alloc)
UNALLOC    not allocated here: read the backing chain
COMPRESSED compressed cluster; descriptor in the raw entry
INVALID    the entry is corrupt (QEMU marks the image corrupt and fails with EIO)
MIXED      extended L2 cluster whose subclusters differ; see the bitmap
=========  ==================================================================

Slots are compiled on first touch, and only slots whose L1 entry points at an
L2 table are ever compiled: an L1 entry of 0 answers UNALLOC without reading or
allocating anything. Small images (map <= 64 MiB) keep every slot's codes as a
view into one flat array so a batch of guest offsets translates with a single
``take``; larger ones keep per-slot arrays. Either way the number of compiled
slots is bounded by a :class:`~txgraph.io.qcow2.slotcache.SlotCache` (QEMU's
``l2-cache-size`` / ``cache-clean-interval`` semantics), so memory is bounded by
the cache size, never O(virtual size) nor O(touched slots).

Reading a table from the image is announced as ``l2_load`` on the file child (the
``announce`` callback, ``qcow2_cache_do_get`` on a miss), so a blkdebug child sees a
load where QEMU's L2 cache would load: first use, and again after an eviction.

Entries are classified as QEMU's ``qcow2_get_host_offset`` judges them before
use (see :mod:`.validate` for the corruption messages): unaligned data or
preallocated-zero offsets, zero flags in v2, invalid subcluster bitmaps,
compressed clusters or mismatching offsets with an external data file are
INVALID.

Owner and lock: the :class:`~.driver.Qcow2Node`; compilation, eviction, every
lookup that may compile or touch the slot cache (:meth:`code`, :meth:`slot`,
:meth:`runs`, :meth:`first_run`, :meth:`alloc_run`, :meth:`raw_entry`,
:meth:`translate`), every update (:meth:`set_entry`, :meth:`set_l1`,
:meth:`reset_slot`) and the derived L1 indexes (``_nz``, ``_l2offs``, read by
the overlap check) run under the node's ``lock``. The one lock-free use is a
reader indexing a slot's ``codes`` array that is already compiled: a slot is
published in ``codes`` only after its arrays are filled, :meth:`set_entry`
changes the code last, after the data it points to was written, and an
eviction only unpublishes the slot (a reader that already holds the array
reads a value that was valid when it looked; the next lookup recompiles under
the lock). The writer pins the slots it changes (``cache.pinned`` is its
``dirty_slots`` set) until the flush that writes them, so an entry not yet on
disk is never evicted and lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.header import Qcow2Header
from txgraph.io.qcow2.slotcache import SlotCache, cache_limits
from txgraph.io.qcow2.validate import hx

__all__ = ["L2Map", "ZERO", "UNALLOC", "COMPRESSED", "INVALID", "MIXED", "FLAT_LIMIT"]

ZERO, UNALLOC, COMPRESSED, INVALID, MIXED = -1, -2, -3, -4, -5
#: maps up to this many bytes of host codes are kept flat
FLAT_LIMIT = 64 << 20
_FULL32 = 0xFFFFFFFF
#: batches up to this many offsets reuse the map's scratch array (8 bytes each)
_SCRATCH_MAX = 1 << 21


class L2Map:
    """Lazily compiled view of the active L1/L2 tables of one image."""

    def __init__(
        self,
        h: Qcow2Header,
        l1: np.ndarray,
        read_table: object,
        options: Mapping[str, Any] | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.h = h
        #: ``BLKDBG_EVENT`` on the image's file child (the node's ``announce``)
        self._announce = announce
        self.l1 = l1  # native uint64, owned by the driver (updated on L1 writes)
        self._read_table = read_table  # callable(offset, nbytes) -> bytes
        self.cb = h.cluster_bits
        self.l2b = h.l2_bits
        self.n = h.l2_entries
        self.nb_clusters = -(-h.size // h.cluster_size)
        self.nslots = -(-self.nb_clusters // self.n) if self.nb_clusters else 0
        self.ext = h.extended_l2
        self.v3 = h.version >= 3
        self.data_file = h.has_data_file
        cmp_shift = 62 - (self.cb - 8)
        self.cmp_shift = cmp_shift
        self.cmp_off_mask = (1 << cmp_shift) - 1
        self.cmp_size_mask = (1 << (self.cb - 8)) - 1
        self.codes: list[np.ndarray | None] = [None] * self.nslots
        self.raw: list[np.ndarray | None] = [None] * self.nslots
        self.bitmaps: list[np.ndarray | None] = [None] * self.nslots
        #: every slot's codes in one array (small maps), made by the first compile or
        #: translation (:meth:`_ensure_flat`): a backing layer that is opened and never
        #: read (most of a deep chain) never fills one
        self.flat: np.ndarray | None = None
        #: per slot: its part of ``flat`` holds the slot's current codes (a compiled slot,
        #: or one whose L1 entry is 0 and was never compiled: all UNALLOC)
        self.flat_ok: np.ndarray | None = None
        self._flat_wanted = self.nslots * self.n * 8 <= FLAT_LIMIT
        #: bumped by every change of the mapping (an entry, an L1 entry, a slot reset), so
        #: a derived view (:mod:`.chainmap`) can tell that it is stale without the lock
        self.gen = 0
        #: translate()'s reused intermediate (under the node lock, like every lookup)
        self._scratch: np.ndarray | None = None
        #: L1 slots whose L2 table offset is unaligned (message for the corruption report)
        self.bad_slots: dict[int, str] = {}
        cap, interval = cache_limits(options or {}, h.cluster_size, h.cluster_size)
        #: bounds the compiled slots (QEMU's L2 cache size and clean interval)
        self.cache = SlotCache(cap, self._drop, interval)
        #: L2 tables read from the image so far (a diagnostic counter)
        self.l2_reads = 0
        self._nz: np.ndarray | None = None  # sorted indices of non-zero L1 offsets
        self._l2offs: np.ndarray | None = None  # sorted active L2 table offsets

    # -- compilation ---------------------------------------------------------
    def l2_offset(self, slot: int) -> int:
        return int(self.l1[slot]) & C.L1E_OFFSET_MASK if slot < len(self.l1) else 0

    def slot(self, i: int) -> np.ndarray:
        """The host codes of slot ``i`` (compiling it on first use)."""
        codes = self.codes[i]
        if codes is None:
            codes = self._compile(i)
        else:
            self.cache.touch(i)
        return codes

    def _ensure_flat(self) -> None:
        """Make ``flat`` and ``flat_ok`` for a small map (under the node lock, as every
        compile): nothing is compiled before, so every slot is UNALLOC or still to compile."""
        if self.flat is not None or not self._flat_wanted:
            return
        ok = (self.l1[: self.nslots] & np.uint64(C.L1E_OFFSET_MASK)) == 0
        if len(ok) < self.nslots:  # an L1 table shorter than the image
            ok = np.concatenate([ok, np.ones(self.nslots - len(ok), dtype=bool)])
        self.flat_ok = ok
        self.flat = np.full(self.nslots * self.n, UNALLOC, dtype=np.int64)

    def _drop(self, i: int) -> None:
        """Evicted by the cache: forget the decoded copy (flat codes stay valid)."""
        self.codes[i] = self.raw[i] = self.bitmaps[i] = None

    def set_l1(self, i: int, value: int) -> None:
        """The writer points L1 slot ``i`` at another L2 table (``qcow2_write_l1_entry``'s memory side)."""
        was = int(self.l1[i]) & C.L1E_OFFSET_MASK
        self.l1[i] = value
        self.gen += 1
        if self.flat_ok is not None and self.codes[i] is None and i < self.nslots:
            self.flat_ok[i] = False  # flat may hold this slot's codes from before
        self._l2offs = None
        if bool(was) != bool(value & C.L1E_OFFSET_MASK):
            self._nz = None

    def l2_table_offsets(self) -> np.ndarray:
        """Sorted offsets of the active L2 tables (for the overlap check)."""
        offs = self._l2offs
        if offs is None:
            offs = self.l1 & np.uint64(C.L1E_OFFSET_MASK)
            offs = np.sort(offs[offs != 0])
            self._l2offs = offs
        return offs

    def next_allocated_slot(self, i: int) -> int:
        """The first slot ``>= i`` whose L1 entry is non-zero (``nslots`` if none)."""
        nz = self._nz
        if nz is None:
            nz = np.flatnonzero(self.l1[: self.nslots] & np.uint64(C.L1E_OFFSET_MASK))
            self._nz = nz
        k = int(np.searchsorted(nz, i))
        return int(nz[k]) if k < len(nz) else self.nslots

    def _unallocated(self, i: int) -> bool:
        """Slot ``i`` reads as UNALLOC without compiling (L1 entry 0, nothing pending)."""
        return self.codes[i] is None and self.l2_offset(i) == 0

    def _compile(self, i: int) -> np.ndarray:
        self._ensure_flat()
        n = self.n
        codes = (
            self.flat[i * n : (i + 1) * n] if self.flat is not None else np.empty(n, dtype=np.int64)
        )
        l2off = self.l2_offset(i)
        if l2off == 0:
            codes[:] = UNALLOC
            raw = np.zeros(n, dtype=np.uint64)
            bm = np.zeros(n, dtype=np.uint64) if self.ext else None
        elif l2off % self.h.cluster_size:
            # QEMU: "L2 table offset ... unaligned" -> corrupt + EIO on access.
            codes[:] = INVALID
            self.bad_slots[i] = f"L2 table offset {hx(l2off)} unaligned (L1 index: {hx(i)})"
            raw = np.zeros(n, dtype=np.uint64)
            bm = np.zeros(n, dtype=np.uint64) if self.ext else None
        else:
            # qcow2_cache_do_get: a table not in the cache is announced, then read
            if self._announce is not None:
                self._announce("l2_load")
            buf = self._read_table(l2off, self.h.cluster_size)  # type: ignore[operator]
            self.l2_reads += 1
            ent = np.frombuffer(buf, dtype=">u8").astype(np.uint64)
            if self.ext:
                raw, bm = ent[0::2].copy(), ent[1::2].copy()
            else:
                raw, bm = ent, None
            codes[:] = self.classify(raw, bm, i * n)
        self.codes[i], self.raw[i], self.bitmaps[i] = codes, raw, bm
        if self.flat_ok is not None:
            self.flat_ok[i] = True
        self.cache.add(i)
        return codes

    def classify(self, raw: np.ndarray, bm: np.ndarray | None, base: int) -> np.ndarray:
        """Vectorised ``qcow2_get_cluster_type`` / ``qcow2_get_subcluster_type``.

        ``base`` is the guest cluster of ``raw[0]``. Entries QEMU's
        ``qcow2_get_host_offset`` refuses before use become INVALID.
        """
        raw = raw.astype(np.uint64, copy=False)
        off = (raw & np.uint64(C.L2E_OFFSET_MASK)).astype(np.int64)
        comp = (raw & np.uint64(C.OFLAG_COMPRESSED)) != 0
        copied = (raw & np.uint64(C.OFLAG_COPIED)) != 0
        present = (off != 0) | (copied if self.data_file else False)
        out = np.where(present, off, UNALLOC).astype(np.int64)
        unaligned = present & ((off & (self.h.cluster_size - 1)) != 0)
        if self.data_file:
            # External data files map guest offset == host offset, nothing else.
            guest = np.arange(base, base + len(raw), dtype=np.int64) << self.cb
            unaligned = unaligned | (present & (off != guest))
        if bm is None:
            zero = (raw & np.uint64(C.OFLAG_ZERO)) != 0
            out[zero] = ZERO if self.v3 else INVALID  # zero flag in v2 is corruption
            # A preallocated zero cluster is checked like a data cluster.
            out[unaligned & ~comp] = INVALID
        else:
            alloc = (bm & np.uint64(_FULL32)).astype(np.int64)
            zbits = (bm >> np.uint64(32)).astype(np.int64)
            bad = (alloc & zbits) != 0
            bad |= ~present & (alloc != 0)
            bad |= unaligned
            out[~present & (zbits == _FULL32)] = ZERO
            out[~present & (zbits != 0) & (zbits != _FULL32)] = MIXED
            out[present & (zbits == _FULL32)] = ZERO
            out[present & (alloc != _FULL32) & (zbits != _FULL32)] = MIXED
            out[bad] = INVALID
            bad_comp = comp & (bm != 0)
            out[bad_comp] = INVALID
            comp = comp & ~bad_comp
        out[comp] = INVALID if self.data_file else COMPRESSED
        return out

    # -- lookups -------------------------------------------------------------
    def code(self, cluster: int) -> int:
        i = cluster >> self.l2b
        if i >= self.nslots:
            return UNALLOC
        codes = self.codes[i]
        if codes is None:
            if self.l2_offset(i) == 0:
                return UNALLOC
            codes = self._compile(i)
        return int(codes[cluster & (self.n - 1)])

    def runs(self, c0: int, count: int) -> list[tuple[int, int, int]]:
        """Split clusters ``[c0, c0+count)`` into runs ``(first, n, code)``.

        Data runs are host-contiguous (``code`` is the first cluster's host
        offset); other runs share one code (COMPRESSED/MIXED/INVALID are
        always single-cluster runs). This is QEMU's ``qcow2_get_host_offset``
        "how many following clusters are alike" scan, done with numpy.
        """
        out: list[tuple[int, int, int]] = []
        cs = 1 << self.cb
        c, end = c0, c0 + count
        while c < end:
            i = c >> self.l2b
            lo = c & (self.n - 1)
            hi = min(self.n, lo + (end - c))
            if i >= self.nslots:
                out.append((c, end - c, UNALLOC))
                break
            if self._unallocated(i):
                out.append((c, hi - lo, UNALLOC))
                c += hi - lo
                continue
            seg = self.slot(i)[lo:hi]
            if len(seg) == 1:
                out.append((c, 1, int(seg[0])))
            else:
                expect = seg[:-1] + np.where(seg[:-1] >= 0, cs, 0)
                brk = (seg[1:] != expect) | (seg[1:] <= COMPRESSED)
                brk |= seg[:-1] <= COMPRESSED
                starts = np.flatnonzero(brk) + 1
                bounds = [0, *starts.tolist(), len(seg)]
                vals = seg[bounds[:-1]].tolist()
                for k in range(len(bounds) - 1):
                    out.append((c + bounds[k], bounds[k + 1] - bounds[k], vals[k]))
            c += hi - lo
        return out

    def first_run(self, c0: int, count: int) -> tuple[int, int]:
        """(clusters, code) of the run starting at cluster ``c0``, at most ``count`` long.

        The block-status walk (``qcow2_co_block_status`` as the NBD export
        merges it): runs continue across L2 tables; a range of L1 entries that
        are 0 is skipped in one step without compiling anything, so a walk over
        a whole image costs O(allocated extents + L2 tables present), not
        O(virtual size). COMPRESSED/MIXED/INVALID runs are one cluster.
        """
        cs = 1 << self.cb
        end = c0 + count
        c = c0
        code0: int | None = None
        while c < end:
            i = c >> self.l2b
            if i >= self.nslots:
                if code0 is None or code0 == UNALLOC:
                    code0, c = UNALLOC, end
                break
            if self._unallocated(i):
                if code0 is None:
                    code0 = UNALLOC
                if code0 != UNALLOC:
                    break
                c = min(end, self.next_allocated_slot(i + 1) << self.l2b)
                continue
            lo = c & (self.n - 1)
            seg = self.slot(i)[lo : min(self.n, lo + (end - c))]
            if code0 is None:
                code0 = int(seg[0])
                if code0 < UNALLOC:  # single-cluster classes
                    c += 1
                    break
            if code0 >= 0:
                want = code0 + (c - c0) * cs + cs * np.arange(len(seg), dtype=np.int64)
                match = seg == want
            else:
                match = seg == code0
            k = len(seg) if bool(match.all()) else int(np.argmin(match))
            c += k
            if k < len(seg):
                break
        return c - c0, UNALLOC if code0 is None else code0

    def alloc_run(self, c0: int, limit: int) -> int:
        """``count_single_write_clusters(new_alloc=true)``: clusters from ``c0`` needing allocation.

        Stops at the first cluster a write may reuse in place (a COPIED data or
        preallocated zero cluster), at the end of the L2 table, or after ``limit``.
        """
        i, lo = c0 >> self.l2b, c0 & (self.n - 1)
        hi = min(self.n, lo + max(1, limit))
        if i >= self.nslots or self._unallocated(i):
            return hi - lo
        self.slot(i)
        raw = self.raw[i]
        assert raw is not None
        seg = raw[lo:hi]
        owned = (
            ((seg & np.uint64(C.OFLAG_COPIED)) != 0)
            & ((seg & np.uint64(C.OFLAG_COMPRESSED)) == 0)
            & ((seg & np.uint64(C.L2E_OFFSET_MASK)) != 0)
        )
        return len(seg) if not bool(owned.any()) else max(1, int(np.argmax(owned)))

    def translate(self, guest: np.ndarray) -> np.ndarray:
        """Batch translation: host offset (>= 0) or a negative class code per guest offset.

        Signed 64-bit arithmetic throughout (numpy's unsigned shifts are far slower);
        offsets of 2^63 and more are outside every image and answer UNALLOC. With a
        flat map the batch is one gather: only slots not yet compiled are looked at
        one by one (no sort of the whole batch).
        """
        g = np.asarray(guest)
        if g.dtype == np.uint64:
            g = g.view(np.int64)  # free; values >= 2^63 turn negative: outside
        elif g.dtype != np.int64:
            g = g.astype(np.int64)
        self._ensure_flat()
        flat, ok = self.flat, self.flat_ok
        n = len(g)
        if flat is not None and ok is not None and 0 < n <= _SCRATCH_MAX:
            # Intermediates go to a scratch array reused across calls (under the node
            # lock): a fresh 8 MB array costs more in page faults than the whole lookup.
            scratch = self._scratch
            if scratch is None or len(scratch) < n:
                scratch = self._scratch = np.empty(n, dtype=np.int64)
            clusters = np.right_shift(g, self.cb, out=scratch[:n])
            if int(g.min()) >= 0 and int(clusters.max()) < self.nb_clusters:
                if not bool(ok.all()):
                    self._compile_stale(clusters, None)
                codes: np.ndarray = flat.take(clusters)
                within = np.bitwise_and(g, (1 << self.cb) - 1, out=scratch[:n])
                np.add(codes, within, out=codes, where=codes >= 0)
                return codes
        clusters = g >> self.cb
        inside = (clusters >= 0) & (clusters < self.nb_clusters)
        if flat is not None and ok is not None:
            idx = np.where(inside, clusters, 0)
            if not bool(ok.all()):
                self._compile_stale(idx, inside)
            codes = flat[idx]
            codes[~inside] = UNALLOC
        else:
            slots = clusters >> self.l2b
            codes = np.full(len(g), UNALLOC, dtype=np.int64)
            for i in np.unique(slots[inside]).tolist():
                if self._unallocated(i):
                    continue
                m = inside & (slots == i)
                codes[m] = self.slot(i)[clusters[m] & (self.n - 1)]
        within = g & ((1 << self.cb) - 1)
        np.add(codes, within, out=codes, where=codes >= 0)
        return codes

    def _compile_stale(self, clusters: np.ndarray, inside: np.ndarray | None) -> None:
        """Compile the slots of ``clusters`` whose flat codes are not current."""
        assert self.flat_ok is not None
        slots = clusters >> self.l2b
        stale = ~self.flat_ok[slots]
        if inside is not None:
            stale &= inside
        if stale.any():
            for i in np.unique(slots[stale]).tolist():
                self.slot(i)

    # -- updates (the allocator keeps the map in step with the L2 tables) ----
    def set_entry(self, cluster: int, raw: int, bitmap: int = 0) -> None:
        i, j = cluster >> self.l2b, cluster & (self.n - 1)
        self.slot(i)
        r = self.raw[i]
        assert r is not None
        r[j] = raw
        self.gen += 1
        b = self.bitmaps[i]
        if b is not None:
            b[j] = bitmap
        code = self.classify(
            np.array([raw], dtype=np.uint64),
            None if b is None else np.array([bitmap], dtype=np.uint64),
            cluster,
        )
        self.codes[i][j] = int(code[0])  # type: ignore[index]

    def set_entries(
        self, c0: int, raws: np.ndarray, bitmap: int = 0, codes: np.ndarray | None = None
    ) -> None:
        """:meth:`set_entry` for the clusters ``c0 ..`` of one L2 table at once (one
        classification for the whole run; every entry gets the same subcluster bitmap).
        ``codes``, when the caller knows them (fresh aligned data clusters: their host
        offsets), spares the classification."""
        i, j = c0 >> self.l2b, c0 & (self.n - 1)
        k = len(raws)
        assert j + k <= self.n
        self.slot(i)
        r, b = self.raw[i], self.bitmaps[i]
        assert r is not None
        r[j : j + k] = raws
        self.gen += 1
        bms = None
        if b is not None:
            b[j : j + k] = bitmap
            bms = b[j : j + k]
        if codes is None:
            codes = self.classify(r[j : j + k], bms, c0)
        self.codes[i][j : j + k] = codes  # type: ignore[index]

    def run_entries(self, c0: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(L2 entries, codes) of clusters ``c0 .. c0+count`` of one L2 table, as stored
        (zeros and UNALLOC for a table not allocated)."""
        i, j = c0 >> self.l2b, c0 & (self.n - 1)
        assert j + count <= self.n
        if i >= self.nslots or self._unallocated(i):
            return np.zeros(count, dtype=np.uint64), np.full(count, UNALLOC, dtype=np.int64)
        codes = self.slot(i)
        r = self.raw[i]
        assert r is not None
        return r[j : j + count].copy(), codes[j : j + count].copy()

    def raw_entry(self, cluster: int) -> tuple[int, int]:
        """(L2 entry, subcluster bitmap) of ``cluster`` as stored."""
        i, j = cluster >> self.l2b, cluster & (self.n - 1)
        if i >= self.nslots or self._unallocated(i):
            return 0, 0
        self.slot(i)
        r, b = self.raw[i], self.bitmaps[i]
        assert r is not None
        return int(r[j]), (int(b[j]) if b is not None else 0)

    def reset_slot(self, i: int) -> None:
        """Forget slot ``i`` (its L1 entry changed); it recompiles on next use."""
        self.codes[i] = self.raw[i] = self.bitmaps[i] = None
        self.gen += 1
        if self.flat_ok is not None and i < self.nslots:
            self.flat_ok[i] = False
        self.cache.forget(i)
        self.bad_slots.pop(i, None)

    def compressed_extent(self, raw: int) -> tuple[int, int]:
        """(host byte offset, byte count) of a compressed cluster's stream."""
        coff = raw & self.cmp_off_mask
        nsec = ((raw >> self.cmp_shift) & self.cmp_size_mask) + 1
        return coff, nsec * 512 - (coff & 511)
