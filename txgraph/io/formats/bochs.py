"""The ``bochs`` format (Bochs growing redolog): read-only, header checks, catalog, bitmaps.

Reproduces QEMU 7.2's block/bochs.c: ``bochs_open`` (magic, type, subtype
and version strings; the disk size of version 1 and 2 headers; catalog and
extent size limits with their texts) and ``bochs_co_preadv`` through
``seek_to_sector``: an extent missing from the catalog, or a sector whose
bit is clear in the extent's bitmap, reads as zeroes. The driver has no
block status of its own, so every range is data to the block layer. The
read-only rule (``bdrv_apply_auto_read_only``) is applied by the opener
before the node exists (:mod:`txgraph.ops.drivers.image_formats`).
"""

from __future__ import annotations

import struct

from txgraph.errors import OpenError
from txgraph.io.driver import BlockStatus
from txgraph.io.formats.base import ImageFormatNode, Run, le
from txgraph.io.registry import register

__all__ = ["BochsNode"]

_V1, _V2 = 0x00010000, 0x00020000
_UNALLOCATED = 0xFFFFFFFF


def _cstr(buf: bytes, off: int, size: int) -> bytes:
    return buf[off : off + size].split(b"\0", 1)[0]


@register("bochs")
class BochsNode(ImageFormatNode):
    """A Bochs growing image (read-only) over its ``file`` child."""

    driver_name = "bochs"
    reports_cluster_size = False

    def open_image(self) -> None:
        h = self.fread(0, 512)
        (version, header, catalog, bitmap, extent) = le("IIIII", h, 64)
        if (
            _cstr(h, 0, 32) != b"Bochs Virtual HD Image"
            or _cstr(h, 32, 16) != b"Redolog"
            or _cstr(h, 48, 16) != b"Growing"
            or version not in (_V1, _V2)
        ):
            raise OpenError("Image not in Bochs format")
        (disk,) = le("Q", h, 84 if version == _V1 else 88)
        sectors = disk // 512
        self.virtual_size = sectors * 512
        if catalog > 0x100000:
            raise OpenError("Catalog size is too large")
        self.catalog = self.read_table(header, catalog * 4)
        self.catalog_size = catalog
        self.data_offset: int = int(header) + int(catalog) * 4
        self.bitmap_blocks: int = 1 + ((int(bitmap) - 1) & 0xFFFFFFFF) // 512
        self.extent_blocks: int = 1 + ((int(extent) - 1) & 0xFFFFFFFF) // 512
        if extent < 512:
            raise OpenError("Extent size must be at least 512")
        if extent & (extent - 1):
            raise OpenError(f"Extent size {extent} is not a power of two")
        if extent > 0x800000:
            raise OpenError(f"Extent size {extent} is too large")
        self.extent_size: int = int(extent)
        per = extent // 512
        if catalog < (sectors + per - 1) // per:
            raise OpenError("Catalog size is too small for this disk size")

    def _sector(self, sector: int) -> int:
        """``seek_to_sector``: the file offset of a guest sector, 0 when it reads as zeroes."""
        offset = sector * 512
        index = offset // self.extent_size
        within = (offset % self.extent_size) // 512
        entry = (
            self.table_entry(self.catalog, index, 4, "little")
            if index < self.catalog_size
            else _UNALLOCATED
        )
        if entry == _UNALLOCATED:
            return 0
        bitmap = self.data_offset + 512 * entry * (self.extent_blocks + self.bitmap_blocks)
        (bits,) = struct.unpack("B", self.fread(bitmap + within // 8, 1))
        if not (bits >> (within % 8)) & 1:
            return 0
        return bitmap + 512 * (self.bitmap_blocks + within)

    def map_run(self, offset: int, length: int) -> Run:
        n = min(length, 512 - offset % 512)
        host = self._sector(offset // 512)
        if not host:
            return Run("zero", n)
        return Run("data", n, host + offset % 512)

    def block_status(self, offset: int, length: int) -> BlockStatus:
        # no bdrv_co_block_status: the block layer calls everything data
        return BlockStatus(offset, min(length, self.virtual_size - offset), True, False)
