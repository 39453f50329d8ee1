"""qcow2 writes: cluster and L2 allocation, COW, zero clusters, discard, flush order.

Reproduces the on-disk results of QEMU 7.2's ``qcow2_co_pwritev_part``
(``qcow2_alloc_host_offset``, ``handle_copied``/``handle_alloc``, COW of the
untouched part of a cluster from the old data or the backing chain),
``qcow2_co_pwrite_zeroes`` (v3 zero clusters), ``qcow2_co_pdiscard`` (whole
clusters only) and ``qcow2_co_flush_to_os`` with QEMU's cache dependencies:

1. guest data is written to its cluster immediately;
2. a new L2 table is made durable inside the request, as QEMU's
   ``l2_allocate`` does (:mod:`.l2_alloc`): refcount blocks written and the file
   flushed, the table (and every other dirty one) written and the file flushed,
   then its L1 entry's 512-byte sector written and flushed; a new refcount block
   likewise (``alloc_refcount_block``, :mod:`.refcount`);
3. on flush (``qcow2_write_caches``): refcount blocks, then the refcount table,
   then *fdatasync*; then the L2 tables (the compiled map holds the only cached
   copy), without a flush of their own - the flush that follows is
   ``bdrv_co_flush`` going down to the file, which blkdebug sees as QEMU's;
4. only then are clusters no longer referenced released (refcount decrement),
   which reaches the disk behind another *fdatasync* (the refcount cache then
   depends on the L2 cache, ``write_refcounts``).

Every write to the image file (guest data, L2 tables, L1 sectors, refcount
blocks) first passes QEMU's metadata-overlap check (:mod:`.overlap`); entries
are validated as QEMU validates them before use (:mod:`.validate`).

A crash (or SIGKILL) at any point therefore leaves at worst leaked clusters,
never a reference to a cluster whose refcount is 0. Lazy refcounts: if the
image allows them (compat bit 0), the dirty bit is set and flushed before the
first metadata change and cleared on a clean close, as QEMU's
``qcow2_mark_dirty``/``qcow2_mark_clean`` do; a dirty image opened writable is
repaired first (:mod:`.rebuild`).

Concurrency (QEMU's ``s->lock`` plus the in-flight allocation dependencies of
``handle_dependencies``): every method runs its metadata work under the
node's ``lock``. An allocating write holds it from the lookup through the
allocation, the copy-on-write of the untouched part of the cluster, the data
write and the L2 update, so no other request can look at, allocate or
copy-on-write the same cluster halfway (QEMU lets data writes of *different*
allocations overlap in time; txgraph serialises allocations per node, which
is stricter and gives the same results). Overwrites of clusters the image
owns (COPIED) look up under the lock and write the data without it, in
parallel. ``flush`` writes the metadata under the lock, so the order "data,
then refcounts, then L2, then L1, then frees" holds for every request that
completed before it, whichever thread made it; the final ``fdatasync`` of
the file runs after the lock is released.

The safety checks run in the same locked sections as the metadata they read:
entry validation (``owned_write_message``) and the overlap check of guest
data happen during the lookup (for an in-place overwrite too, before the lock
is dropped), the overlap checks of L2 tables, L1 sectors and refcount blocks
inside ``flush``, and ``signal_corruption`` (which writes the corrupt bit)
re-enters the lock its caller holds. The run planned for ``handle_alloc``
(:meth:`Refcounts.plan`) is consumed by the allocation in the same section.
``dirty_slots`` is the map's ``cache.pinned`` set (mutated in place, under
the lock), so a slot with unwritten entries is never evicted. Because freed
clusters are reused (after the flush that unreferenced them), an in-place
overwrite registers its host cluster in ``inplace`` before it drops the
lock and unregisters it after the data write; a flush keeps such a cluster
queued instead of releasing it, so a write still in flight can never land
in a cluster that was meanwhile reallocated (as data or as metadata the
overlap check has already passed).

A planned run of fresh clusters (``handle_alloc``'s one allocation for the
run) is allocated, written and mapped as a whole (``_allocate_run``): one
refcount update and one reservation per free stretch, one data write per
host-contiguous stretch, one L2 update; the clusters land exactly where the
one-cluster path (``_allocate_and_write``, still used for in-place reuse,
invalid entries, data files and encryption) would put them
(tests/unit/io/test_qcow2_alloc_batch.py compares the image files byte for byte).

With extended L2 entries a write into a cluster without a host offset (or into an
owned one with unallocated or zero subclusters, in place) covers only the subclusters
it touches, widened to whole subclusters (``calculate_l2_meta``), and only those become
allocated in the bitmap (``qcow2_alloc_cluster_link_l2``); a zero write there sets zero
subclusters instead (``zero_l2_subclusters``, :meth:`Qcow2Writer.write_zeroes`).

blkdebug events (``BLKDBG_EVENT(bs->file, ...)``, through ``node.announce``) are
raised where QEMU 7.2 raises them, before the request they announce: ``cluster_alloc``
(``qcow2_alloc_clusters``), the COW choice of :meth:`Qcow2Writer._cow_content`,
``write_aio``, ``cluster_free`` where an entry's clusters are unreferenced (their
release waits for the flush, as above), the table and refcount write-backs in
:mod:`.l2_alloc` and :mod:`.refcount`; ``l2_load`` comes from the map (:mod:`.l2map`).

A fresh cluster is backed by disk space before anything points at it
(:meth:`Refcounts.alloc` reserves it; a write of some subclusters reserves only
those, as it writes only those): on a full disk the allocating write fails with
ENOSPC and is rolled back, like QEMU's ``qcow2_alloc_cluster_abort``, and later
flushes still succeed.

A freed cluster is discarded on the file (a hole punched) only where QEMU's
``update_refcount`` would pass the discard down: each free carries its
``qcow2_discard_type`` and the node's ``pass-discard-*`` option decides
(:func:`passes_discard`). A cluster a COW write replaced keeps its blocks
(``QCOW2_DISCARD_NEVER``, the next allocation reuses it), a guest discard or an
unmapping zero write passes by default, an old shared L2 table does not.
"""

from __future__ import annotations

import errno as E
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import reacts_to_events
from txgraph.io.layer import flush_to_os, request_from_parent
from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.cow import CowSteps, chain_reads_zero
from txgraph.io.qcow2.l2_alloc import (
    l2_allocate,
    write_dirty_tables,
    write_l1_sectors,
    write_refcounts,
)
from txgraph.io.qcow2.l2map import COMPRESSED, INVALID, MIXED, UNALLOC, ZERO
from txgraph.io.qcow2.refcount import Refcounts
from txgraph.io.qcow2.truncate import qcow2_extend_for_write
from txgraph.io.qcow2.validate import owned_write_message, unaligned_free
from txgraph.model.options import parse_bool

if TYPE_CHECKING:
    from txgraph.io.qcow2.driver import Qcow2Node

__all__ = ["Qcow2Writer"]

_ALL_ALLOC = 0xFFFFFFFF
_ALL_ZERO = 0xFFFFFFFF << 32
#: bytes of zeros written at a time when a zero write falls back to data
_FALLBACK_CHUNK = 1 << 20


class Qcow2Writer(CowSteps):
    """Write path of one writable qcow2 node (its COW steps: :mod:`.cow`)."""

    def __init__(self, node: Qcow2Node) -> None:
        self.node = node
        self.h = node.header
        self.map = node.map
        self.cs = self.h.cluster_size
        f = node.file
        self.lock = node.lock
        self.refs = Refcounts(
            self.h,
            node._fread,
            self._fwrite,
            self._sync,
            getattr(f, "file_length", f.size)(),
            self._reserve,
            node.take_reftable(),
            node.announce,
        )
        # The map must not evict slots with unwritten entries: they are its pinned set
        # (the same set object, never rebound; guarded by ``lock`` like the map).
        self.dirty_slots: set[int] = node.map.cache.pinned
        self.dirty_l1: set[int] = set()
        #: host clusters unreferenced since the last flush, each with its discard type
        self.pending_free: list[tuple[int, str]] = []
        #: host clusters with an in-place data write in flight (written without the lock)
        self.inplace: dict[int, int] = {}
        #: a request freed clusters (QEMU's ``update_refcount`` with a decrease sets the
        #: refcount cache to depend on the L2 cache): the L2 tables and a flush of the
        #: file come before the next refcount write-back (:func:`.l2_alloc.write_refcounts`)
        self.refs_after_l2 = False
        self.marked_dirty = self.h.dirty
        if self.h.bitmaps_ext is not None:
            # Persistent bitmaps are not maintained by txgraph; QEMU would update them.
            raise OpenError(
                "Cannot open qcow2 images with persistent bitmaps read-write in txgraph"
            )
        if self.h.version >= 3 and self.h.autoclear_features & ~C.AUTOCLEAR_MASK:
            # A writer must clear autoclear bits it does not understand.
            self.h.autoclear_features &= C.AUTOCLEAR_MASK
            self._fwrite(88, struct.pack(">Q", self.h.autoclear_features))
        if self.h.dirty:
            from txgraph.io.qcow2.rebuild import rebuild_refcounts

            rebuild_refcounts(self)
            self._set_incompat(self.h.incompatible_features & ~C.INCOMPAT_DIRTY)
            self.marked_dirty = False
        self.refs.flush_l2 = self._flush_l2_cache

    def _flush_l2_cache(self) -> None:
        """``qcow2_cache_flush(l2_table_cache)`` inside a request: tables with unwritten
        entries (after the refcounts they depend on, made stable), then the file flushed."""
        if self.dirty_slots:
            write_refcounts(self)
            self._sync()
            write_dirty_tables(self)
        self._sync()

    # -- low level --------------------------------------------------------------
    def _fwrite(self, offset: int, data: bytes) -> None:
        self.node.file.write(offset, data)

    def _reserve(self, offset: int, length: int) -> None:
        """Reserve space on the *current* file child (its ``fallocate``, if it has one):
        the child may have been replaced since the writer was made, as when a snapshot
        is appended onto this node's file (qcow2 reaches ``bs->file`` anew every time)."""
        reserve = getattr(self.node.file, "reserve", None)
        if reserve is not None:
            reserve(offset, length)

    def _sync(self) -> None:
        self.node.file.flush()

    def _set_incompat(self, value: int) -> None:
        self.h.incompatible_features = value
        self._fwrite(72, struct.pack(">Q", value))
        self._sync()

    def mark_corrupt_on_disk(self) -> None:
        if self.h.version >= 3:
            self._set_incompat(self.h.incompatible_features | C.INCOMPAT_CORRUPT)

    def _before_metadata_change(self) -> None:
        if not self.marked_dirty and self.h.lazy_refcounts and self.h.version >= 3:
            self._set_incompat(self.h.incompatible_features | C.INCOMPAT_DIRTY)
            self.marked_dirty = True

    def _data(self, delta: int = 0) -> object:
        """The data child; ``delta`` = guest minus host offset (see ``_data_child``)."""
        return self.node._data_child(delta)

    # -- L2 table ownership -------------------------------------------------------
    def _writable_slot(self, i: int) -> None:
        """Make L1 slot ``i`` point at an L2 table owned by this L1 (refcount 1)."""
        l1e = int(self.map.l1[i])
        # get_cluster_table trusts COPIED alone: COPIED with offset 0 is an L2 table at 0,
        # which the overlap check then refuses to write (the header lives there).
        if l1e & C.OFLAG_COPIED:
            self.map.slot(i)
            return
        self._before_metadata_change()
        self.map.slot(i)  # compile from the old table (zeros if none)
        old = l1e & C.L1E_OFFSET_MASK
        l2_allocate(self, i)  # written and hooked up inside the request, as QEMU's
        self.dirty_slots.add(i)  # pinned until the caller's entries are written
        if old:
            self.node.announce("cluster_free")  # get_cluster_table frees the old reference
            self.pending_free.append((old, DISCARD_OTHER))  # the shared table loses this reference

    # -- writes ----------------------------------------------------------------------
    def _check_range(self, offset: int, length: int) -> None:
        end = offset + length
        if offset < 0:
            raise IOFailure("Input/output error", E.EIO)
        if end > self.node.size():
            if not request_from_parent():
                raise IOFailure("Input/output error", E.EIO)
            # a parent writing past the end (a qcow2 stored inside this one allocating
            # clusters): the length grows in memory, and the L1 table with it
            qcow2_extend_for_write(self.node, self, end)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._check_range(offset, len(data))
        mv = memoryview(data).cast("B")
        cb, cs = self.h.cluster_bits, self.cs
        pos, end = offset, offset + len(mv)
        planned_to = 0
        # where the host clusters this request gathered so far end, as the running
        # offset of ``qcow2_alloc_host_offset`` (None: a new call starts here)
        host_pos: int | None = None
        while pos < end:
            c = pos >> cb
            nxt = min(end, (c + 1) << cb)
            chunk = mv[pos - offset : nxt - offset]
            with self.lock:
                raw, bm = self.map.raw_entry(c)
                code = self.map.code(c)
                if code == INVALID:
                    msg = owned_write_message(self.node, c)
                    if msg is not None:  # handle_copied refuses before anything is written
                        raise self.node.signal_corruption(msg)
                owned = (
                    code >= 0
                    and raw & C.OFLAG_COPIED
                    and (not self.h.extended_l2 or bm == _ALL_ALLOC)
                )
                if owned:
                    # The check reads L1, L2 offsets and the refcount table: under the lock.
                    # The cluster stays registered until its data is written, so no flush
                    # can free it (and no allocation reuse it) while the write is in flight.
                    self.node.overlap.check_data(code + (pos & (cs - 1)), len(chunk))
                    self.inplace[code // cs] = self.inplace.get(code // cs, 0) + 1
                    # handle_copied; one that does not follow the gathered clusters
                    # ends the call, and the next call starts with it
                    host_pos = code + cs
                else:
                    run_end: int | None = None
                    if c == offset >> cb or c & (self.map.n - 1) == 0 or planned_to <= c:
                        # handle_alloc takes the whole run of clusters needing allocation
                        # at once (planned and allocated in this one locked section)
                        n = self.map.alloc_run(c, -(-end >> cb) - c)
                        planned_to = c + self._plan_run(c, n, host_pos)
                        if planned_to - c > 1:
                            run_end = self._allocate_run(c, planned_to, pos, end, mv, offset)
                    if run_end is not None:
                        nxt = min(end, planned_to << cb)
                        host_pos = run_end
                    else:
                        host = self._allocate_and_write(c, pos & (cs - 1), chunk, code, raw)
                        host_pos = host + cs
            if owned:  # in-place overwrite: no metadata changes, no lock needed
                try:
                    self.node.file.debug_event("write_aio")  # qcow2_co_pwritev_task
                    self._data((pos & -cs) - code).write(  # type: ignore[attr-defined]
                        code + (pos & (cs - 1)), chunk
                    )
                finally:
                    with self.lock:
                        left = self.inplace.pop(code // cs) - 1
                        if left:
                            self.inplace[code // cs] = left
            pos = nxt

    def _plan_run(self, c: int, n: int, host_pos: int | None) -> int:
        """Plan where the ``n`` clusters from ``c`` that need allocation go, as
        ``handle_alloc`` places them; returns how many the run covers.

        Right after the host clusters the request gathered so far (``host_pos``),
        ``qcow2_alloc_clusters_at`` takes as many of the ``n`` as are free there (the
        rest go on in a new ``qcow2_alloc_host_offset`` call, a new run). When none is
        free there, or the call starts here, the run is the first fit of all ``n``
        (``qcow2_alloc_clusters``). So a freed cluster right after data the write
        continues is reused, where the first fit would skip it for a longer run.
        Runs under ``lock``.
        """
        if host_pos is not None and not self.h.has_data_file:
            # get_cluster_table comes first: a new L2 table may take the place
            self._writable_slot(c >> self.map.l2b)
            at = host_pos // self.cs
            k = self.refs.free_run_at(at, n)
            if k:
                self.refs.plan(k, at=at)
                return k
        self.refs.plan(n)
        return n

    def _cow_read(
        self, c0: int, k: int, keep: tuple[int, int], span: tuple[int, int] | None = None
    ) -> dict[int, bytearray]:
        """``perform_cow``'s reads of the old content around guest bytes about to be
        written: for the clusters ``[c0, c0+k)``, whose ``span`` (relative to cluster
        ``c0``; all of them by default) is rewritten except ``keep``, the COW region
        before ``keep`` and the one after it are read from this node's guest view,
        in one request when both exist and the bytes between are at most
        :data:`COW_MERGE_MAX`, else one request each (as QEMU, so the reads a blkdebug
        or the host's readahead sees are QEMU's). Returns a cluster-sized buffer for
        each cluster (index from ``c0``) a region touches; bytes no region covers are
        zeros, as is anything past the image's end."""
        cs = self.cs
        lo, hi = span or (0, k * cs)
        a, b = keep
        regions = [(x, y) for x, y in ((lo, a), (b, hi)) if y > x]
        if len(regions) == 2 and b - a <= COW_MERGE_MAX:
            regions = [(lo, hi)]
        base = c0 << self.h.cluster_bits
        limit = self.node.size() - base
        out: dict[int, bytearray] = {}
        for x, y in regions:
            got = bytearray(y - x)
            m = min(y, limit) - x
            if m > 0:
                self.node._readinto(base + x, memoryview(got)[:m], zeroed=True)
            for j in range(x // cs, (y - 1) // cs + 1):
                s, e = max(x, j * cs), min(y, (j + 1) * cs)
                out.setdefault(j, bytearray(cs))[s - j * cs : e - j * cs] = got[s - x : e - x]
        return out

    def _allocate_and_write(self, c: int, io: int, chunk: memoryview, code: int, raw: int) -> int:
        """``handle_alloc`` + COW: a fresh cluster gets old content plus the new bytes.
        Returns the host offset the cluster now has.

        Runs under ``lock``. A failed data write gives the fresh cluster back
        (``qcow2_alloc_cluster_abort``); the mapping still shows the old data.
        """
        slot = c >> self.map.l2b
        self._writable_slot(slot)
        self._before_metadata_change()
        fresh = False
        if self.h.has_data_file:
            host = c << self.h.cluster_bits  # external data files map 1:1, no refcounts
        elif code >= 0 and raw & C.OFLAG_COPIED:
            host = code  # an owned cluster with a partial subcluster bitmap: fill in place
        elif (
            code in (MIXED, ZERO)
            and self.h.extended_l2
            and raw & C.OFLAG_COPIED
            and raw & C.L2E_OFFSET_MASK
        ):
            # handle_copied: an owned cluster with unallocated or zero subclusters (all
            # of them zero included: with extended L2 that is still a normal cluster to
            # cluster_needs_new_alloc) is written in place, only its written
            # subclusters becoming allocated
            host = raw & C.L2E_OFFSET_MASK
        elif (
            code == ZERO
            and raw & C.OFLAG_COPIED
            and raw & C.L2E_OFFSET_MASK
            and not self.h.extended_l2
        ):
            host = raw & C.L2E_OFFSET_MASK  # handle_copied: a preallocated zero cluster is reused
        else:
            fresh = True
        span = self._subcluster_span(io, len(chunk), raw, fresh, code)
        if fresh:
            # a write of some subclusters reserves only those (_write_subclusters): QEMU
            # writes nothing else, so the file ends after them and has no other blocks
            host = self.refs.alloc_data(reserve=span is None)
        if span is not None:
            self._write_subclusters(c, io, chunk, host, span, fresh)
            return host
        try:
            if io == 0 and len(chunk) == self.cs:
                content: bytes | bytearray | memoryview = chunk
                event = "write_aio"
            else:
                # (a reused zero cluster is zeroed like a fresh one: handle_alloc_space
                # runs for every cluster the request links, is_zero_cow says zeros)
                zeroable = fresh or code == ZERO
                buf, event = self._cow_content(c, [(io, io + len(chunk))], zeroable)
                buf[io : io + len(chunk)] = chunk
                content = buf
            self.node.overlap.check_data(host, len(content))
            dc = self._data((c << self.h.cluster_bits) - host)
            if event == "cluster_alloc_space":
                self._zeroed_write(dc, [(host, self.cs)], [(host + io, chunk)])
            else:
                self._announce_write(event)
                dc.write(host, content)  # type: ignore[attr-defined]
        except BaseException:
            if fresh:  # never referenced: free again (and reuse next, as QEMU's abort)
                self.refs.release(host // self.cs)
                self.refs_after_l2 = True
            raise
        if not (raw & C.OFLAG_COPIED and host == raw & C.L2E_OFFSET_MASK):
            self._release_entry(raw, code, DISCARD_NEVER)  # qcow2_alloc_cluster_link_l2
        self.map.set_entry(c, host | C.OFLAG_COPIED, _ALL_ALLOC if self.h.extended_l2 else 0)
        self.dirty_slots.add(slot)
        return host

    def _allocate_run(
        self, c0: int, stop: int, pos: int, end: int, mv: memoryview, offset: int
    ) -> int | None:
        """``handle_alloc`` for the planned run ``[c0, stop)`` as a whole: one allocation
        of its clusters, one data write per host-contiguous stretch (a partial first or
        last cluster gets its COW content and a write of its own), one L2 update.

        The clusters land exactly where :meth:`_allocate_and_write`, called once per
        cluster, would put them (:meth:`Refcounts.alloc_data_run`). Only for runs of
        fresh clusters: None (nothing done) when some cluster needs the one-cluster
        path (in-place reuse, an invalid entry, a data file, encryption); else where
        its last cluster ends on the host. Runs under
        ``lock``; a failed data write gives all the run's clusters back and leaves
        the mapping as it was (``qcow2_alloc_cluster_abort``).
        """
        if self.h.has_data_file or self.node.crypto.volume is not None:
            return None
        if self.node.crypto.aes is not None:
            return None
        if self.h.extended_l2 and (
            pos & (self.cs - 1) or min(end, stop << self.h.cluster_bits) & (self.cs - 1)
        ):
            return None  # partial ends widen to subclusters only: the one-cluster path
        k = stop - c0
        raws, codes = self.map.run_entries(c0, k)
        if bool((codes == INVALID).any()) or bool((raws & np.uint64(C.OFLAG_COPIED)).any()):
            return None
        cb, cs = self.h.cluster_bits, self.cs
        stop_pos = min(end, stop << cb)
        slot = c0 >> self.map.l2b
        self._writable_slot(slot)
        self._before_metadata_change()
        hosts = self.refs.alloc_data_run(k)
        try:
            pieces, event = self._run_pieces(c0, k, pos, stop_pos, mv, offset)
            if event == "cluster_alloc_space":
                pieces = []  # QEMU's two requests, not the zero-padded clusters
                zeros: list[tuple[int, int]] = []
                datas: list[tuple[int, bytes | bytearray | memoryview]] = []
                j = 0
                while j < k:
                    s = j
                    while j + 1 < k and hosts[j + 1] == hosts[j] + cs:
                        j += 1
                    j += 1
                    zeros.append((hosts[s], (j - s) * cs))
                    a, b = max(pos, (c0 + s) << cb), min(stop_pos, (c0 + j) << cb)
                    if a < b:
                        datas.append((hosts[s] + a - ((c0 + s) << cb), mv[a - offset : b - offset]))
                self._zeroed_write(self.node.file, zeros, datas)
            elif event == "cow_write" and len(pieces) > 1 and reacts_to_events(self.node.file):
                # perform_cow writes the COW regions and the data as one request: so do
                # its rules see it (elsewhere the pieces keep the data uncopied)
                whole = bytearray(k * cs)
                for j0, n, content in pieces:
                    whole[j0 * cs : (j0 + n) * cs] = content
                pieces = [(0, k, whole)]
            for j0, n, content in pieces:
                data = memoryview(content).cast("B")
                j = j0
                while j < j0 + n:  # one write per host-contiguous stretch
                    s = j
                    while j + 1 < j0 + n and hosts[j + 1] == hosts[j] + cs:
                        j += 1
                    j += 1
                    host = hosts[s]
                    part = data[(s - j0) * cs : (j - j0) * cs]
                    self.node.overlap.check_data(host, len(part))
                    self._announce_write(event)
                    self.node.file.write(host, part)  # type: ignore[arg-type]
        except BaseException:
            for host in reversed(hosts):  # never referenced: free again (QEMU's abort)
                self.refs.release(host // cs)
            self.refs_after_l2 = True
            raise
        for j in np.flatnonzero(raws).tolist():
            self._release_entry(int(raws[j]), int(codes[j]), DISCARD_NEVER)
        # fresh clusters are aligned and in range: each one's code is its host offset
        offs = np.array(hosts, dtype=np.int64)
        entries = offs.astype(np.uint64) | np.uint64(C.OFLAG_COPIED)
        self.map.set_entries(c0, entries, _ALL_ALLOC if self.h.extended_l2 else 0, offs)
        self.dirty_slots.add(slot)
        return hosts[-1] + cs

    def _release_entry(self, raw: int, code: int, kind: str) -> None:
        """Queue the host clusters an L2 entry referenced for release after the next flush
        (announced now, where ``qcow2_free_any_cluster`` frees them); ``kind`` is the
        free's discard type."""
        if self.h.has_data_file:
            return
        if code == COMPRESSED:
            self._freeing()
            coff, csize = self.map.compressed_extent(raw)
            first, last = coff // self.cs, (coff + csize - 1) // self.cs
            self.pending_free.extend((k * self.cs, kind) for k in range(first, last + 1))
        elif not raw & C.OFLAG_COMPRESSED and raw & C.L2E_OFFSET_MASK:
            if not unaligned_free(self.node, raw):
                self._freeing()
                self.pending_free.append((raw & C.L2E_OFFSET_MASK, kind))

    def _freeing(self) -> None:
        """``qcow2_free_clusters`` inside the request: ``cluster_free``, then the
        decrease's ``qcow2_cache_set_dependency``: while the L2 tables depend on
        refcounts not yet written (an allocation since their last write-back), those
        refcount blocks are written and the file flushed now. A failure there is
        only logged by QEMU (the free is lost, a leak) and the request goes on; here
        the blocks stay dirty and the release still waits for the flush."""
        self.node.announce("cluster_free")
        if self.refs.dirty_blocks:
            try:
                self.refs.write_back(tables=False)
                self._sync()
            except IOFailure:
                pass

    def write_zeroes(self, offset: int, length: int, may_unmap: bool) -> None:
        """Whole clusters become zero clusters (v3); partial ones get written zeros, or
        zero subclusters with extended L2 entries (:meth:`_write_zeroes_subclusters`)."""
        self._check_range(offset, length)
        if self.h.extended_l2 and not self.h.crypt_method and not self.h.has_data_file:
            self._write_zeroes_subclusters(offset, length, may_unmap)
            return
        cb, cs = self.h.cluster_bits, self.cs
        end = offset + length
        pos = offset
        while pos < end:
            c = pos >> cb
            nxt = min(end, (c + 1) << cb)
            whole = (pos & (cs - 1)) == 0 and (nxt - pos == cs or nxt == self.node.size())
            # (not for encrypted images: QSD 7.2 writes those heads and tails as data,
            # tests/differential/live/test_crypto_live.py)
            if (
                not whole
                and self.h.version >= 3
                and not self.h.extended_l2
                and not self.h.crypt_method
            ):
                with self.lock:
                    # qcow2_co_pwrite_zeroes: a partial cluster whose rest already reads
                    # as zeros, not allocated here, becomes a zero cluster as a whole
                    if self._rest_reads_zero(c, pos, nxt):
                        self._zero_cluster(c, may_unmap)
                        pos = nxt
                        continue
            if whole and self.h.version >= 3:
                with self.lock:
                    self._zero_cluster(c, may_unmap)
            elif whole and self.node.children.get("backing") is None:
                # qcow2_subcluster_zeroize: v2 has no zero flag, but without a backing
                # file a discard (the entry dropped) reads as zeros just as well.
                self.discard(pos, nxt - pos)  # takes the lock itself
            else:
                self.write(pos, bytes(nxt - pos))
            pos = nxt

    def _write_zeroes_subclusters(self, offset: int, length: int, may_unmap: bool) -> None:
        """A zero write on an image with extended L2 entries, split as QEMU 7.2 splits it.

        The block layer aligns zero writes to the subcluster (qcow2's
        ``pwrite_zeroes_alignment``): an unaligned head and tail, each inside one
        subcluster, and the aligned middle. A head or tail becomes a zero subcluster
        when the rest of its subcluster already reads as zeros and the subcluster holds
        no data (``qcow2_co_pwrite_zeroes``); otherwise it is written as data (the
        block layer's fallback). At the image end a tail counts as aligned. The middle
        is ``qcow2_subcluster_zeroize`` (:meth:`_zeroize`).
        """
        sc = self.cs // C.EXTL2_SUBCLUSTERS
        end, size = offset + length, self.node.size()
        pos = offset
        if pos % sc:
            piece = min(end, -(-pos // sc) * sc)
            self._zero_partial_subcluster(pos, piece, may_unmap)
            pos = piece
        mid = max(pos, end // sc * sc)
        if pos < mid:
            self._zero_aligned(pos, mid, may_unmap)
        if mid < end:
            if end == size:
                self._zero_aligned(mid, end, may_unmap)
            else:
                self._zero_partial_subcluster(mid, end, may_unmap)

    def _zero_partial_subcluster(self, pos: int, nxt: int, may_unmap: bool) -> None:
        """``[pos, nxt)`` inside one subcluster, not aligned to it: the whole subcluster
        becomes a zero one if that reads the same, else the range is written as data."""
        sc = self.cs // C.EXTL2_SUBCLUSTERS
        start = pos // sc * sc
        with self.lock:
            if self._subcluster_zero_outside(start, pos, nxt):
                done = self._zeroize(start, min(start + sc, self.node.size()), may_unmap)
                assert done, "a subcluster without data is never compressed"
                return
        self.write(pos, bytes(nxt - pos))

    def _subcluster_zero_outside(self, start: int, pos: int, nxt: int) -> bool:
        """The subcluster at ``start`` holds no data (unallocated or zero, not compressed)
        and its bytes outside ``[pos, nxt)`` read as zeros (caller holds the lock)."""
        sc = self.cs // C.EXTL2_SUBCLUSTERS
        c = start >> self.h.cluster_bits
        self.node.metadata_preallocated()  # is_zero starts with this node's block status
        if self.map.code(c) in (COMPRESSED, INVALID):
            return False
        _raw, bitmap = self.map.raw_entry(c)
        i = (start & (self.cs - 1)) // sc
        if bitmap & (1 << i):
            return False  # allocated: qcow2_co_pwrite_zeroes refuses it
        if bitmap & (1 << (32 + i)):
            return True
        backing = self.node.children.get("backing")
        if backing is None:
            return True
        stop = min(start + sc, self.node.size())
        return chain_reads_zero(backing, start, pos, want_zero=True) and chain_reads_zero(
            backing, nxt, stop, want_zero=True
        )

    def _zero_aligned(self, start: int, stop: int, may_unmap: bool) -> None:
        """One aligned piece: :meth:`_zeroize`, or the block layer's fallback to a data
        write of the whole piece when the driver refuses it."""
        with self.lock:
            done = self._zeroize(start, stop, may_unmap)
        if not done:  # zeros as data, a bounded buffer at a time (the bounce buffer)
            step = max(self.cs, _FALLBACK_CHUNK)
            for pos in range(start, stop, step):
                self.write(pos, bytes(min(step, stop - pos)))

    def _zeroize(self, start: int, stop: int, may_unmap: bool) -> bool:
        """``qcow2_subcluster_zeroize`` of a subcluster-aligned range (caller holds the
        lock): whole clusters, and a partial last cluster at the image end, become zero
        clusters; a partial cluster gets zero subclusters (:meth:`_zero_subclusters`).
        A partial cluster that is compressed (or invalid) cannot be split: False, with
        the clusters before it already zeroed, as in QEMU."""
        cb, cs, size = self.h.cluster_bits, self.cs, self.node.size()
        pos = start
        while pos < stop:
            c = pos >> cb
            nxt = min(stop, (c + 1) << cb)
            if pos & (cs - 1) == 0 and (nxt - pos == cs or nxt >= size):
                self._zero_cluster(c, may_unmap)
            elif self.map.code(c) in (COMPRESSED, INVALID):
                return False
            else:
                self._zero_subclusters(pos, nxt)
            pos = nxt
        return True

    def _zero_subclusters(self, start: int, stop: int) -> None:
        """``zero_l2_subclusters``: the subclusters of ``[start, stop)`` (one cluster,
        subcluster-aligned, not all of it) read as zeros; a host cluster stays referenced
        (caller holds the lock; the cluster is neither compressed nor invalid)."""
        c = start >> self.h.cluster_bits
        sc = self.cs // C.EXTL2_SUBCLUSTERS
        lo = (start & (self.cs - 1)) // sc
        hi = lo + -(-(stop - start) // sc)
        bits = ((1 << hi) - 1) ^ ((1 << lo) - 1)
        slot = c >> self.map.l2b
        self._writable_slot(slot)  # get_cluster_table: the table is made ours either way
        raw, bitmap = self.map.raw_entry(c)
        new = (bitmap | bits << 32) & ~bits
        if new == bitmap:
            return
        self._before_metadata_change()
        self.map.set_entry(c, raw, new)
        self.dirty_slots.add(slot)

    def _rest_reads_zero(self, c: int, pos: int, nxt: int) -> bool:
        """The head and tail check of ``qcow2_co_pwrite_zeroes`` (caller holds the lock):
        cluster ``c`` is unallocated or a zero cluster, and the parts of it outside
        ``[pos, nxt)`` read as zeros (``is_zero``: block status through the backing chain)."""
        self.node.metadata_preallocated()  # is_zero starts with this node's block status
        code = self.map.code(c)
        if code == ZERO:
            return True
        if code != UNALLOC:
            return False
        backing = self.node.children.get("backing")
        if backing is None:
            return True
        start, end = c << self.h.cluster_bits, min((c + 1) << self.h.cluster_bits, self.node.size())
        return chain_reads_zero(backing, start, pos, want_zero=True) and chain_reads_zero(
            backing, nxt, end, want_zero=True
        )

    def _zero_cluster(self, c: int, unmap: bool) -> None:
        raw, _ = self.map.raw_entry(c)
        code = self.map.code(c)
        if code == ZERO and (not unmap or not raw & C.L2E_OFFSET_MASK):
            return
        slot = c >> self.map.l2b
        self._writable_slot(slot)
        self._before_metadata_change()
        # zero_in_l2_slice: with MAY_UNMAP every allocated cluster loses its host
        # cluster, a zero one that kept its allocation (ZERO_ALLOC) and, with extended
        # L2, one of mixed subclusters as well (both are allocated types there)
        keep = (
            ((not unmap and (code >= 0 or code in (ZERO, MIXED))) or code == INVALID)
            and bool(raw & C.OFLAG_COPIED)
            and not raw & C.OFLAG_COMPRESSED
            and not self.h.has_data_file
        )
        if keep and raw & C.L2E_OFFSET_MASK:
            entry = (raw & C.L2E_OFFSET_MASK) | C.OFLAG_COPIED
        else:
            self._release_entry(raw, code, DISCARD_REQUEST)  # zero_in_l2_slice
            entry = 0
        if self.h.extended_l2:
            self.map.set_entry(c, entry, _ALL_ZERO)
        else:
            self.map.set_entry(c, entry | C.OFLAG_ZERO)
        self.dirty_slots.add(slot)

    def discard(self, offset: int, length: int) -> None:
        """``qcow2_co_pdiscard`` + ``discard_in_l2_slice`` for guest discards.

        Only whole clusters (plus a partial last cluster at the image end) are
        discarded. An allocated cluster, or any cluster over a backing file,
        becomes a zero cluster in v3 (v2 has none and drops the mapping).
        """
        self._check_range(offset, length)
        with self.lock:
            self._discard(offset, length)

    def _discard(self, offset: int, length: int) -> None:
        cs, size = self.cs, self.node.size()
        first = -(-offset // cs)
        end = offset + length
        last = -(-end // cs) if end == size else end // cs
        backing = self.node.children.get("backing") is not None
        for c in range(first, last):
            raw, bm = self.map.raw_entry(c)
            code = self.map.code(c)
            # qcow2_cluster_is_allocated of the entry's cluster type: a cluster of mixed
            # subclusters is one only with a host cluster (without one its type is
            # UNALLOCATED, whatever zero bits it has)
            allocated = (
                code >= 0
                or code == COMPRESSED
                or (code in (ZERO, MIXED) and bool(raw & C.L2E_OFFSET_MASK))
            )
            if backing or allocated:
                if self.h.extended_l2:
                    new, new_bm = 0, _ALL_ZERO
                else:
                    new, new_bm = (C.OFLAG_ZERO if self.h.version >= 3 else 0), 0
            else:
                new, new_bm = raw, bm
            if (new, new_bm) == (raw, bm):
                continue
            slot = c >> self.map.l2b
            self._writable_slot(slot)
            self._before_metadata_change()
            self._release_entry(raw, code, DISCARD_REQUEST)  # discard_in_l2_slice
            self.map.set_entry(c, new, new_bm)
            self.dirty_slots.add(slot)

    # -- flush -------------------------------------------------------------------------
    def flush(self) -> None:
        """Metadata write-back in dependency order, then the children's flush.

        The metadata part runs under ``lock`` (``qcow2_co_flush_to_os``); the
        final flush of the file does not need it (``bdrv_co_flush`` of the child).
        """
        # the cache flushes' own bdrv_flush of the file happen in qcow2_co_flush_to_os,
        # before bdrv_co_flush raises flush_to_disk and goes down to the file
        with self.lock, flush_to_os(self.node):
            for _ in range(3):  # released clusters need one more round to reach the disk
                wrote = self._flush_once()
                if not wrote:
                    break
        self.node.file.flush()
        dc = self.node.children.get("data-file")
        if dc is not None:
            dc.flush()

    def _flush_once(self) -> bool:
        refs_written = write_refcounts(self)
        if not (self.dirty_slots or self.dirty_l1 or self._releasable()):
            return refs_written
        dc = self.node.children.get("data-file")
        if dc is not None:
            dc.flush()
        self._sync()  # the refcounts are stable before the L2 tables (l2 depends on refcounts)
        # qcow2_write_caches writes the L2 tables without a flush of its own: a flush
        # here would be one QEMU does not make (blkdebug would see the file clean)
        write_dirty_tables(self)
        if self.dirty_l1:  # (l2_allocate writes its L1 entry itself; kept for safety)
            self._sync()
            write_l1_sectors(self, self.dirty_l1)
            self.dirty_l1.clear()
            self._sync()
        busy: list[tuple[int, str]] = []
        for host, kind in self.pending_free:
            c = host // self.cs
            if c in self.inplace:
                busy.append((host, kind))  # an in-place write is still in flight: later
                continue
            if self.refs.release(c) == 0 and passes_discard(self.node.options, kind):
                self.node.file.discard(host, self.cs)
            # the decrease reaches the disk only behind a flush of the tables that
            # dropped the reference (the refcount cache now depends on the L2 cache)
            self.refs_after_l2 = True
        self.pending_free[:] = busy
        return True

    def _releasable(self) -> bool:
        """Is a queued release not held back by an in-flight in-place write?"""
        return any(host // self.cs not in self.inplace for host, _kind in self.pending_free)

    def close(self) -> None:
        self.flush()
        with self.lock:
            if self.marked_dirty and not self.node.corrupt:
                self._set_incompat(self.h.incompatible_features & ~C.INCOMPAT_DIRTY)
                self.marked_dirty = False


#: ``perform_cow`` reads both COW regions in one request when the guest data between
#: them is no longer than this (``merge_reads``)
COW_MERGE_MAX = 16384

#: ``enum qcow2_discard_type`` of the frees the writer queues (QEMU 7.2's call sites)
DISCARD_NEVER = "never"
DISCARD_REQUEST = "request"
DISCARD_OTHER = "other"
#: the option deciding ``s->discard_passthrough[type]``
_PASS_DISCARD = {DISCARD_REQUEST: "pass-discard-request", DISCARD_OTHER: "pass-discard-other"}


def passes_discard(options: Mapping[str, Any], kind: str) -> bool:
    """``s->discard_passthrough[type]`` (``qcow2_update_options_prepare``): does a
    cluster whose refcount this free brings to zero get discarded on the file? Never
    for ``QCOW2_DISCARD_NEVER``; for a request, by default when the node itself has
    ``discard=unmap`` (``BDRV_O_UNMAP``); for the others, not by default."""
    key = _PASS_DISCARD.get(kind)
    if key is None:
        return False
    default = kind == DISCARD_REQUEST and options.get("discard", "ignore") in ("unmap", "on")
    value = parse_bool(options.get(key, default))  # validated at open and reopen
    return default if value is None else value
