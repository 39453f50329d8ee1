"""The ``vhdx`` format (Hyper-V): regions, metadata, BAT, reads and writes (dynamic and fixed).

Reproduces QEMU 7.2's block/vhdx.c: ``vhdx_open`` (file signature, headers and
log through :mod:`txgraph.io.formats.vhdx_log`, ``vhdx_open_region_tables``,
``vhdx_parse_metadata``, ``vhdx_calc_bat_entries`` and
``vhdx_check_bat_entries`` in QEMU's order; failures without a message of
their own come out as ``bdrv_open_driver``'s "Could not open" errno text),
``vhdx_co_readv`` (only FULLY_PRESENT blocks hold data; NOT_PRESENT,
UNDEFINED, ZERO and both UNMAPPED states read as zeroes, anything else is
EIO), and ``vhdx_co_writev`` (a block that is not present is allocated at the
file's end rounded up to 1 MiB, the file grown by one block, the data
written, then the BAT entry updated through a flushed one-entry log).
vhdx has no block status of its own: everything is data (the generic answer
of ``bdrv_co_block_status``), as cloop.
"""

from __future__ import annotations

import errno as E
import os
import struct
import uuid
from typing import Any

import numpy as np

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus
from txgraph.io.formats import vhdx_log
from txgraph.io.formats.base import DATA, ZERO, ImageFormatNode, Run, could_not_open, le
from txgraph.io.registry import register

__all__ = ["VhdxNode"]

MiB = 1 << 20


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


_BAT_GUID = _guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
_METADATA_GUID = _guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
_FILE_PARAM = _guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
_VIRTUAL_SIZE = _guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
_PAGE83 = _guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
_LOGICAL_SECTOR = _guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
_PHYS_SECTOR = _guid("CDA348C7-445D-4471-9CC9-E9885251C556")
_PARENT_LOCATOR = _guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
#: metadata items in QEMU's ``present`` bit order
_ITEMS = (_FILE_PARAM, _VIRTUAL_SIZE, _PAGE83, _LOGICAL_SECTOR, _PHYS_SECTOR, _PARENT_LOCATOR)
_ALL_REQUIRED = 0x1F
_HAS_PARENT = 0x02

#: BAT entry states (the low 3 bits)
_NOT_PRESENT, _UNDEFINED, _ZERO, _UNMAPPED, _UNMAPPED_V095 = 0, 1, 2, 3, 5
_FULLY_PRESENT = 6
_READS_ZERO = frozenset({_NOT_PRESENT, _UNDEFINED, _ZERO, _UNMAPPED, _UNMAPPED_V095})
_OFF_MASK = 0xFFFFFFFFFFF00000
_INT64_MAX = (1 << 63) - 1
_U64 = (1 << 64) - 1
#: BDRV_REQUEST_MAX_BYTES: the longest single request the block layer accepts
_REQUEST_MAX = 0x7FFFFE00


def _pow2(v: int) -> bool:
    return v > 0 and not v & (v - 1)


@register("vhdx")
class VhdxNode(ImageFormatNode):
    """A VHDX image (dynamic or fixed; differencing files are refused as in QEMU)."""

    driver_name = "vhdx"

    # -- open -----------------------------------------------------------------------------
    def _einval(self, err: int = E.EINVAL) -> OpenError:
        return could_not_open(self.filename, err)

    def open_image(self) -> None:
        if self.fread(0, 8) != b"vhdxfile":
            raise self._einval()
        self.session_guid = os.urandom(16)
        self.first_visible_write = True
        self.headers, self.cur_header = vhdx_log.parse_headers(self)
        cur = self.headers[self.cur_header]
        self.regions: list[tuple[int, int]] = []
        self._register(cur.log_offset, cur.log_length)
        self.log = vhdx_log.LogState()
        self.log_replayed = vhdx_log.parse_log(self)
        try:
            self._region_tables()
            self._metadata()
        except IOFailure as err:  # a metadata read past BDRV_MAX_LENGTH: QEMU's -EIO
            raise self._einval(err.errno) from None
        self.virtual_size = (self.vds >> self.lss_bits) * 512
        data_blocks = -(-self.vds // self.block_size) & 0xFFFFFFFF
        self.bat_entries = (data_blocks + (((data_blocks - 1) & 0xFFFFFFFF) >> self.chunk_bits)) & (
            0xFFFFFFFF
        )
        if self.bat_entries > self.bat_len // 8:
            raise self._einval()
        if self.bat_len > _REQUEST_MAX:  # bdrv_check_request32 refuses the one BAT read
            raise self._einval(E.EIO)
        self.bat = self.read_table(self.bat_offset, self.bat_len)
        self._check_bat()
        self.cluster_size = self.block_size

    def _register(self, start: int, length: int) -> None:
        self.regions.append((start, (start + length) & _U64))

    def _overlaps(self, start: int, length: int) -> bool:
        """``vhdx_region_check``."""
        end = (start + length) & _U64
        return any(not (start >= r_end or end <= r_start) for r_start, r_end in self.regions)

    def _region_tables(self) -> None:
        """``vhdx_open_region_tables``: the first region table (its CRC over 64 KiB)."""
        buf = self.fread(192 << 10, 64 << 10)
        if not vhdx_log.checksum_ok(buf):
            raise self._einval()
        sig, _crc, count = le("4sII", buf)
        if sig != b"regi" or count > 2047:
            raise self._einval()
        bat = meta = None
        for i in range(count):
            guid = buf[16 + 32 * i : 32 + 32 * i]
            offset, length, bits = le("QII", buf, 32 + 32 * i)
            if self._overlaps(offset, length):
                raise self._einval()
            self._register(offset, length)
            if guid == _BAT_GUID:
                if bat is not None:
                    raise self._einval()
                bat = (offset, length)
            elif guid == _METADATA_GUID:
                if meta is not None:
                    raise self._einval()
                meta = (offset, length)
            elif bits & 1:
                raise self._einval(E.ENOTSUP)
        if bat is None or meta is None:
            raise self._einval()
        self.bat_offset, self.bat_len = bat
        self.meta_offset = meta[0]

    def _metadata(self) -> None:
        """``vhdx_parse_metadata``: the five required items, then their values' checks."""
        buf = self.fread(self.meta_offset, 64 << 10)
        sig, _r, count = le("QHH", buf)
        if sig != 0x617461646174656D:
            raise self._einval()
        if count * 32 > (64 << 10) - 32:
            raise self._einval()
        found: dict[bytes, int] = {}
        for i in range(count):
            guid = buf[32 + 32 * i : 48 + 32 * i]
            offset, _length, bits = le("III", buf, 48 + 32 * i)
            if guid in _ITEMS:
                if guid in found:
                    raise self._einval()
                found[guid] = offset
            elif bits & 0x04:  # IS_REQUIRED and unknown
                raise self._einval(E.ENOTSUP)
        if sum(1 << _ITEMS.index(g) for g in found) != _ALL_REQUIRED:
            raise self._einval(E.ENOTSUP)  # a parent locator too: differencing files

        def item(guid: bytes, fmt: str) -> Any:
            return le(fmt, self.fread(self.meta_offset + found[guid], struct.calcsize("<" + fmt)))

        block_size, bits = item(_FILE_PARAM, "II")
        if bits & _HAS_PARENT:
            raise self._einval(E.ENOTSUP if _PARENT_LOCATOR in found else E.EINVAL)
        (self.vds,) = item(_VIRTUAL_SIZE, "Q")
        (lss,) = item(_LOGICAL_SECTOR, "I")
        item(_PHYS_SECTOR, "I")
        if not MiB <= block_size <= 256 * MiB:
            raise self._einval()
        if lss != 512:  # QEMU 7.2 supports 512-byte logical sectors only
            raise self._einval(E.ENOTSUP)
        spb = block_size // lss
        chunk = (1 << 23) * lss // block_size
        if not (_pow2(spb) and _pow2(chunk) and _pow2(block_size)):
            raise self._einval()
        self.block_size: int = block_size
        self.lss_bits = lss.bit_length() - 1
        self.chunk_bits = chunk.bit_length() - 1
        self.chunk_ratio = chunk

    def _check_bat(self) -> None:
        """``vhdx_check_bat_entries`` without an error counter: the first bad entry fails."""
        stored = min(self.bat_entries, len(self.bat) // 8)
        table = np.frombuffer(bytes(self.bat[: stored * 8]), dtype="<u8")
        present = np.nonzero((table & 7) == _FULLY_PRESENT)[0]
        size = self.file_length()
        total = self.virtual_size
        payblocks = self.chunk_ratio
        for i in present.tolist():
            offset = int(table[i]) & _OFF_MASK
            block_len = min(self.block_size, (total - i * self.block_size) & _U64)
            if offset > _INT64_MAX - self.block_size or offset + block_len > size:
                raise self._einval()  # QEMU logs which entry (error_report), then EINVAL
            if payblocks:
                payblocks -= 1
                if self._overlaps(offset, self.block_size):
                    raise self._einval()
            else:
                payblocks = self.chunk_ratio

    # -- mapping --------------------------------------------------------------------------
    def _translate(self, offset: int) -> tuple[int, int, int]:
        """``vhdx_block_translate``: (BAT index, byte offset in the block, bytes left in it);
        every ``chunk_ratio`` payload entries the BAT holds a sector bitmap entry."""
        idx, within = divmod(offset, self.block_size)
        return idx + (idx >> self.chunk_bits), within, self.block_size - within

    def _entry(self, idx: int) -> int:
        return self.table_entry(self.bat, idx, 8, "little")

    def map_run(self, offset: int, length: int) -> Run:
        idx, within, left = self._translate(offset)
        n = min(length, left)
        entry = self._entry(idx)
        state = entry & 7
        if state in _READS_ZERO:
            return Run(ZERO, n)
        if state != _FULLY_PRESENT:
            raise IOFailure("Input/output error", E.EIO)
        return Run(DATA, n, (entry & _OFF_MASK) + within)

    def block_status(self, offset: int, length: int) -> BlockStatus:
        # no bdrv_co_block_status: the block layer answers DATA|ALLOCATED for the range
        return BlockStatus(offset, min(length, self.virtual_size - offset), True, False)

    # -- writes ---------------------------------------------------------------------------
    def user_visible_write(self) -> None:
        """``vhdx_user_visible_write``: the first guest-visible write renews the data GUID."""
        if self.first_visible_write:
            self.first_visible_write = False
            vhdx_log.update_headers(self, True, None)

    def grow(self, length: int) -> None:
        """``bdrv_truncate`` of the file child (ENOTSUP where the child cannot resize)."""
        truncate = getattr(self.file, "truncate", None)
        if truncate is None:
            raise IOFailure("Operation not supported", E.ENOTSUP)
        truncate(length)

    def write_run(self, offset: int, data: bytes) -> int:
        """``vhdx_co_writev`` for the part of ``data`` inside one payload block."""
        self.user_visible_write()
        idx, within, left = self._translate(offset)
        n = min(len(data), left)
        entry = self._entry(idx)
        state = entry & 7
        if state not in _READS_ZERO and state != _FULLY_PRESENT:
            raise IOFailure("Input/output error", E.EIO)
        allocate = state != _FULLY_PRESENT
        block = entry & _OFF_MASK
        if allocate:
            # vhdx_allocate_block: the file's end rounded up to 1 MiB, grown by one block
            # (the file driver zero-fills the growth, so a ZERO block needs no zero buffers)
            block = (self.file_length() + MiB - 1) // MiB * MiB
            if block > _INT64_MAX:
                raise IOFailure("Invalid argument", E.EINVAL)
            self.grow(block + self.block_size)
        if block + within < MiB:
            raise IOFailure("Bad address", E.EFAULT)  # payload inside the header section
        self.file.write(block + within, bytes(data[:n]))
        if allocate:
            # in memory first (a failed data write above never got here: QEMU restores it)
            new = block | _FULLY_PRESENT
            self.set_table_entry(self.bat, idx, new, 8, "little")
            vhdx_log.log_write_and_flush(self, struct.pack("<Q", new), self.bat_offset + 8 * idx)
        return n

    def info(self) -> Any:
        return super().info()
