"""The ``qed`` format: header checks, two-level tables, backing, reads and writes.

Reproduces QEMU 7.2's block/qed.c: ``bdrv_qed_do_open``'s checks in order
and texts (features, cluster size, table size, image size, L1 offset, header
size, backing name, the backing format ``raw`` when the no-probe feature is
set), ``qed_find_cluster`` (L2 entry 1 is a zero cluster, 0 unallocated,
anything else must lie inside the file past the header), block status like
``bdrv_qed_co_block_status`` and the write path of ``qed_aio_write_data``:
allocating writes set the need-check feature first, take whole clusters at the
end of the file (the parts of the first and last cluster the guest did not
write are copied from the backing, zeroes without one - also for a zero
cluster, as QEMU 7.2 does), a missing L2 table is
allocated after the data, then the L2 and L1 entries are written; zero writes
of whole clusters set zero-cluster entries (``bdrv_qed_co_pwrite_zeroes``).
QEMU clears the need-check feature from a timer once writes settle; txgraph
clears it on flush and close (deterministic; the image is consistent at both).
"""

from __future__ import annotations

import errno as E
import struct
import threading
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.formats.base import DATA, UNALLOC, ZERO, ImageFormatNode, Run, le
from txgraph.io.formats.table_cache import LruCache
from txgraph.io.registry import register

__all__ = ["QedNode"]

_MAGIC = 0x00444551
_F_BACKING_FILE = 0x01
_F_NEED_CHECK = 0x02
_F_BACKING_FORMAT_NO_PROBE = 0x04
_FEATURE_MASK = 0x07
_ZERO_CLUSTER = 1


def _pow2(v: int) -> bool:
    return v > 0 and not v & (v - 1)


@register("qed")
class QedNode(ImageFormatNode):
    """A QED image over ``file``, with an optional ``backing``."""

    driver_name = "qed"
    supports_backing = True
    data_read_event = "read_aio"  # qed_aio_read_data
    backing_read_event = True  # qed_read_backing_file

    def open_image(self) -> None:
        #: QEMU's L2 table cache (qed-l2-cache.c, under ``lock``)
        self._l2_cache = LruCache(50)
        h = self.fread(0, 64)
        (
            magic,
            cs,
            table_size,
            header_size,
            features,
            _compat,
            autoclear,
            l1_offset,
            image_size,
            bf_offset,
            bf_size,
        ) = le("IIIIQQQQQII", h)
        if magic != _MAGIC:
            raise OpenError("Image not in QED format")
        if features & ~_FEATURE_MASK:
            raise OpenError(f"Unsupported QED features: {features & ~_FEATURE_MASK:x}")
        if not _pow2(cs) or cs < 4096 or cs > 64 << 20:
            raise OpenError("QED cluster size is invalid")
        self.cluster_size = cs
        self.header_size = header_size
        self.file_end: int = self.file_length() // cs * cs
        if not _pow2(table_size) or table_size > 16:
            raise OpenError("QED table size is invalid")
        entries = cs * table_size // 8
        if image_size % 512 or image_size > entries * entries * cs:
            raise OpenError("QED image size is invalid")
        self.table_size = table_size
        if not self._table_offset_ok(l1_offset):
            raise OpenError("QED table offset is invalid")
        if header_size > 0xFFFFFFFF // cs:
            raise OpenError("QED header size is too large")
        self.entries = entries
        self.l1_offset = l1_offset
        self.features = features
        self.virtual_size = image_size
        if features & _F_BACKING_FILE:
            if bf_offset + bf_size > cs * header_size:
                raise OpenError("QED backing filename offset is invalid")
            if bf_size >= 1024:
                raise OpenError("Failed to read backing filename")
            name = self.fread(bf_offset, bf_size)
            self.backing_file = name.split(b"\0", 1)[0].decode("utf-8", "replace")
            if features & _F_BACKING_FORMAT_NO_PROBE:
                self.backing_format = "raw"
        if autoclear and not self.read_only:
            # Unknown autoclear bits are knocked out (there are no known ones).
            self.file.write(32, struct.pack("<Q", 0))
        self.l1 = self.read_table(l1_offset, entries * 8)
        if features & _F_NEED_CHECK and not self.read_only:
            self._repair()

    def _cluster_ok(self, offset: int) -> bool:
        """``qed_check_cluster_offset``: past the header, inside the file, aligned."""
        cs = self.cluster_size or 1
        return not offset % cs and self.header_size * cs <= offset < self.file_end

    def _table_offset_ok(self, offset: int) -> bool:
        """``qed_check_table_offset``: first and last cluster of the table are valid offsets.

        The last cluster is ``offset + (table_size - 1) * cluster_size`` and must lie past the
        first (QEMU's overflow check), so a one-cluster table is always refused.
        """
        cs = self.cluster_size or 1
        end = offset + (self.table_size - 1) * cs
        return (
            (end & 0xFFFFFFFFFFFFFFFF) > offset
            and self._cluster_ok(offset)
            and self._cluster_ok(end)
        )

    def _repair(self) -> None:
        """``qed_check`` with fix: drop table entries that point outside the file."""
        for i in range(min(self.entries, len(self.l1) // 8)):
            l2 = self.table_entry(self.l1, i, 8, "little")
            if l2 and not self._table_offset_ok(l2):
                self.set_table_entry(self.l1, i, 0, 8, "little")
                self.file.write(self.l1_offset + i * 8, bytes(8))
        self.features &= ~_F_NEED_CHECK
        self.file.write(16, struct.pack("<Q", self.features))

    # -- mapping ------------------------------------------------------------------------
    def _l2(self, offset: int) -> tuple[int, int]:
        """(L2 table offset or 0, index in it) for guest ``offset``."""
        cs = self.cluster_size or 1
        cluster = offset // cs
        l1_index, l2_index = divmod(cluster, self.entries)
        l2 = self.table_entry(self.l1, l1_index, 8, "little")
        if l2 and not self._table_offset_ok(l2):
            raise IOFailure("Invalid argument", E.EINVAL)
        return l2, l2_index

    def _l2_table(self, l2: int) -> bytearray:
        """``qed_read_l2_table``: a cached table, else ``l2_load`` and the table read."""
        table = self._l2_cache.find(l2)
        if table is None:
            self.file.debug_event("l2_load")
            table = self._l2_cache.insert(l2, bytearray(self.fread(l2, self.entries * 8)))
        return table

    def map_run(self, offset: int, length: int) -> Run:
        cs = self.cluster_size or 1
        within = offset % cs
        l2, l2_index = self._l2(offset)
        if not l2:
            span = (self.entries - l2_index) * cs - within
            return Run(UNALLOC, min(length, span))
        count = min(self.entries - l2_index, 1 + (within + length - 1) // cs)
        ents = struct.unpack_from(f"<{count}Q", self._l2_table(l2), l2_index * 8)
        first = ents[0]
        kind = UNALLOC if first == 0 else ZERO if first == _ZERO_CLUSTER else DATA
        if kind == DATA and not self._cluster_ok(first):
            raise IOFailure("Invalid argument", E.EINVAL)
        n = min(length, cs - within)
        for i, e in enumerate(ents[1:], 1):
            if n >= length:
                break
            same = e == first if kind != DATA else e == first + i * cs
            if not same:
                break
            n = min(length, n + cs)
        return Run(kind, n, first + within if kind == DATA else 0)

    # -- writes -------------------------------------------------------------------------
    def _set_need_check(self) -> None:
        if not self.features & _F_NEED_CHECK:
            self.features |= _F_NEED_CHECK
            self.file.write(16, struct.pack("<Q", self.features))

    def _clear_need_check(self) -> None:
        if self.features & _F_NEED_CHECK and not self.read_only:
            self.features &= ~_F_NEED_CHECK
            self.file.write(16, struct.pack("<Q", self.features))

    def _alloc(self, clusters: int) -> int:
        offset = self.file_end
        self.file_end += clusters * (self.cluster_size or 1)
        return offset

    def _l2_for_write(self, offset: int) -> tuple[int, int, bool]:
        l2, idx = self._l2(offset)
        return l2, idx, l2 == 0

    def _update_l2(self, offset: int, value: int, l2: int, idx: int) -> None:
        """``qed_aio_write_l2_update`` (``l2_update``), then for a new table
        ``qed_aio_write_l1_update`` (``l1_update``); the cache is written through.

        A new table is followed by a flush of the qed node itself
        (``qed_write_l2_table`` with ``flush``: ``bdrv_co_flush(s->bs)``), through the
        generic layer, so its primary child sees ``flush_to_os`` (and ``flush_to_disk``
        when the node was written since its last flush) and is flushed: a failure
        fails the request before the L1 entry is written, as in QEMU."""
        if not l2:
            l2 = self._alloc(self.table_size)
            table = bytearray(self.entries * 8)
            struct.pack_into("<Q", table, idx * 8, value)
            self.file.debug_event("l2_update")
            self.file.write(l2, bytes(table))
            self._l2_cache.insert(l2, table)
            self._write_flusher = threading.get_ident()
            try:
                self.flush()
            finally:
                self._write_flusher = None
            cs = self.cluster_size or 1
            l1_index = offset // cs // self.entries
            self.set_table_entry(self.l1, l1_index, l2, 8, "little")
            self.file.debug_event("l1_update")
            self.file.write(self.l1_offset + l1_index * 8, struct.pack("<Q", l2))
        else:
            self.file.debug_event("l2_update")
            self.file.write(l2 + idx * 8, struct.pack("<Q", value))
            struct.pack_into("<Q", self._l2_table(l2), idx * 8, value)

    def write_run(self, offset: int, data: bytes) -> int:
        """``qed_aio_write_data`` for the part of ``data`` inside one cluster."""
        cs = self.cluster_size or 1
        within = offset % cs
        n = min(len(data), cs - within)
        run = self.map_run(offset, n)
        if run.kind == DATA:
            self.file.debug_event("write_aio")  # qed_aio_write_main
            self.file.write(run.host, bytes(data[:n]))
            return n
        l2, idx = self._l2(offset)
        self._set_need_check()
        start = offset - within
        # qed_aio_write_cow: each untouched part comes from the backing (read_backing_aio)
        # and is written (cow_write) before the data (write_aio)
        end = min(start + cs, self.virtual_size)
        for part in (within, end - (offset + n)):
            if part > 0:
                if "backing" in self.children:
                    self.file.debug_event("read_backing_aio")
                self.file.debug_event("cow_write")
        self.file.debug_event("write_aio")
        # QEMU 7.2 fills the rest of the cluster from the backing even when the cluster was a
        # zero cluster (qed_aio_write_cow does not look at it): the guest then reads backing
        # data where it read zeroes. Reproduced, since QEMU is the reference.
        content = bytearray(self.backing_data(start, min(cs, self.virtual_size - start)))
        content.extend(bytes(cs - len(content)))
        content[within : within + n] = data[:n]
        host = self._alloc(1)
        self.file.write(host, bytes(content))
        self._update_l2(offset, host, l2, idx)
        return n

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        """``bdrv_qed_co_pwrite_zeroes``: whole clusters become zero clusters."""
        cs = self.cluster_size or 1
        self._check(offset, length)
        if offset % cs or length % cs:
            super().write_zeroes(offset, length, may_unmap=may_unmap)
            return
        with self.lock:
            for pos in range(offset, offset + length, cs):
                run = self.map_run(pos, cs)
                if run.kind == ZERO:
                    continue
                if run.kind == DATA:
                    self.file.debug_event("write_aio")
                    self.file.write(run.host, bytes(cs))
                    continue
                l2, idx = self._l2(pos)
                self._set_need_check()
                self._update_l2(pos, _ZERO_CLUSTER, l2, idx)

    #: the thread of a write flushing the node (``qed_write_table``), set and cleared by
    #: that write under ``self.lock``: its flush only flushes the children (the
    #: need-check timer's work is for the guest's own flushes); other threads' flushes
    #: compare it with their own id, so they are never mistaken for it
    _write_flusher: int | None = None

    def flush(self) -> None:
        if self._write_flusher == threading.get_ident():
            super().flush()
            return
        with self.lock:
            self.file.flush()
            self._clear_need_check()
        super().flush()

    def close(self) -> None:
        try:
            with self.lock:
                self._clear_need_check()
        except IOFailure:
            pass  # bdrv_qed_close ignores a failed header update

    def info(self) -> Any:
        info = super().info()
        info.dirty = bool(self.features & _F_NEED_CHECK)
        return info
