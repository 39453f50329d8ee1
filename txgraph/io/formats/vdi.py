"""The ``vdi`` format (VirtualBox): header checks, block map, reads and writes.

Reproduces QEMU 7.2's block/vdi.c: ``vdi_open``'s header validation in its
order and texts, ``vdi_co_preadv`` (unallocated blocks read as zeroes),
``vdi_co_block_status`` (an unallocated block is a zero block, allocated ones
are data at ``offset_data + index * block_size``) and ``vdi_co_pwritev``
(a write to an unallocated block appends a whole new block, zero-filled
around the data, then updates the block map entry and ``blocks_allocated``
in the header).
"""

from __future__ import annotations

import errno as E
import struct

from txgraph.errors import IOFailure, OpenError
from txgraph.io.formats.base import DATA, ZERO, ImageFormatNode, Run, le
from txgraph.io.registry import register

__all__ = ["VdiNode", "SIGNATURE"]

SIGNATURE = 0xBEDA107F
_VERSION_1_1 = 0x00010001
_SECTOR = 512
_BLOCK = 1 << 20
_BLOCKS_MAX = 0x1FFFFF80
_DISK_MAX = _BLOCKS_MAX * _BLOCK
_UNALLOCATED = 0xFFFFFFFF
_DISCARDED = 0xFFFFFFFE


def _allocated(entry: int) -> bool:
    return entry < _DISCARDED


@register("vdi")
class VdiNode(ImageFormatNode):
    """A VDI image (dynamic or static) over its ``file`` child."""

    driver_name = "vdi"

    def open_image(self) -> None:
        """``vdi_open``: the checks in QEMU's order, then the block map."""
        h = self.fread(0, 512)
        (sig, version) = le("II", h, 64)
        offset_bmap, offset_data = le("II", h, 340)
        (sector_size,) = le("I", h, 360)
        (disk_size,) = le("Q", h, 368)
        block_size, _extra, blocks, allocated = le("IIII", h, 376)
        uuid_link, uuid_parent = h[424:440], h[440:456]
        if disk_size > _DISK_MAX:
            raise OpenError(
                f"Unsupported VDI image size (size is 0x{disk_size:x}, max supported "
                f"is 0x{_DISK_MAX:x})"
            )
        # VBoxManage convertfromraw makes odd sizes: QEMU rounds up to a sector.
        disk_size = (disk_size + _SECTOR - 1) & ~(_SECTOR - 1)
        if sig != SIGNATURE:
            raise OpenError(f"Image not in VDI format (bad signature {sig:08x})")
        if version != _VERSION_1_1:
            raise OpenError(f"unsupported VDI image (version {version >> 16}.{version & 0xFFFF})")
        if offset_bmap % _SECTOR:
            raise OpenError(f"unsupported VDI image (unaligned block map offset 0x{offset_bmap:x})")
        if offset_data % _SECTOR:
            raise OpenError(f"unsupported VDI image (unaligned data offset 0x{offset_data:x})")
        if sector_size != _SECTOR:
            raise OpenError(f"unsupported VDI image (sector size {sector_size} is not {_SECTOR})")
        if block_size != _BLOCK:
            raise OpenError(f"unsupported VDI image (block size {block_size} is not {_BLOCK})")
        if disk_size > blocks * block_size:
            raise OpenError(
                f"unsupported VDI image (disk size {disk_size}, image bitmap has room "
                f"for {blocks * block_size})"
            )
        if any(uuid_link):
            raise OpenError("unsupported VDI image (non-NULL link UUID)")
        if any(uuid_parent):
            raise OpenError("unsupported VDI image (non-NULL parent UUID)")
        if blocks > _BLOCKS_MAX:
            raise OpenError(
                f"unsupported VDI image (too many blocks {blocks}, max is {_BLOCKS_MAX})"
            )
        self.virtual_size = disk_size
        self.cluster_size = block_size
        self.block_size: int = int(block_size)
        self.offset_bmap = offset_bmap
        self.offset_data = offset_data
        self.blocks = blocks
        self.blocks_allocated = allocated
        # QEMU reads the whole map; past the end of the file it reads zeroes. Only the part
        # inside the file is held, so a hostile block count cannot make us allocate it.
        stored = max(0, min(blocks * 4, self.file_length() - offset_bmap))
        self.bmap = bytearray(self.fread(offset_bmap, stored) if stored else b"")

    def _entry(self, index: int) -> int:
        off = index * 4
        if off + 4 > len(self.bmap):
            return 0
        return int.from_bytes(self.bmap[off : off + 4], "little")

    def _set_entry(self, index: int, value: int) -> None:
        off = index * 4
        if off + 4 > len(self.bmap):
            self.bmap.extend(bytes(off + 4 - len(self.bmap)))
        self.bmap[off : off + 4] = value.to_bytes(4, "little")

    def map_run(self, offset: int, length: int) -> Run:
        index, within = divmod(offset, self.block_size)
        n = min(length, self.block_size - within)
        entry = self._entry(index)
        if not _allocated(entry):
            # Merge following unallocated blocks into one zero run.
            i = index + 1
            while n < length and i < self.blocks and not _allocated(self._entry(i)):
                n = min(length, n + self.block_size)
                i += 1
            return Run(ZERO, n)
        return Run(DATA, n, self.offset_data + entry * self.block_size + within)

    def recurse(self, run: Run) -> bool:
        # vdi_co_block_status answers DATA|OFFSET_VALID|RECURSE (static images have holes)
        return True

    def write_run(self, offset: int, data: bytes) -> int:
        """``vdi_co_pwritev`` for the part of ``data`` inside one block."""
        index, within = divmod(offset, self.block_size)
        n = min(len(data), self.block_size - within)
        entry = self._entry(index)
        if _allocated(entry):
            self.file.write(self.offset_data + entry * self.block_size + within, bytes(data[:n]))
            return n
        if self.blocks_allocated >= self.blocks:
            raise IOFailure("No space left on device", E.ENOSPC)
        new = self.blocks_allocated
        block = bytearray(self.block_size)
        block[within : within + n] = data[:n]
        self.file.write(self.offset_data + new * self.block_size, bytes(block))
        self._set_entry(index, new)
        self.blocks_allocated = new + 1
        self.file.write(388, struct.pack("<I", self.blocks_allocated))
        self.file.write(self.offset_bmap + index * 4, struct.pack("<I", new))
        return n
