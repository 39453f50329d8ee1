"""The ``vmdk`` format: sparse (VMDK4) and flat extents, descriptors, reads and writes.

Reproduces QEMU 7.2's block/vmdk.c for what qemu-img creates
(monolithicSparse, monolithicFlat, twoGbMaxExtentSparse/Flat,
streamOptimized): ``vmdk_open`` (a binary sparse header in ``file``, else a
text descriptor whose extents are the children ``extents.N``),
``vmdk_open_vmdk4`` and ``vmdk_add_extent`` / ``vmdk_init_tables`` with their
checks and texts (the footer of a grain directory at the end,
version, grain table size, granularity, L1 size, truncated files),
``vmdk_parent_open`` (``parentFileNameHint`` -> backing, format vmdk),
``vmdk_read_cid``, ``get_cluster_offset`` (grain directory -> grain table ->
grain; 1 is a zeroed grain when the image has the zero-grain flag),
compressed grains with markers (``vmdk_read_extent``), block status as
``vmdk_co_block_status``, and writes as ``vmdk_pwritev``: a new grain is
taken at the extent's next free sector, filled from the backing around the
guest data (``get_whole_cluster``), then its entry is written to the grain
table and to the redundant one (``vmdk_L2update``). A streamOptimized extent
takes each grain once, compressed (:meth:`VmdkNode._write_stream_grain`), and
compressed writes are plain writes (``vmdk_co_pwritev_compressed``). Writes
to VMDK3/seSparse extents are not implemented.
"""

from __future__ import annotations

import errno as E
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus, driver_write
from txgraph.io.formats.base import DATA, UNALLOC, ZERO, ImageFormatNode, Run, eio, le
from txgraph.io.formats.table_cache import CountingCache
from txgraph.io.formats.vmdk_desc import (
    DESC_MAX,
    DESC_SIZE,
    parent_hint,
    parse_descriptor,
    read_cid,
)
from txgraph.io.registry import register

__all__ = ["VmdkNode"]

_FLAG_RGD = 1 << 1
_FLAG_ZERO_GRAIN = 1 << 2
_FLAG_MARKER = 1 << 17
_GD_AT_END = 0xFFFFFFFFFFFFFFFF
_MARKER_END_OF_STREAM, _MARKER_FOOTER = 0, 3
_GTE_ZEROED = 1


@dataclass
class _Extent:
    child: str
    flat: bool
    sectors: int
    start: int  # first guest sector
    type: str = ""
    flat_offset: int = 0
    cluster_sectors: int = 0
    l1: bytearray | None = None
    l1_backup: bytearray | None = None
    l1_size: int = 0
    l1_entry_sectors: int = 0
    l2_size: int = 0
    compressed: bool = False
    has_marker: bool = False
    zero_grain: bool = False
    next_sector: int = 0

    @property
    def end(self) -> int:
        return self.start + self.sectors


@register("vmdk")
class VmdkNode(ImageFormatNode):
    """A VMDK image: ``file`` (sparse image or descriptor) and its ``extents.N``."""

    driver_name = "vmdk"
    supports_backing = True
    data_child_is_file = True

    def open_image(self) -> None:
        #: each sparse extent's grain-table cache (QEMU's per-extent l2_cache), under ``lock``
        self._l2_caches: dict[str, CountingCache] = {}
        flen = self.file_length()
        if flen < 4:
            raise OpenError("File is too small, not a valid image")
        head = self.fread(0, min(flen, DESC_MAX))
        self.extents: list[_Extent] = []
        self.total_sectors = 0
        if head[:4] in (b"KDMV", b"COWD"):
            self.create_type = "monolithicSparse"
            self._open_sparse("file", head, "")
            self.desc_offset = 0x200
        else:
            desc = parse_descriptor(head, self.filename)
            self.create_type = desc.create_type
            self.desc_offset = 0
            for i, ext in enumerate(desc.extents):
                key = f"extents.{i}"
                if key not in self.children:
                    raise OpenError(f"Could not open '{ext.path}': No such file or directory")
                if ext.flat:
                    self._add_extent(
                        _Extent(
                            key,
                            True,
                            ext.sectors,
                            self.total_sectors,
                            ext.type,
                            ext.flat_offset << 9,
                            cluster_sectors=ext.sectors,
                        )
                    )
                elif ext.type in ("SPARSE", "VMFSSPARSE"):
                    n = self.file_length(key)
                    if n < 4:
                        raise OpenError("File is too small, not a valid image")
                    self._open_sparse(key, self.fread(0, 4, key), ext.type)
                else:
                    raise OpenError(f"txgraph: '{ext.type}' extents are not supported")
        self.virtual_size = self.total_sectors * 512
        text = self.fread(self.desc_offset, DESC_SIZE)
        hint = parent_hint(text)
        if hint is not None:
            self.backing_file = hint
            self.backing_format = "vmdk"
        cid, parent = read_cid(text, False), read_cid(text, True)
        if cid is None or parent is None:
            raise OpenError(f"Could not open '{self.filename}': Invalid argument")
        self.cid, self.parent_cid = cid, parent
        first = self.extents[0] if self.extents else None
        same = first is not None and all(
            e.flat == first.flat
            and e.compressed == first.compressed
            and e.cluster_sectors == first.cluster_sectors
            for e in self.extents
        )
        self.get_info_ok = same
        self.cluster_size = (
            first.cluster_sectors * 512 if same and first and not first.flat else None
        )

    def _add_extent(self, ext: _Extent) -> None:
        self.extents.append(ext)
        self.total_sectors += ext.sectors

    def _open_sparse(self, child: str, magic: bytes, typ: str) -> None:
        """``vmdk_open_sparse`` -> ``vmdk_open_vmdk4`` for one sparse extent file."""
        if magic[:4] == b"COWD":
            raise OpenError("txgraph: VMDK3 (COWD) extents are not supported")
        if magic[:4] != b"KDMV":
            raise OpenError("Image not in VMDK format")
        h = self.fread(4, 76, child)
        flen = self.file_length(child)
        (
            version,
            flags,
            capacity,
            granularity,
            desc_offset,
            _desc_size,
            gtes,
            rgd_offset,
            gd_offset,
            grain_offset,
        ) = le("IIQQQQIQQQ", h)
        (compress_algo,) = le("H", h, 73)
        if capacity == 0 and desc_offset:
            # vmdk_open_vmdk4: a zero-capacity sparse file is a descriptor holder.
            at = (desc_offset << 9) & 0xFFFFFFFFFFFFFFFF
            if at >= 1 << 63:
                raise OpenError("Could not read from file: Input/output error")
            parse_descriptor(self.fread(at, min(flen, DESC_MAX), child), self.filename)
            raise OpenError(
                "txgraph: a descriptor embedded in a zero-capacity sparse file is not supported"
            )
        if gd_offset == _GD_AT_END:
            foot = self.fread(
                flen // 512 * 512 - 1536 if flen % 512 == 0 else (flen + 511) // 512 * 512 - 1536,
                1536,
                child,
            )
            (f_size, f_type) = le("II", foot, 8)
            eos_val, eos_size, eos_type = le("QII", foot, 1024)
            if (
                foot[512:516] != b"KDMV"
                or f_size != 0
                or f_type != _MARKER_FOOTER
                or eos_val
                or eos_size
                or eos_type != _MARKER_END_OF_STREAM
            ):
                raise OpenError("Invalid footer")
            h = foot[516 : 516 + 76]
            (
                version,
                flags,
                capacity,
                granularity,
                desc_offset,
                _desc_size,
                gtes,
                rgd_offset,
                gd_offset,
                grain_offset,
            ) = le("IIQQQQIQQQ", h)
            (compress_algo,) = le("H", h, 73)
        compressed = compress_algo == 1
        if version > 3:
            raise OpenError(f"Unsupported VMDK version {version}")
        if version == 3 and not self.read_only and not compressed:
            raise OpenError("VMDK version 3 must be read only")
        if gtes > 512:
            raise OpenError("L2 table size too big")
        l1_entry_sectors = (gtes * granularity) & 0xFFFFFFFF  # QEMU keeps it in 32 bits
        if l1_entry_sectors == 0:
            raise OpenError("L1 entry size is invalid")
        # QEMU keeps the L1 size in 32 bits: a huge capacity wraps (and then reads zeroes).
        l1_size = ((capacity + l1_entry_sectors - 1) // l1_entry_sectors) & 0xFFFFFFFF
        backup = rgd_offset << 9 if flags & _FLAG_RGD else 0
        nb_sectors = (flen + 511) // 512
        if nb_sectors < grain_offset:
            need = (grain_offset * 512) & 0xFFFFFFFFFFFFFFFF  # printed as QEMU's int64_t
            need = need - (1 << 64) if need >= 1 << 63 else need
            raise OpenError(f"File truncated, expecting at least {need} bytes")
        if granularity > 0x200000:
            raise OpenError("Invalid granularity, image may be corrupt")
        if l1_size > 32 * 1024 * 1024:
            raise OpenError("L1 size too big")
        ext = _Extent(
            child,
            False,
            capacity,
            self.total_sectors,
            typ,
            cluster_sectors=granularity,
            l1_size=l1_size,
            l1_entry_sectors=l1_entry_sectors,
            l2_size=gtes,
            compressed=compressed,
            has_marker=bool(flags & _FLAG_MARKER),
            zero_grain=bool(flags & _FLAG_ZERO_GRAIN),
            next_sector=(nb_sectors + granularity - 1) // granularity * granularity,
        )
        fname = self.children[child].info().filename
        try:
            ext.l1 = self._table(gd_offset << 9, l1_size * 4, child)
        except IOFailure as err:
            raise OpenError(f"Could not read l1 table from extent '{fname}': {err.desc}") from None
        if backup:
            try:
                ext.l1_backup = self._table(backup, l1_size * 4, child)
            except IOFailure as err:
                raise OpenError(
                    f"Could not read l1 backup table from extent '{fname}': {err.desc}"
                ) from None
        self._add_extent(ext)
        if compressed:
            self.create_type = "streamOptimized"

    def _table(self, offset: int, length: int, child: str) -> bytearray:
        if length == 0:
            return bytearray()
        offset &= 0xFFFFFFFFFFFFFFFF  # QEMU shifts sector numbers in 64 bits
        stored = max(0, min(length, self.file_length(child) - offset))
        if offset + length > (1 << 63) - (1 << 30):
            raise eio()
        return bytearray(self.fread(offset, stored, child) if stored else b"")

    # -- mapping ------------------------------------------------------------------------
    def _l2_table(self, ext: _Extent, l2: int) -> bytearray:
        """``get_cluster_offset``'s grain-table lookup in the extent's 16-table cache; a
        miss raises ``l2_load`` on the extent's file and reads the whole table."""
        cache = self._l2_caches.setdefault(ext.child, CountingCache(16))
        table = cache.find(l2)
        if table is None:
            self.children[ext.child].debug_event("l2_load")
            table = cache.insert(l2, bytearray(self.fread(l2 * 512, ext.l2_size * 4, ext.child)))
        return table

    def _extent(self, sector: int) -> _Extent:
        for ext in self.extents:
            if ext.start <= sector < ext.end:
                return ext
        raise eio()

    def _locate(self, ext: _Extent, sector: int) -> tuple[int, int, int]:
        """(L2 table sector or 0, index in it, L1 index) of the extent sector."""
        rel = sector - ext.start
        l1_index = rel // ext.l1_entry_sectors
        if l1_index >= ext.l1_size:
            return 0, 0, -1
        assert ext.l1 is not None
        l2 = self.table_entry(ext.l1, l1_index, 4, "little")
        return l2, (rel // ext.cluster_sectors) % ext.l2_size, l1_index

    def map_run(self, offset: int, length: int) -> Run:
        sector = offset >> 9
        ext = self._extent(sector)
        ext_end = ext.end * 512
        if ext.flat:
            return Run(
                DATA,
                min(length, ext_end - offset),
                ext.flat_offset + offset - ext.start * 512,
                ext.child,
            )
        cbytes = ext.cluster_sectors * 512
        within = (offset - ext.start * 512) % cbytes
        n = min(length, cbytes - within, ext_end - offset)
        l2, idx, _ = self._locate(ext, sector)
        if not l2:
            return Run(UNALLOC, n)
        count = min(ext.l2_size - idx, 1 + (within + length - 1) // cbytes)
        ents = struct.unpack_from(f"<{count}I", self._l2_table(ext, l2), idx * 4)
        first = ents[0]
        if first == 0 or (ext.zero_grain and first == _GTE_ZEROED):
            kind = UNALLOC if first == 0 else ZERO
            for e in ents[1:]:
                if n >= length or e != first or offset + n >= ext_end:
                    break
                n = min(length, n + cbytes, ext_end - offset)
            return Run(kind, n)
        if ext.compressed:
            return Run("compressed", n, first * 512, ext.child)
        for i, e in enumerate(ents[1:], 1):
            if n >= length or e != first + i * ext.cluster_sectors or offset + n >= ext_end:
                break
            n = min(length, n + cbytes, ext_end - offset)
        return Run(DATA, n, first * 512 + within, ext.child)

    def recurse(self, run: Run) -> bool:
        """``vmdk_co_block_status`` adds RECURSE for flat extents (they may have holes)."""
        return self._extent_of_child(run.child).flat

    def _extent_of_child(self, child: str) -> _Extent:
        return next(e for e in self.extents if e.child == child)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        out = bytearray(length)
        pos = 0
        with self.lock:
            while pos < length:
                run = self.map_run(offset + pos, length - pos)
                n = min(run.length, length - pos)
                if run.kind == DATA:
                    self.children[run.child].debug_event("read_aio")  # vmdk_read_extent
                    out[pos : pos + n] = self.fread(run.host, n, run.child)
                elif run.kind == "compressed":
                    ext = self._extent((offset + pos) >> 9)
                    cbytes = ext.cluster_sectors * 512
                    within = (offset + pos - ext.start * 512) % cbytes
                    out[pos : pos + n] = self._grain(ext, run.host)[within : within + n]
                elif run.kind == UNALLOC:
                    if "backing" in self.children:
                        self.file.debug_event("read_backing_aio")  # vmdk_co_preadv
                    self._read_backing(offset + pos, out, pos, n)
                pos += n
        return bytes(out)

    def _grain(self, ext: _Extent, host: int) -> bytes:
        """``vmdk_read_extent`` of a compressed grain (a marker first when the image has them)."""
        cbytes = ext.cluster_sectors * 512
        self.children[ext.child].debug_event("read_compressed")
        if ext.has_marker:
            (size,) = le("I", self.fread(host + 8, 4, ext.child))
            if size > 2 * cbytes:
                raise eio()
            data = self.fread(host + 12, size, ext.child)
        else:
            data = self.fread(host, cbytes, ext.child)
        try:
            d = zlib.decompressobj()
            out = d.decompress(data, cbytes)
        except zlib.error:
            raise eio() from None
        if len(out) != cbytes:
            raise eio()
        return out

    def block_status(self, offset: int, length: int) -> BlockStatus:
        length = min(length, self.virtual_size - offset)
        with self.lock:
            run = self.map_run(offset, length)
        if run.kind == "compressed":
            return BlockStatus(offset, min(run.length, length), True, False)
        return super().block_status(offset, length)

    # -- writes -------------------------------------------------------------------------
    def write_run(self, offset: int, data: bytes) -> int:
        sector = offset >> 9
        ext = self._extent(sector)
        ext_end = ext.end * 512
        if ext.flat:
            n = min(len(data), ext_end - offset)
            self.children[ext.child].debug_event("write_aio")  # vmdk_write_extent
            self.children[ext.child].write(
                ext.flat_offset + offset - ext.start * 512, bytes(data[:n])
            )
            return n
        cbytes = ext.cluster_sectors * 512
        within = (offset - ext.start * 512) % cbytes
        n = min(len(data), cbytes - within, ext_end - offset)
        try:
            run = self.map_run(offset, n)
        except IOFailure:
            # get_cluster_offset fails with VMDK_ERROR: vmdk_pwritev answers -EINVAL
            raise IOFailure("Invalid argument", E.EINVAL) from None
        if ext.compressed:
            return self._write_stream_grain(ext, offset, bytes(data[:n]), run)
        child = self.children[ext.child]
        if run.kind == DATA:
            child.debug_event("write_aio")  # vmdk_write_extent
            child.write(run.host, bytes(data[:n]))
            return n
        l2, idx, l1_index = self._locate(ext, sector)
        if not l2:
            raise IOFailure("Invalid argument", E.EINVAL)
        start = offset - within
        if run.kind == UNALLOC:
            content = bytearray(self.backing_data(start, min(cbytes, self.virtual_size - start)))
            content.extend(bytes(cbytes - len(content)))
        else:
            content = bytearray(cbytes)
        grain = ext.next_sector
        ext.next_sector += ext.cluster_sectors
        # get_whole_cluster: the grain's untouched head and tail come from the backing
        # (cow_read, with one) and are written (cow_write) before the guest data; a failure
        # there is VMDK_ERROR, which vmdk_pwritev answers with -EINVAL
        for lo, hi in ((0, within), (within + n, cbytes)):
            if hi > lo:
                if run.kind == UNALLOC and "backing" in self.children:
                    child.debug_event("cow_read")
                child.debug_event("cow_write")
                try:
                    child.write(grain * 512 + lo, bytes(content[lo:hi]))
                except IOFailure:
                    raise IOFailure("Invalid argument", E.EINVAL) from None
        child.debug_event("write_aio")
        child.write(grain * 512 + within, bytes(data[:n]))
        self._l2_update(ext, l2, idx, l1_index, grain)
        return n

    def write_compressed(self, offset: int, data: bytes) -> None:
        """``vmdk_co_pwritev_compressed``: the same as a plain write (``vmdk_co_pwritev``).
        Only a streamOptimized extent compresses; any other subformat takes the data plain,
        as QEMU's does."""
        driver_write(self, offset, data)

    def _write_stream_grain(self, ext: _Extent, offset: int, data: bytes, run: Run) -> int:
        """``vmdk_pwritev`` into a compressed (streamOptimized) extent.

        A grain already written is refused (EIO, and QEMU reports "Could not write to
        allocated cluster for streamOptimized"). Otherwise a grain is allocated first
        (``get_cluster_offset`` with no skip range: the whole grain, from the backing or
        zeroes, is written at the extent's next free sector), and only then does
        ``vmdk_write_extent`` check that the request is one whole grain (or ends the
        extent) and that the image has grain markers (EINVAL otherwise: the allocated
        grain stays in the file, no table points at it). The data is zlib-compressed
        (``compress()``: default level, zlib header) behind a 12-byte marker (LBA, size);
        the next free sector is the one after the stream, so the next grain overwrites
        the rest of this one's filler. Then the grain tables get the entry."""
        cbytes = ext.cluster_sectors * 512
        within = (offset - ext.start * 512) % cbytes
        if run.kind not in (UNALLOC, ZERO):
            raise IOFailure("Input/output error", E.EIO)
        l2, idx, l1_index = self._locate(ext, offset >> 9)
        if not l2:
            raise IOFailure("Invalid argument", E.EINVAL)
        start = offset - within
        child = self.children[ext.child]
        grain = ext.next_sector
        ext.next_sector += ext.cluster_sectors
        if run.kind == UNALLOC:
            content = self.backing_data(start, min(cbytes, self.virtual_size - start))
            content += bytes(cbytes - len(content))
            if "backing" in self.children:
                child.debug_event("cow_read")
        else:
            content = bytes(cbytes)
        child.debug_event("cow_write")
        try:
            child.write(grain * 512, content)
        except IOFailure:
            raise IOFailure("Invalid argument", E.EINVAL) from None  # VMDK_ERROR
        whole = len(data) == cbytes or offset + len(data) == ext.end * 512
        if within or not whole or not ext.has_marker:
            raise IOFailure("Invalid argument", E.EINVAL)
        packed = zlib.compress(data)
        stream = struct.pack("<QI", offset >> 9, len(packed)) + packed
        child.debug_event("write_compressed")
        try:
            child.write(grain * 512, stream)
        finally:
            ext.next_sector = -(-(grain * 512 + len(stream)) // 512)
        self._l2_update(ext, l2, idx, l1_index, grain)
        return len(data)

    def _l2_update(self, ext: _Extent, l2: int, idx: int, l1_index: int, grain: int) -> None:
        """``vmdk_L2update``: the grain's L2 entry, then the backup table's, then a flush
        of the extent's file (``bdrv_flush(extent->file->bs)``); the cached table gets
        the entry only after that succeeded. Any failure is VMDK_ERROR, which
        ``vmdk_pwritev`` answers with -EIO."""
        child = self.children[ext.child]
        entry = struct.pack("<I", grain)
        child.debug_event("l2_update")
        try:
            child.write(l2 * 512 + idx * 4, entry)
            if ext.l1_backup is not None:
                backup = self.table_entry(ext.l1_backup, l1_index, 4, "little")
                if backup:
                    child.write(backup * 512 + idx * 4, entry)
            child.flush()
        except IOFailure:
            raise IOFailure("Input/output error", E.EIO) from None
        struct.pack_into("<I", self._l2_table(ext, l2), idx * 4, grain)

    # -- queries ------------------------------------------------------------------------
    def format_specific(self) -> dict[str, Any] | None:
        extents = []
        for ext in self.extents:
            info: dict[str, Any] = {
                "filename": self.children[ext.child].info().filename,
                "format": ext.type,
                "virtual-size": ext.sectors * 512,
            }
            if not ext.flat:
                info["cluster-size"] = ext.cluster_sectors * 512
            if ext.compressed:
                info["compressed"] = True
            extents.append(info)
        return {
            "type": "vmdk",
            "data": {
                "cid": self.cid,
                "parent-cid": self.parent_cid,
                "create-type": self.create_type,
                "extents": extents,
            },
        }
