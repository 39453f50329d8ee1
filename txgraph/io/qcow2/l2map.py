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

Slots are compiled on first touch. Small images (map <= 64 MiB) keep every
slot as a view into one flat array so a batch of guest offsets translates with
a single ``take``; larger ones keep per-slot arrays only for touched slots, so
memory is O(touched L1 slots), never O(virtual size).

Owner and lock: the :class:`~.driver.Qcow2Node`; compilation and every update
run under the node's ``lock``. The one lock-free use is a reader indexing a
slot's ``codes`` array that is already compiled: a slot is published in
``codes`` only after its arrays are filled, and :meth:`L2Map.set_entry`
changes the code last, after the data it points to was written.
"""

from __future__ import annotations

import numpy as np

from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.header import Qcow2Header

__all__ = ["L2Map", "ZERO", "UNALLOC", "COMPRESSED", "INVALID", "MIXED", "FLAT_LIMIT"]

ZERO, UNALLOC, COMPRESSED, INVALID, MIXED = -1, -2, -3, -4, -5
#: maps up to this many bytes of host codes are kept flat
FLAT_LIMIT = 64 << 20
_FULL32 = 0xFFFFFFFF


class L2Map:
    """Lazily compiled view of the active L1/L2 tables of one image."""

    def __init__(self, h: Qcow2Header, l1: np.ndarray, read_table: object) -> None:
        self.h = h
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
        self.flat: np.ndarray | None = None
        if self.nslots * self.n * 8 <= FLAT_LIMIT:
            self.flat = np.full(self.nslots * self.n, UNALLOC, dtype=np.int64)
        #: L1 slots whose L2 table offset is unaligned (message for the corruption report)
        self.bad_slots: dict[int, str] = {}

    # -- compilation ---------------------------------------------------------
    def l2_offset(self, slot: int) -> int:
        return int(self.l1[slot]) & C.L1E_OFFSET_MASK if slot < len(self.l1) else 0

    def slot(self, i: int) -> np.ndarray:
        """The host codes of slot ``i`` (compiling it on first use)."""
        codes = self.codes[i]
        if codes is None:
            codes = self._compile(i)
        return codes

    def _compile(self, i: int) -> np.ndarray:
        n = self.n
        codes = (self.flat[i * n:(i + 1) * n] if self.flat is not None
                 else np.empty(n, dtype=np.int64))
        l2off = self.l2_offset(i)
        if l2off == 0:
            codes[:] = UNALLOC
            raw = np.zeros(n, dtype=np.uint64)
            bm = np.zeros(n, dtype=np.uint64) if self.ext else None
        elif l2off % self.h.cluster_size:
            # QEMU: "L2 table offset ... unaligned" -> corrupt + EIO on access.
            codes[:] = INVALID
            self.bad_slots[i] = (f"L2 table offset {l2off:#x} unaligned (L1 index: {i:#x})")
            raw = np.zeros(n, dtype=np.uint64)
            bm = np.zeros(n, dtype=np.uint64) if self.ext else None
        else:
            buf = self._read_table(l2off, self.h.cluster_size)  # type: ignore[operator]
            ent = np.frombuffer(buf, dtype=">u8").astype(np.uint64)
            if self.ext:
                raw, bm = ent[0::2].copy(), ent[1::2].copy()
            else:
                raw, bm = ent, None
            codes[:] = self.classify(raw, bm)
        self.codes[i], self.raw[i], self.bitmaps[i] = codes, raw, bm
        return codes

    def classify(self, raw: np.ndarray, bm: np.ndarray | None) -> np.ndarray:
        """Vectorised ``qcow2_get_cluster_type`` / ``qcow2_get_subcluster_type``."""
        raw = raw.astype(np.uint64, copy=False)
        off = (raw & np.uint64(C.L2E_OFFSET_MASK)).astype(np.int64)
        comp = (raw & np.uint64(C.OFLAG_COMPRESSED)) != 0
        copied = (raw & np.uint64(C.OFLAG_COPIED)) != 0
        present = (off != 0) | (copied if self.data_file else False)
        out = np.where(present, off, UNALLOC).astype(np.int64)
        unaligned = present & ((off & (self.h.cluster_size - 1)) != 0)
        if bm is None:
            zero = (raw & np.uint64(C.OFLAG_ZERO)) != 0
            out[zero] = ZERO if self.v3 else INVALID  # zero flag in v2 is corruption
            out[unaligned & ~zero] = INVALID
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
        out[comp] = COMPRESSED
        return out

    # -- lookups -------------------------------------------------------------
    def code(self, cluster: int) -> int:
        i = cluster >> self.l2b
        if i >= self.nslots:
            return UNALLOC
        codes = self.codes[i]
        if codes is None:
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

    def translate(self, guest: np.ndarray) -> np.ndarray:
        """Batch translation: host offset (>= 0) or a negative class code per guest offset."""
        g = np.asarray(guest, dtype=np.uint64)
        clusters = (g >> np.uint64(self.cb)).astype(np.int64)
        inside = clusters < self.nb_clusters
        slots = clusters >> self.l2b
        for i in np.unique(slots[inside]).tolist():
            if self.codes[i] is None:
                self._compile(i)
        if self.flat is not None:
            codes = np.where(inside, self.flat[np.minimum(clusters, len(self.flat) - 1)], UNALLOC)
        else:
            codes = np.full(len(g), UNALLOC, dtype=np.int64)
            for i in np.unique(slots[inside]).tolist():
                m = inside & (slots == i)
                codes[m] = self.codes[i][clusters[m] & (self.n - 1)]  # type: ignore[index]
        within = (g & np.uint64((1 << self.cb) - 1)).astype(np.int64)
        return np.where(codes >= 0, codes + within, codes)

    # -- updates (the allocator keeps the map in step with the L2 tables) ----
    def set_entry(self, cluster: int, raw: int, bitmap: int = 0) -> None:
        i, j = cluster >> self.l2b, cluster & (self.n - 1)
        self.slot(i)
        r = self.raw[i]
        assert r is not None
        r[j] = raw
        b = self.bitmaps[i]
        if b is not None:
            b[j] = bitmap
        code = self.classify(np.array([raw], dtype=np.uint64),
                             None if b is None else np.array([bitmap], dtype=np.uint64))
        self.codes[i][j] = int(code[0])  # type: ignore[index]

    def raw_entry(self, cluster: int) -> tuple[int, int]:
        """(L2 entry, subcluster bitmap) of ``cluster`` as stored."""
        i, j = cluster >> self.l2b, cluster & (self.n - 1)
        if i >= self.nslots:
            return 0, 0
        self.slot(i)
        r, b = self.raw[i], self.bitmaps[i]
        assert r is not None
        return int(r[j]), (int(b[j]) if b is not None else 0)

    def reset_slot(self, i: int) -> None:
        """Forget slot ``i`` (its L1 entry changed); it recompiles on next use."""
        self.codes[i] = self.raw[i] = self.bitmaps[i] = None
        self.bad_slots.pop(i, None)

    def compressed_extent(self, raw: int) -> tuple[int, int]:
        """(host byte offset, byte count) of a compressed cluster's stream."""
        coff = raw & self.cmp_off_mask
        nsec = ((raw >> self.cmp_shift) & self.cmp_size_mask) + 1
        return coff, nsec * 512 - (coff & 511)
