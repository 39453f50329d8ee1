"""qcow2's copy-on-write of a partly written cluster: what QEMU 7.2 copies, zeroes or
leaves alone, and which requests (and blkdebug events) it takes.

Reproduces ``handle_alloc_space`` / ``is_zero_cow`` (COW regions unallocated through the
whole chain are zeroed instead of copied: ``cluster_alloc_space``), ``perform_cow`` with
``merge_cow`` (``cow_read``, the reads, then ``write_aio`` and ``cow_write`` for the one
write of the regions and the data) and, with extended L2 entries, ``calculate_l2_meta``'s
subcluster-wide COW range with ``qcow2_alloc_cluster_link_l2``'s bitmap update.

:class:`CowSteps` is a part of :class:`~.writer.Qcow2Writer` (its base class); every
method runs under the node's ``lock``, held by the writer's caller, like the rest of
the write path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.l2map import MIXED, UNALLOC, ZERO

if TYPE_CHECKING:
    from txgraph.io.driver import DriverNode
    from txgraph.io.qcow2.driver import Qcow2Node
    from txgraph.io.qcow2.header import Qcow2Header
    from txgraph.io.qcow2.l2map import L2Map
    from txgraph.io.qcow2.refcount import Refcounts

__all__ = ["CowSteps", "chain_reads_zero"]


class CowSteps:
    """The COW steps of the qcow2 write path (mixed into :class:`~.writer.Qcow2Writer`)."""

    if TYPE_CHECKING:
        node: Qcow2Node
        h: Qcow2Header
        cs: int
        map: L2Map
        refs: Refcounts
        refs_after_l2: bool
        dirty_slots: set[int]

        def _cow_read(
            self, c0: int, k: int, keep: tuple[int, int], span: tuple[int, int] | None = None
        ) -> dict[int, bytearray]: ...
        def _data(self, delta: int = 0) -> object: ...
        def _reserve(self, offset: int, length: int) -> None: ...

    def _zeroed_write(
        self,
        dc: object,
        zeros: list[tuple[int, int]],
        datas: list[tuple[int, bytes | bytearray | memoryview]],
    ) -> None:
        """``handle_alloc_space`` then the data write, as separate requests: the fresh
        clusters zeroed (``bdrv_co_pwrite_zeroes``), then the guest bytes (``write_aio``).

        Not one write of the zero-padded clusters: the file then holds the same bytes,
        but its zeroed part is an unwritten extent (``FALLOC_FL_ZERO_RANGE``), which the
        file's block status reports as zeros, as ``qemu-img map`` of QEMU's image shows
        (``"zero": true`` on allocated clusters); blkdebug's rules see both requests."""
        for host, n in zeros:
            self.node.overlap.check_data(host, n)
            dc.write_zeroes(host, n)  # type: ignore[attr-defined]
        for host, data in datas:
            self.node.file.debug_event("write_aio")
            dc.write(host, data)  # type: ignore[attr-defined]

    def _announce_write(self, event: str) -> None:
        """The events before a data write: ``write_aio`` (``qcow2_co_pwritev_task``), and
        for one merged with its COW regions ``cow_write`` after it (``perform_cow``)."""
        f = self.node.file
        f.debug_event("write_aio")
        if event == "cow_write":
            f.debug_event("cow_write")

    def _cow_content(
        self, c: int, written: list[tuple[int, int]], zeroable: bool
    ) -> tuple[bytearray, str]:
        """Cluster ``c``'s content before the guest bytes ``written`` (in-cluster ranges)
        go in, and the event of the write that stores it.

        ``handle_alloc_space``: when the parts QEMU would copy read as unallocated
        through the whole chain (``is_zero_cow``), a ``zeroable`` cluster (a fresh one,
        or a zero cluster written in place) is zeroed instead
        (``cluster_alloc_space``, the event returned) and the data is a plain write
        (``write_aio``, see :meth:`_zeroed_write`); else
        ``perform_cow`` reads the untouched parts (``cow_read``, then the read
        events of the clusters it reads) and writes them with the data (``cow_write``,
        the data merged into it: ``merge_cow``).
        """
        if zeroable and self._zero_cow(c, written):
            self.node.announce("cluster_alloc_space")
            return bytearray(self.cs), "cluster_alloc_space"
        self.node.announce("cow_read")
        keep = (min(a for a, _b in written), max(b for _a, b in written))
        return self._cow_read(c, 1, keep).get(0, bytearray(self.cs)), "cow_write"

    def _zero_cow(
        self, c: int, written: list[tuple[int, int]], span: tuple[int, int] | None = None
    ) -> bool:
        """``is_zero_cow``: the regions of cluster ``c`` (of ``span`` in it: the COW
        range, the whole cluster by default) outside ``written`` read as zeros by
        ``bdrv_co_is_zero_fast``: zero clusters or subclusters here, or left to a backing
        chain that reads zeros there (:func:`chain_reads_zero`); never for encrypted
        images (``handle_alloc_space`` skips them)."""
        if self.h.crypt_method:
            return False
        # bdrv_co_is_zero_fast asks this node's block status first, the first of which
        # decides metadata preallocation for the open
        self.node.metadata_preallocated()
        code = self.map.code(c)
        if code not in (UNALLOC, ZERO, MIXED):
            return False  # data, compressed or invalid: block status says data
        base = c << self.h.cluster_bits
        lo, hi = span or (0, self.cs)
        end = min(base + hi, self.node.size())
        regions, p = [], base + lo
        for a, b in sorted(written):
            if base + a > p:
                regions.append((p, base + a))
            p = max(p, base + b)
        if p < end:
            regions.append((p, end))
        if code == ZERO:
            return True
        backing = self.node.children.get("backing")
        if code == MIXED:  # subcluster by subcluster: zero ones read zeros here
            _, bm = self.map.raw_entry(c)
            scs = self.cs // C.EXTL2_SUBCLUSTERS
            left: list[tuple[int, int]] = []
            for a, b in regions:
                for k in range((a - base) // scs, (b - base - 1) // scs + 1):
                    if bm >> k & 1:
                        return False
                    if not bm >> (32 + k) & 1:
                        left.append((max(a, base + k * scs), min(b, base + (k + 1) * scs)))
            regions = left
        return all(chain_reads_zero(backing, a, b, want_zero=False) for a, b in regions)

    def _run_pieces(
        self, c0: int, k: int, pos: int, stop_pos: int, mv: memoryview, offset: int
    ) -> tuple[list[tuple[int, int, bytes | bytearray | memoryview]], str]:
        """The writes of a run ``[c0, c0+k)`` whose guest bytes are ``[pos, stop_pos)``:
        (first cluster within the run, clusters, content) each, and their event. A
        partial first or last cluster gets its COW content (:meth:`_cow_content`,
        once for the run: QEMU's one ``QCowL2Meta``)."""
        cb, cs = self.h.cluster_bits, self.cs
        head = bool(pos & (cs - 1)) or (k == 1 and stop_pos - pos < cs)
        first, last = (1 if head else 0), k
        if last > first and stop_pos & (cs - 1):
            last -= 1
        tail = last < k and last >= first
        event = "write_aio"
        bufs: dict[int, bytearray] = {}
        if head or tail:
            zero = True
            if head:
                a, b = pos - (c0 << cb), min(stop_pos, (c0 + 1) << cb) - (c0 << cb)
                zero = self._zero_cow(c0, [(a, b)])
            if tail and zero:
                zero = self._zero_cow(c0 + last, [(0, stop_pos - ((c0 + last) << cb))])
            if zero:
                self.node.announce("cluster_alloc_space")
                event = "cluster_alloc_space"
                bufs = {
                    j: bytearray(cs) for j in ((0,) if head else ()) + ((last,) if tail else ())
                }
            else:
                self.node.announce("cow_read")
                event = "cow_write"
                base = c0 << cb
                got = self._cow_read(c0, k, (pos - base, stop_pos - base))
                if head:
                    bufs[0] = got.get(0, bytearray(cs))
                if tail:
                    bufs[last] = got.get(last, bytearray(cs))
        pieces: list[tuple[int, int, bytes | bytearray | memoryview]] = []
        if head:
            buf = bufs[0]
            head_end = min(stop_pos, (c0 + 1) << cb)
            buf[pos & (cs - 1) : (pos & (cs - 1)) + head_end - pos] = mv[
                pos - offset : head_end - offset
            ]
            pieces.append((0, 1, buf))
        if last > first:
            a = (c0 + first) << cb
            pieces.append((first, last - first, mv[a - offset : a - offset + (last - first) * cs]))
        if tail:
            buf = bufs[last]
            t = (c0 + last) << cb
            buf[: stop_pos - t] = mv[t - offset : stop_pos - offset]
            pieces.append((last, 1, buf))
        return pieces, event

    def _subcluster_span(
        self, io: int, n: int, raw: int, fresh: bool, code: int
    ) -> tuple[int, int] | None:
        """``calculate_l2_meta`` with extended L2 entries over a cluster that has no host
        offset (its subclusters unallocated or zero, ``*_PLAIN``), or an owned one with
        such subclusters written in place: the COW range is the written bytes widened
        to whole subclusters, not the cluster. None when that is the whole cluster or
        the entry is anything else."""
        if not self.h.extended_l2 or raw & C.OFLAG_COMPRESSED:
            return None
        if not (fresh and not raw & C.L2E_OFFSET_MASK) and not (
            not fresh and code in (MIXED, ZERO)
        ):
            return None
        if self.h.has_data_file or self.node.crypto.volume is not None:
            return None
        scs = self.cs // C.EXTL2_SUBCLUSTERS
        a, b = io // scs * scs, -(-(io + n) // scs) * scs
        return None if (a, b) == (0, self.cs) else (a, b)

    def _write_subclusters(
        self, c: int, io: int, chunk: memoryview, host: int, span: tuple[int, int], fresh: bool
    ) -> None:
        """A fresh cluster written only over ``span`` (whole subclusters): the partial
        subclusters around the data copied or zeroed as :meth:`_cow_content` decides,
        only those subclusters marked allocated in the entry's bitmap
        (``qcow2_alloc_cluster_link_l2``: the others keep their zero or unallocated
        state). Runs under ``lock``; a failed write gives the cluster back."""
        a0, b0 = span
        n = len(chunk)
        scs = self.cs // C.EXTL2_SUBCLUSTERS
        _, old_bm = self.map.raw_entry(c)
        # a partial subcluster already allocated is written in place, not copied
        a = io if old_bm >> (io // scs) & 1 else a0
        b = io + n if old_bm >> ((io + n - 1) // scs) & 1 else b0
        try:
            if fresh:  # alloc_data left the reservation to this write's own range
                self._reserve(host + a, b - a)
            if io == a and io + n == b:
                content: bytes | bytearray | memoryview = chunk
                event = "write_aio"  # no COW region: nothing to copy or zero
            else:
                if self._zero_cow(c, [(io, io + n)], (a, b)):
                    self.node.announce("cluster_alloc_space")
                    buf, event = bytearray(b - a), "cluster_alloc_space"
                else:
                    self.node.announce("cow_read")
                    buf = self._cow_read(c, 1, (io, io + n), (a, b)).get(0, bytearray(self.cs))[a:b]
                    event = "cow_write"
                buf[io - a : io - a + n] = chunk
                content = buf
            self.node.overlap.check_data(host + a, len(content))
            dc = self._data((c << self.h.cluster_bits) - host)
            if event == "cluster_alloc_space":
                self._zeroed_write(dc, [(host + a, b - a)], [(host + io, chunk)])
            else:
                self._announce_write(event)
                dc.write(host + a, content)  # type: ignore[attr-defined]
        except BaseException:
            if fresh:  # never referenced: free again
                self.refs.release(host // self.cs)
                self.refs_after_l2 = True
            raise
        alloc = ((1 << (b0 // scs)) - 1) ^ ((1 << (a0 // scs)) - 1)
        bitmap = (old_bm | alloc) & ~(alloc << 32)
        self.map.set_entry(c, host | C.OFLAG_COPIED, bitmap)
        self.dirty_slots.add(c >> self.map.l2b)


#: drivers whose block status without ``want_zero`` is data wherever the file has bytes
#: (``raw_co_block_status`` of file-posix; the raw format answers with its file's)
_DATA_WITHOUT_WANT_ZERO = frozenset({"file", "host_device", "host_cdrom", "raw"})


def chain_reads_zero(node: DriverNode | None, offset: int, end: int, *, want_zero: bool) -> bool:
    """Does block status say ``[offset, end)`` of ``node`` and its backing chain reads
    as zeros: every run reports zero, an unallocated run asks the next backing, past
    the end of a layer the chain reads zeros (None: no layer at all, zeros).

    ``want_zero`` is qcow2's ``is_zero`` (``bdrv_block_status_above``: a hole in a
    file or raw layer reads zeros); without it, ``bdrv_co_is_zero_fast`` (what
    ``is_zero_cow`` asks): a file or raw layer reports data, holes or not."""
    while node is not None and offset < end:
        if offset >= node.size():
            return True
        if not want_zero and node.driver_name in _DATA_WITHOUT_WANT_ZERO:
            return False
        st = node.block_status(offset, end - offset)
        if st.length <= 0:
            return False
        if not want_zero and st.data and st.zero:
            return False  # a zero found by BDRV_BLOCK_RECURSE, which only want_zero asks
        if not st.zero:
            below = node.children.get("backing")
            if st.allocated or not chain_reads_zero(
                below, offset, offset + st.length, want_zero=want_zero
            ):
                return False
        offset += st.length
    return True
