"""The ``vpc`` format (VHD, Virtual PC / Hyper-V): footer, dynamic header, BAT, reads, writes.

Reproduces QEMU 7.2's block/vpc.c: ``vpc_open`` (footer at offset 0 or, for
fixed images, at the end; checksum; the virtual size from the CHS geometry
or from ``current_size`` for the creator applications 7.2 lists; the dynamic header and BAT checks in
order and with their texts), ``vpc_co_preadv`` (a fixed image is its file;
in a dynamic one an unallocated block reads as zeroes), ``vpc_co_block_status``
(unallocated blocks are zero blocks; a fixed image's data is refined by its
file's zero status) and ``vpc_co_pwritev`` (a block is allocated at the free offset:
bitmap of 0xff bytes, the footer moved behind the block, then the BAT entry;
a write into a block rewrites its bitmap when it is not the last one written).
"""

from __future__ import annotations

import errno as E
import struct
from typing import Any

import numpy as np

from txgraph.errors import IOFailure, OpenError
from txgraph.io.formats.base import DATA, ZERO, ImageFormatNode, Run, be, could_not_open
from txgraph.io.formats.sync import pwrite_sync
from txgraph.io.registry import register

__all__ = ["VpcNode", "vpc_checksum"]

_FIXED, _DYNAMIC = 2, 3
_MAX_GEOMETRY = 65535 * 16 * 255
_MAX_SECTORS = 0xFF000000
_INT_MAX = 2**31 - 1


def vpc_checksum(buf: bytes) -> int:
    """``vpc_checksum``: the ones' complement of the byte sum."""
    return ~sum(buf) & 0xFFFFFFFF


@register("vpc")
class VpcNode(ImageFormatNode):
    """A VHD image (fixed or dynamic) over its ``file`` child."""

    driver_name = "vpc"

    def open_image(self) -> None:
        footer: bytearray = bytearray(self.fread(0, 512))
        dynamic = True
        if bytes(footer[:8]) != b"conectix":
            length = self.file_length()
            if length < 512:
                raise OpenError("File too small for a VHD header")
            footer = bytearray(self.fread(length - 512, 512))
            if bytes(footer[:8]) != b"conectix" or be("I", footer, 60)[0] != _FIXED:
                raise OpenError("invalid VPC image")
            dynamic = False
        (checksum,) = be("I", footer, 64)
        footer[64:68] = bytes(4)
        if vpc_checksum(bytes(footer)) != checksum:
            raise OpenError("Incorrect header checksum")
        footer[64:68] = struct.pack(">I", checksum)
        self.footer = bytes(footer)
        self.dynamic = dynamic
        (cyls,) = be("H", footer, 56)
        heads, secs = footer[58], footer[59]
        total = cyls * heads * secs
        # 7.2 lists the creators that use current_size (Hyper-V, qemu's qem2, disk2vhd,
        # XenConverter, XenServer); every other creator's size comes from the geometry.
        use_chs = bytes(footer[28:32]) not in (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")
        if not use_chs or total == _MAX_GEOMETRY:
            total = be("Q", footer, 48)[0] // 512
        if total > _MAX_SECTORS:
            raise could_not_open(self.filename, E.EFBIG)
        self.virtual_size = total * 512
        if not dynamic:
            self.cluster_size = None
            return
        (data_offset,) = be("Q", footer, 16)
        try:
            dyn = self.fread(data_offset, 1024)
        except Exception:
            raise OpenError("Error reading dynamic VHD header") from None
        if dyn[:8] != b"cxsparse":
            raise OpenError("Invalid header magic")
        (block_size,) = be("I", dyn, 32)
        if block_size < 512 or block_size & (block_size - 1):
            raise OpenError(f"Invalid block size {block_size}")
        self.block_size: int = int(block_size)
        self.cluster_size = self.block_size
        self.bitmap_size = ((block_size // (8 * 512)) + 511) & ~511
        (entries,) = be("I", dyn, 28)
        if total * 512 // block_size > 0xFFFFFFFF:
            raise OpenError("Too many blocks")
        if entries * block_size < total * 512:
            raise OpenError("Page table too small")
        if entries > _INT_MAX // 4:
            signed = entries - (1 << 32) if entries >= 1 << 31 else entries
            raise OpenError(f"Max Table Entries too large ({signed})")
        self.entries = entries
        (self.bat_offset,) = be("Q", dyn, 16)
        try:
            self.bat = self.read_table(self.bat_offset, entries * 4)
        except OpenError:
            raise OpenError("Error reading pagetable") from None
        free = (self.bat_offset + entries * 4 + 511) & ~511
        stored = len(self.bat) // 4
        # vectorised: a hostile BAT is as long as the file
        bat = np.frombuffer(bytes(self.bat[: stored * 4]), dtype=">u4")
        used = bat[bat != 0xFFFFFFFF]
        if used.size:
            free = max(free, 512 * int(used.max()) + self.bitmap_size + block_size)
        if stored < entries:  # entries past the end of the file read as 0
            free = max(free, self.bitmap_size + block_size)
        if free > self.file_length():
            raise OpenError(
                "block-vpc: free_data_block_offset points after the end of file. "
                "The image has been truncated."
            )
        self.free_offset = free
        self.last_bitmap = -1

    def _entry(self, index: int) -> int:
        if index >= self.entries:
            return 0xFFFFFFFF
        return self.table_entry(self.bat, index, 4, "big")

    def map_run(self, offset: int, length: int) -> Run:
        if not self.dynamic:
            return Run(DATA, length, offset)
        index, within = divmod(offset, self.block_size)
        n = min(length, self.block_size - within)
        entry = self._entry(index)
        if entry == 0xFFFFFFFF:
            i = index + 1
            while n < length and self._entry(i) == 0xFFFFFFFF:
                n = min(length, n + self.block_size)
                i += 1
            return Run(ZERO, n)
        return Run(DATA, n, 512 * entry + self.bitmap_size + within)

    def recurse(self, run: Run) -> bool:
        # A fixed image answers DATA|OFFSET_VALID|RECURSE: the file's holes read as DATA|ZERO.
        return not self.dynamic

    def write_run(self, offset: int, data: bytes) -> int:
        """``vpc_co_pwritev`` for the part of ``data`` inside one block.

        QEMU makes each metadata write durable (``bdrv_pwrite_sync``): the block
        bitmap set on the first write into a block (``get_image_offset``), and for a
        new block (``alloc_block``) its bitmap, the footer moved behind it and its
        BAT entry. As there, the in-memory BAT entry stays set whatever fails, and
        the end of the data area moves back when the footer or BAT write fails."""
        if not self.dynamic:
            self.file.write(offset, bytes(data))
            return len(data)
        index, within = divmod(offset, self.block_size)
        n = min(len(data), self.block_size - within)
        entry = self._entry(index)
        if entry != 0xFFFFFFFF:
            bitmap = 512 * entry
            if bitmap != self.last_bitmap:
                self.last_bitmap = bitmap
                pwrite_sync(self.file, bitmap, b"\xff" * self.bitmap_size)
        else:
            entry = self.free_offset // 512
            self.set_table_entry(self.bat, index, entry, 4, "big")
            pwrite_sync(self.file, self.free_offset, b"\xff" * self.bitmap_size)
            self.free_offset += self.block_size + self.bitmap_size
            try:
                pwrite_sync(self.file, self.free_offset, self.footer)  # rewrite_footer
                pwrite_sync(self.file, self.bat_offset + 4 * index, struct.pack(">I", entry))
            except IOFailure:
                self.free_offset -= self.block_size + self.bitmap_size
                raise
        self.file.write(512 * entry + self.bitmap_size + within, bytes(data[:n]))
        return n

    def info(self) -> Any:
        return super().info()
