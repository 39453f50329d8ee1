"""The qcow2 format driver: open, info, reads (writes live in :mod:`.writer`).

Reproduces QEMU 7.2's ``qcow2_open``/``qcow2_do_open`` (validation via
:func:`read_qcow2_header`), ``qcow2_co_preadv_part`` (one copy per run of
host-contiguous clusters, backing chain for unallocated ranges, zeros beyond
the backing's end, subclusters, compressed clusters),
``qcow2_co_block_status`` and ``qcow2_get_specific_info``/``qcow2_get_info``.

The backing and data-file children are looked up in ``self.children`` on
every request: the Runtime attaches them after construction and may swap them
under drain.

Locking: ``Qcow2Node.lock`` (a re-entrant lock, QEMU's ``s->lock`` CoMutex)
is owned by the node and guards everything behind the mapping: the L2 map's
compilation and updates, the refcounts, the writer's dirty sets, the header
fields and the decompressed-cluster cache. Readers hold it only to look up
where data lives (a compiled slot is read without it: its arrays are updated
in place, data first, entry last); the copy of the data itself runs without
it, so readers of allocated data proceed in parallel. The write discipline is
in :mod:`.writer`.

The lock also guards the map's slot cache (compiles, touches and evictions
all happen in locked lookups: :mod:`.slotcache`), the state the overlap
checker reads (:mod:`.overlap`), and the corruption state
(``corruption_events``, ``signaled``, ``corrupt``, ``dead``):
:meth:`Qcow2Node.signal_corruption` takes the lock (re-entrantly, as its
callers mostly hold it already) and emits BLOCK_IMAGE_CORRUPTED while holding
it (safe: see there). ``dead`` is only ever set to True; the unlocked check
at the start of a request (``_alive``) may miss a corruption signalled at that
moment; that request then completes as one already past QEMU's ``bs->drv``
check does, and nothing it changes in memory reaches the disk (a dead node's
flush and close write nothing).
"""

from __future__ import annotations

import errno as E
import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from txgraph.errors import IOFailure
from txgraph.io.buffers import announced_reader, child_readinto
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo, reacts_to_events, recurse_status
from txgraph.io.drivers.file import PREADV_MIN, FileNode, inlinable_file
from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.chainmap import ChainMap
from txgraph.io.qcow2.compress import ClusterCache, DecompressError, decompress, decompress_many
from txgraph.io.qcow2.compressed_write import write_compressed
from txgraph.io.qcow2.crypto import Qcow2Crypto
from txgraph.io.qcow2.fast_read import install_one_cluster_read, remove_one_cluster_read
from txgraph.io.qcow2.header import Qcow2Header, read_qcow2_header
from txgraph.io.qcow2.l2map import COMPRESSED, INVALID, MIXED, UNALLOC, ZERO, L2Map
from txgraph.io.qcow2.overlap import OverlapChecker, parse_overlap_check
from txgraph.io.qcow2.refcount import Refcounts
from txgraph.io.qcow2.snapshots import snapshot_qmp
from txgraph.io.qcow2.update_header import change_backing_file
from txgraph.io.qcow2.validate import read_message

__all__ = ["Qcow2Node", "child_readinto"]


def _eio(desc: str = "Input/output error") -> IOFailure:
    return IOFailure(desc, E.EIO)


def _refuse_write(offset: int, data: bytes) -> None:
    """The write callback of a read-only refcount reader, which only looks refcounts up."""
    raise _eio()


class Qcow2Node(DriverNode):
    """An open qcow2 image on top of its ``file`` child."""

    driver_name = "qcow2"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        from txgraph.errors import OpenError

        if "file" not in self.children:
            raise OpenError('A block device must be specified for "file"')
        f = self.children["file"]
        flen = getattr(f, "file_length", f.size)()
        self.crypto = Qcow2Crypto(options, self._fread)
        self.header: Qcow2Header = read_qcow2_header(
            self._fread, flen, read_only=read_only, crypto=self.crypto
        )
        h = self.header
        #: the plaintext view of the data file when the payload is encrypted (LUKS)
        self._crypt_view: Any = None
        self.cluster_size = h.cluster_size
        self.cluster_bits = h.cluster_bits
        try:
            l1_bytes = self._fread(h.l1_table_offset, h.l1_size * 8)
        except IOFailure as e:
            raise OpenError(f"Could not read L1 table: {e.desc}") from None
        self.l1 = np.frombuffer(l1_bytes, dtype=">u8").astype(np.uint64)
        #: the refcount table as read at open (``qcow2_refcount_init``, which QEMU runs for
        #: read-only opens too); the first writer (at open, or when a read-only node is
        #: reopened writable) decodes it and drops it (``take_reftable``), so a reopen
        #: reads nothing QEMU would not
        self._reftable: bytes | None = self._read_reftable()
        #: guest data lives in ``file`` as stored (no data-file, no encryption), both fixed
        #: at open: a one-cluster read then goes straight to the file child
        self._plain_data = (
            not h.has_data_file and self.crypto.volume is None and self.crypto.aes is None
        )
        #: the file child, its announced read (``announced_reader``) and the child again
        #: when that read may be inlined (``inlinable_file``), kept for the one-cluster
        #: path; replaced whole when ``children["file"]`` is another node
        self._file_reader: tuple[DriverNode | None, Any, FileNode | None] = (None, None, None)
        #: the file child and map the installed one-cluster closure binds
        #: (:mod:`.fast_read`), or None when none is installed
        self._one_cluster_for: tuple[FileNode, L2Map] | None = None
        self.map = L2Map(h, self.l1, self._fread, options, self.announce)
        #: guards map (and its slot cache), refcounts, writer state, header, cache, the
        #: corruption state and the metadata-preallocation answer below (see the module
        #: docstring)
        self.lock = threading.RLock()
        self.cache = ClusterCache()
        #: set when an inconsistency was found (on disk, or at runtime)
        self.corrupt = h.corrupt
        #: messages of corruption events (also sent as BLOCK_IMAGE_CORRUPTED)
        self.corruption_events: list[str] = []
        #: ``event_sink(name, data)``: set by the Runtime to emit QMP events
        self.event_sink: Any = None
        #: QEMU's ``signaled_corruption``: later events are suppressed
        self.signaled = False
        #: after a fatal corruption QEMU drops the driver (``bs->drv = NULL``)
        self.dead = False
        self.overlap = OverlapChecker(self, parse_overlap_check(options))
        self.writer: Any = None
        #: the merged read view of this node's chain, used while nothing writes to it
        self.chain_map = ChainMap(self)
        #: QEMU's ``metadata_preallocation`` once ``metadata_preallocation_checked``: None
        #: until the first block status of this open (:meth:`metadata_preallocated`);
        #: set once under ``lock``, read without it afterwards
        self._metadata_prealloc: bool | None = None
        if not read_only:
            from txgraph.io.qcow2.writer import Qcow2Writer

            self.writer = Qcow2Writer(self)
            self.writer.refs.install(self)

    # -- helpers ---------------------------------------------------------------
    @property
    def file(self) -> DriverNode:
        return self.children["file"]

    def announce(self, event: str) -> None:
        """``BLKDBG_EVENT(bs->file, event)`` for a metadata request: the event goes to
        the file child as it is now (only blkdebug reacts; the data paths keep their own,
        cheaper announcements)."""
        self.children["file"].debug_event(event)

    def _read_reftable(self) -> bytes | None:
        """``qcow2_refcount_init``'s read of the refcount table, announced as
        ``reftable_load``; a failure fails the open with QEMU's message."""
        from txgraph.errors import OpenError

        h = self.header
        self.announce("reftable_load")
        try:
            return self._fread(h.refcount_table_offset, h.refcount_table_clusters * h.cluster_size)
        except IOFailure as e:
            raise OpenError(f"Could not initialize refcount handling: {e.desc}") from None

    def take_reftable(self) -> bytes | None:
        """The refcount table read at open, once (a writer made later reads it anew)."""
        raw, self._reftable = self._reftable, None
        return raw

    def _announces(self) -> bool:
        """Does the file child react to events (a blkdebug node)?"""
        return reacts_to_events(self.children["file"])

    def _fread(self, offset: int, length: int) -> bytes:
        """Metadata read; like QEMU's block layer, refuse ranges past BDRV_MAX_LENGTH."""
        if offset + length > C.BDRV_MAX_LENGTH:
            raise _eio()
        return self.file.read(offset, length)

    def _data_child(self, delta: int = 0) -> DriverNode:
        """The node guest data is read from and written to; ``delta`` is the request's
        guest offset minus its host offset (legacy AES numbers guest sectors)."""
        if self.header.has_data_file:
            dc = self.children.get("data-file")
            if dc is None:
                raise _eio()
        else:
            dc = self.file
        if self.crypto.volume is not None:
            return self._crypted(dc)
        if self.crypto.aes is not None:
            from txgraph.io.crypto.view import EncryptedView

            return EncryptedView(dc, self.crypto.aes, 0, bias=delta)
        return dc

    def _crypted(self, dc: DriverNode) -> DriverNode:
        """The data child decrypted (crypt_physical_offset: sectors of the host offset)."""
        view = self._crypt_view
        if view is None or view.child is not dc:  # first use, or the child was swapped
            from txgraph.io.crypto.view import EncryptedView

            volume = self.crypto.volume
            assert volume is not None
            view = self._crypt_view = EncryptedView(dc, volume.cipher, 0)
        return view  # type: ignore[no-any-return]

    def signal_corruption(
        self, message: str, *, offset: int = -1, size: int = -1, fatal: bool = True
    ) -> IOFailure:
        """QEMU's ``qcow2_signal_corruption``; returns the EIO to raise.

        Fatal only on a writable node: the corrupt bit is written, the event
        says ``fatal: true`` and the node becomes unusable (every later request
        fails with ENOMEDIUM, flush and close write nothing), as QEMU's
        ``bs->drv = NULL``. Read-only nodes report once and keep serving.

        Takes ``lock`` (re-entrant: most callers already hold it, e.g. an
        overlap check during flush or allocation), since it reads and changes
        the header, the writer's state and the corruption flags. The event is
        emitted with the lock held, which cannot deadlock: the sink
        (``Runtime.emit`` -> ``Session.emit_event`` -> ``EventBus.emit``) only
        takes the bus lock, whose subscribers must not block and never call
        into a node (the QMP server only queues the event on its loop), so
        the order is always node lock -> bus lock, never the reverse. Holding
        the lock also makes "first report wins" (``signaled``) exact when two
        requests meet corruption at the same time.
        """
        with self.lock:
            return self._signal_corruption(message, offset, size, fatal)

    def _signal_corruption(self, message: str, offset: int, size: int, fatal: bool) -> IOFailure:
        fatal = fatal and self.writer is not None
        if self.signaled and (not fatal or self.header.corrupt):
            return _eio()
        self.corruption_events.append(message)
        data: dict[str, Any] = {"device": "", "node-name": self.node_name, "msg": message}
        if offset >= 0:
            data["offset"] = offset
        if size >= 0:
            data["size"] = size
        data["fatal"] = fatal
        if self.event_sink is not None:
            self.event_sink("BLOCK_IMAGE_CORRUPTED", data)
        if fatal:
            self.corrupt = True
            # qcow2_mark_corrupt: the in-memory bit is set even where v2 cannot store it
            self.header.incompatible_features |= C.INCOMPAT_CORRUPT
            try:
                self.writer.mark_corrupt_on_disk()
            except IOFailure:
                pass  # qcow2_mark_corrupt's failure is ignored too
            self.dead = True
        elif self.writer is None:
            self.corrupt = True  # read-only: reported, still readable
        self.signaled = True
        return _eio()

    def _alive(self) -> None:
        if self.dead:
            raise IOFailure("No medium found", E.ENOMEDIUM)

    # -- reads -----------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        self._alive()
        vsize = self.size()
        if (
            length > 0
            and offset + length <= vsize
            and (offset >> self.cluster_bits) == ((offset + length - 1) >> self.cluster_bits)
        ):
            code = self._code(offset >> self.cluster_bits)
            if code >= 0:  # fast path: one data cluster, one copy
                dc = self._data_child((offset & -self.cluster_size) - code)
                self.file.debug_event("read_aio")
                return dc.read(code + (offset & (self.cluster_size - 1)), length)
        if length > self.cluster_size and offset + length <= vsize and self.writer is not None:
            # One host-contiguous data run (a copied or mirrored image): one copy straight
            # from the data child, not a zeroed buffer filled and then copied again.
            cb = self.cluster_bits
            c0 = offset >> cb
            with self.lock:
                runs = self.map.runs(c0, ((offset + length - 1) >> cb) - c0 + 1)
            if len(runs) == 1 and runs[0][2] >= 0:
                code = runs[0][2]
                dc = self._data_child((c0 << cb) - code)
                self.file.debug_event("read_aio")
                return dc.read(code + (offset - (c0 << cb)), length)
        buf = bytearray(length)
        if not (
            self.writer is None and length and self.chain_map.readinto(offset, memoryview(buf))
        ):
            self._readinto(offset, memoryview(buf), zeroed=True)
        return bytes(buf)

    def _code(self, c: int) -> int:
        """The host code of cluster ``c``; lock-free once its slot is compiled."""
        codes = self.map.codes[c >> self.map.l2b] if c < self.map.nb_clusters else None
        if codes is None:
            with self.lock:
                return self.map.code(c)
        return int(codes[c & (self.map.n - 1)])

    def readinto(self, offset: int, out: memoryview) -> None:
        """Read into a caller buffer; one-cluster data reads skip the run machinery.

        The one-cluster path is the whole of a random small read, so it does only
        what such a read needs: the compiled L2 code, then the data child's copy
        (the file child itself when the data is plain, see ``_plain_data``; for a
        plain file node the copy out of its mapping, inlined). Such a read also
        installs the closure of :mod:`.fast_read`, which later reads call instead.
        """
        if self.dead:
            self._alive()
        n = len(out)
        cb = self.cluster_bits
        c = offset >> cb
        m = self.map
        if n and c == (offset + n - 1) >> cb and offset + n <= self.header.size:
            codes = m.codes[c >> m.l2b] if c < m.nb_clusters else None
            if codes is not None:
                code = codes.item(c & (m.n - 1))  # a Python int, half the cost of int()
                if code >= 0:
                    host = code + (offset & (self.cluster_size - 1))
                    if self._plain_data:
                        f = self.children["file"]
                        reader = self._file_reader
                        if reader[0] is not f:  # first read, or a child swapped under drain
                            reader = self._file_reader = (
                                f,
                                announced_reader(f, "read_aio"),
                                inlinable_file(f),
                            )
                            if reader[2] is None:
                                remove_one_cluster_read(self)  # its child check fails now
                        fn = reader[2]
                        if fn is not None and n < PREADV_MIN:
                            stamp = self._one_cluster_for
                            if stamp is None or stamp[0] is not fn or stamp[1] is not m:
                                install_one_cluster_read(self, fn)  # the next read's path
                            # FileNode.readinto's small-read branch inlined, one call
                            # less per random read (see inlinable_file for its rules)
                            w = fn._map
                            if w is not None and host + n <= w[1]:
                                try:
                                    live = os.lseek(fn.fd, 0, os.SEEK_END)
                                except OSError:
                                    live = 0
                                if host + n <= live:
                                    out[:] = w[2][host : host + n]
                                    return
                        reader[1](host, out)
                        return
                    self.file.debug_event("read_aio")
                    child_readinto(
                        self._data_child((offset & -self.cluster_size) - code), host, out
                    )
                    return
        if n and self.writer is None and self.chain_map.readinto(offset, out):
            return  # a read-only chain: one copy per run of the merged map
        self._readinto(offset, out, zeroed=False)

    def _readinto(self, offset: int, out: memoryview, *, zeroed: bool) -> None:
        length = len(out)
        if length == 0:
            return
        vsize = self.size()
        if offset + length > vsize:
            inside = max(0, vsize - offset)
            if not zeroed:
                out[inside:] = bytes(length - inside)
            out, length = out[:inside], inside
            if not length:
                return
        cb, cs = self.cluster_bits, self.cluster_size
        c0 = offset >> cb
        c1 = (offset + length - 1) >> cb
        pos = offset
        end = offset + length
        with self.lock:  # one consistent lookup; the copies run without the lock
            runs = self.map.runs(c0, c1 - c0 + 1)
            entries = {
                first: self.map.raw_entry(first)
                for first, _, code in runs
                if code in (COMPRESSED, MIXED)
            }
        comp = [entries[first][0] for first, _, code in runs if code == COMPRESSED]
        if len(comp) > 1 and not self._announces():
            self._inflate_ahead(comp)
        for first, n, code in runs:
            run_end = min(end, (first + n) << cb)
            a, b = pos - offset, run_end - offset
            if code >= 0:
                self.file.debug_event("read_aio")
                child_readinto(
                    self._data_child((first << cb) - code), code + (pos - (first << cb)), out[a:b]
                )
            elif code == ZERO:
                if not zeroed:
                    out[a:b] = bytes(b - a)
            elif code == UNALLOC:
                self._read_backing(pos, out[a:b], zeroed)
            elif code == COMPRESSED:
                self.file.debug_event("read_compressed")
                data = self._decompressed(entries[first][0])
                io = pos & (cs - 1)
                out[a:b] = memoryview(data)[io : io + (b - a)]
            elif code == MIXED:
                self._read_subclusters(first, pos, out[a:b], zeroed, entries[first])
            else:
                raise self._invalid(first)
            pos = run_end

    def _invalid(self, cluster: int) -> IOFailure:
        """Report the INVALID entry of ``cluster`` (message looked up under ``lock``)."""
        with self.lock:
            return self.signal_corruption(read_message(self, cluster))

    def _read_backing(self, pos: int, out: memoryview, zeroed: bool) -> None:
        """Unallocated range: the backing image at the same offset, zeros past its end."""
        backing = self.children.get("backing")
        n = len(out)
        inside = 0
        if backing is not None:
            self.file.debug_event("read_backing_aio")
            inside = max(0, min(n, backing.size() - pos))
            if inside:
                child_readinto(backing, pos, out[:inside])
        if inside < n and not zeroed:
            out[inside:] = bytes(n - inside)

    def _inflate_ahead(self, raws: list[int]) -> None:
        """Inflate the compressed clusters of one request in parallel into the cache.

        QEMU's ``qcow2_co_preadv_part`` decompresses a request's clusters as
        parallel tasks; failures are left to :meth:`_decompressed`, which
        meets and reports them one by one as before.
        """
        with self.lock:
            keys: list[tuple[int, int]] = []
            for raw in raws[: self.cache.capacity // 2]:
                key = self.map.compressed_extent(raw)
                if key not in keys and self.cache.get(key) is None:
                    keys.append(key)
        datas = decompress_many(self.header.compression_type, keys, self._fread, self.cluster_size)
        with self.lock:
            for key, data in zip(keys, datas, strict=True):
                if data is not None:
                    self.cache.put(key, data)

    def _decompressed(self, raw: int) -> bytes:
        """One compressed cluster, given the L2 entry looked up under the lock."""
        key = self.map.compressed_extent(raw)
        # QEMU 7.2 keeps no decompressed clusters: each read of one reads the file. The
        # cache is skipped when the file child can fail requests by rule (blkdebug).
        bypass = self._announces()
        with self.lock:
            data = None if bypass else self.cache.get(key)
        if data is None:
            coff, csize = key
            try:
                data = decompress(
                    self.header.compression_type, self._fread(coff, csize), self.cluster_size
                )
            except DecompressError:
                raise _eio() from None
            if not bypass:
                with self.lock:
                    self.cache.put(key, data)
        return data

    def _read_subclusters(
        self, cluster: int, pos: int, out: memoryview, zeroed: bool, entry: tuple[int, int]
    ) -> None:
        """Extended L2: each 1/32 of the cluster is data, zeros, or the backing."""
        raw, bm = entry
        host = raw & C.L2E_OFFSET_MASK
        scs = self.cluster_size // C.EXTL2_SUBCLUSTERS
        base = cluster << self.cluster_bits
        p, end = pos, pos + len(out)
        while p < end:
            k = (p - base) // scs
            q = min(end, base + (k + 1) * scs)
            a, b = p - pos, q - pos
            if bm >> (32 + k) & 1:
                if not zeroed:
                    out[a:b] = bytes(b - a)
            elif bm >> k & 1:
                self.file.debug_event("read_aio")
                child_readinto(self._data_child(base - host), host + (p - base), out[a:b])
            else:
                self._read_backing(p, out[a:b], zeroed)
            p = q

    def translate(self, guest_offsets: np.ndarray) -> np.ndarray:
        """Batched guest -> host translation (host offset or a negative class code)."""
        with self.lock:
            return self.map.translate(guest_offsets)

    # -- writes (delegated) ---------------------------------------------------
    def _w(self) -> Any:
        self._alive()
        if self.writer is None:
            raise IOFailure("Operation not permitted", E.EPERM)
        if self.corrupt:
            raise _eio()
        return self.writer

    def write(self, offset: int, data: bytes) -> None:
        self._w().write(offset, data)

    def write_compressed(self, offset: int, data: bytes) -> None:
        """``qcow2_co_pwritev_compressed_part`` (:mod:`txgraph.io.qcow2.compressed_write`)."""
        write_compressed(self, offset, data)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self._w().write_zeroes(offset, length, may_unmap)

    def discard(self, offset: int, length: int) -> None:
        self._alive()
        # BDRV_O_UNMAP: with the default discard=ignore, guest discards are dropped.
        if self.options.get("discard", "ignore") in ("unmap", "on"):
            self._w().discard(offset, length)

    def flush(self) -> None:
        if self.dead:
            return  # bdrv_co_flush on a node without driver succeeds, writing nothing
        if self.writer is not None:
            self.writer.flush()
        else:
            super().flush()

    def reopen(self, options: Mapping[str, Any], read_only: bool) -> None:
        """``qcow2_reopen_prepare``/``_commit`` for a read-only change.

        Becoming writable starts the write path (as a writable open would);
        becoming read-only flushes the metadata and marks the image clean first
        (``qcow2_reopen_prepare`` flushes before a node turns read-only).
        """
        if read_only == self.read_only:
            super().reopen(options, read_only)
            return
        if not read_only:
            from txgraph.io.qcow2.writer import Qcow2Writer

            writer = Qcow2Writer(self)
            writer.refs.install(self)  # overlap checks and corruption reports, as at open
            super().reopen(options, read_only)
            self.writer = writer
            return
        if self.writer is not None and not self.dead:  # a dead node writes nothing
            self.writer.close()
        super().reopen(options, read_only)
        self.writer = None

    # -- status and info --------------------------------------------------------
    def size(self) -> int:
        # QEMU keeps whole sectors: an unaligned header size is rounded down.
        return self.header.size // 512 * 512

    def block_status(self, offset: int, length: int) -> BlockStatus:
        """``qcow2_co_block_status`` for the first run of ``[offset, offset+length)``.

        The run is as long as the NBD export would merge it (across L2 tables,
        skipping unallocated L1 ranges in one step: :meth:`L2Map.first_run`).
        """
        self._alive()
        recurse = self.metadata_preallocated()  # decided first, as qcow2_co_block_status does
        cb = self.cluster_bits
        length = min(length, self.size() - offset)
        first = offset >> cb
        with self.lock:  # the walk may compile slots and touch the slot cache
            n, code = self.map.first_run(first, 1 + ((offset + length - 1) >> cb) - first)
            if code == MIXED:
                st = self._subcluster_status(offset, length, first)
                return self._recursed(st) if recurse else st
        n_bytes = min(offset + length, (first + n) << cb) - offset
        if code >= 0:
            st = BlockStatus(offset, n_bytes, True, False, code + (offset - (first << cb)))
            return self._recursed(st) if recurse else st
        if code == ZERO:
            return BlockStatus(offset, n_bytes, True, True)
        if code == UNALLOC:
            return self._unallocated_status(offset, n_bytes)
        if code == INVALID:
            raise self._invalid(first)
        return BlockStatus(offset, n_bytes, True, False)

    def _recursed(self, st: BlockStatus) -> BlockStatus:
        """BDRV_BLOCK_RECURSE on a data run of a metadata-preallocated image: the data
        child's holes there read as DATA|ZERO. Only a run with a host offset
        (``BDRV_BLOCK_OFFSET_VALID``) recurses: not a compressed one, and nothing of an
        encrypted image."""
        if st.host_offset is None or st.zero:
            return st
        if self.crypto.volume is not None or self.crypto.aes is not None:
            return st
        child = self.children.get("data-file") if self.header.has_data_file else self.file
        if child is None:
            return st
        return recurse_status(child, st.offset, st.length, st.host_offset)

    def metadata_preallocated(self) -> bool:
        """``qcow2_detect_metadata_preallocation``, decided once per open, when block
        status is first asked of this node (QEMU's ``metadata_preallocation_checked``).

        True when the image references clearly more clusters than its ``file`` child
        has allocated on the host (at least ``max(real * 10 / 9, real + 2)`` of the
        clusters up to the file's end have a refcount, ``real`` being the allocated
        bytes in whole clusters), so that data clusters may still be holes in the file.
        A child that cannot tell what it has allocated, or a refcount lookup that
        fails, decides "no", as QEMU keeps only an answer of 1.
        """
        got = self._metadata_prealloc
        if got is None:
            with self.lock:  # QEMU holds s->lock for it
                got = self._metadata_prealloc
                if got is None:
                    got = self._metadata_prealloc = self._detect_metadata_preallocation()
        return got

    def _detect_metadata_preallocation(self) -> bool:
        f = self.file
        try:
            file_length = f.size()
            allocated = f.info().actual_size  # bdrv_get_allocated_file_size(bs->file->bs)
            if allocated is None:
                return False  # -ENOTSUP
            real = allocated // self.cluster_size
            threshold = max(real * 10 // 9, real + 2)
            end = -(-file_length // self.cluster_size)
            return self._refcounts().count_referenced(end, threshold) >= threshold
        except (IOFailure, OSError):
            return False

    def _refcounts(self) -> Refcounts:
        """The writer's refcounts, or (read-only) a reader over the table read at open,
        which stays there for a writer made later."""
        if self.writer is not None:
            refs: Refcounts = self.writer.refs
            return refs
        h = self.header
        flen = getattr(self.file, "file_length", self.file.size)()
        refs = Refcounts(
            h, self._fread, _refuse_write, lambda: None, flen, None, self._reftable, self.announce
        )
        refs.install(self)
        return refs

    def _unallocated_status(self, offset: int, n_bytes: int) -> BlockStatus:
        """A range this layer leaves to its backing (zeros without one, or past its end)."""
        backing = self.children.get("backing")
        if backing is None:
            return BlockStatus(offset, n_bytes, False, True)
        bsize = backing.size()
        if offset < bsize:  # the zero answer changes where the backing ends
            return BlockStatus(offset, min(n_bytes, bsize - offset), False, False)
        return BlockStatus(offset, n_bytes, False, True)

    def _subcluster_status(self, offset: int, length: int, cluster: int) -> BlockStatus:
        """Block status inside a cluster whose subclusters differ (extended L2): the run
        of subclusters of one type from ``offset``, data, zero or unallocated, as
        ``qcow2_get_host_offset`` counts them (caller holds the lock)."""
        raw, bitmap = self.map.raw_entry(cluster)
        start = cluster << self.cluster_bits
        sc = self.header.cluster_size // C.EXTL2_SUBCLUSTERS
        i = (offset - start) // sc

        def kind(j: int) -> int:
            return (bitmap >> j & 1) | (bitmap >> (32 + j) & 1) << 1

        first_kind = kind(i)
        j = i + 1
        while j < C.EXTL2_SUBCLUSTERS and kind(j) == first_kind:
            j += 1
        n_bytes = min(offset + length, start + j * sc) - offset
        if first_kind == 1:
            host = (raw & C.L2E_OFFSET_MASK) + (offset - start)
            return BlockStatus(offset, n_bytes, True, False, host)
        if first_kind == 2:
            return BlockStatus(offset, n_bytes, True, True)
        return self._unallocated_status(offset, n_bytes)

    def format_specific(self) -> dict[str, Any]:
        h = self.header
        if h.version < 3:
            data: dict[str, Any] = {
                "compat": "0.10",
                "compression-type": "zlib",
                "refcount-bits": h.refcount_bits,
            }
        else:
            data = {
                "compat": "1.1",
                "compression-type": "zstd" if h.compression_type else "zlib",
                "lazy-refcounts": h.lazy_refcounts,
                "refcount-bits": h.refcount_bits,
            }
            if h.has_data_file:
                if h.data_file is not None:
                    data["data-file"] = h.data_file
                data["data-file-raw"] = h.data_file_raw
            data["corrupt"] = h.corrupt
            data["extended-l2"] = h.extended_l2
        if h.crypt_method:
            data["encrypt"] = self.crypto.format_specific()
        return {"type": "qcow2", "data": data}

    def info(self) -> ImageInfo:
        h = self.header
        fi = self.file.info()
        extra: dict[str, Any] = {"encrypted": True} if h.crypt_method else {}
        if h.snapshots:
            extra["snapshots"] = [snapshot_qmp(s) for s in h.snapshots]
        if h.backing_file is not None and fi.filename and not fi.filename.startswith("json:"):
            extra["full-backing-filename"] = (
                h.backing_file
                if os.path.isabs(h.backing_file) or ":" in h.backing_file
                else os.path.join(os.path.dirname(fi.filename), h.backing_file)
            )
        actual = fi.actual_size
        dc = self.children.get("data-file")
        if dc is not None and actual is not None:
            # Like bdrv_sum_allocated_file_size: every storage child counts, backing does not.
            actual += dc.info().actual_size or 0
        return ImageInfo(
            format="qcow2",
            virtual_size=self.size(),
            filename=fi.filename,
            actual_size=actual,
            backing_file=h.backing_file,
            backing_format=h.backing_format,
            data_file=h.data_file,
            has_external_data_file=h.has_data_file,
            cluster_size=h.cluster_size,
            dirty=h.dirty,
            format_specific=self.format_specific(),
            extra=extra,
        )

    # -- header changes -------------------------------------------------------
    def change_backing_file(
        self, backing_file: str | None, backing_fmt: str | None, *, require: bool = False
    ) -> None:
        """``bdrv_change_backing_file``: a node whose driver was dropped is ENOMEDIUM first."""
        self._alive()
        super().change_backing_file(backing_file, backing_fmt, require=require)

    def driver_change_backing_file(self, backing_file: str | None, backing_fmt: str | None) -> None:
        """``qcow2_change_backing_file``: rebuild the header cluster (:mod:`.update_header`)."""
        change_backing_file(self, backing_file, backing_fmt)

    def close(self) -> None:
        remove_one_cluster_read(self)
        if self.writer is not None and not self.dead:
            try:
                self.writer.close()
            except IOFailure:
                pass  # qcow2_close reports cache flush failures on stderr and goes on
        self.writer = None
