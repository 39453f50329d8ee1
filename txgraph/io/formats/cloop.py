"""The ``cloop`` format (compressed loop images): read-only, offsets table, zlib blocks.

Reproduces QEMU 7.2's block/cloop.c: ``cloop_open`` (block size and block
count limits, the offsets table and its monotonicity and block-size checks,
in order and with their texts) and ``cloop_co_preadv``: block ``i`` is the
zlib stream between ``offsets[i]`` and ``offsets[i + 1]`` and must inflate to
exactly one block (else EIO). No block status of its own: everything is data.
The read-only rule is applied by the opener (:mod:`txgraph.ops.drivers.image_formats`).
"""

from __future__ import annotations

import zlib

import numpy as np

from txgraph.errors import OpenError
from txgraph.io.driver import BlockStatus
from txgraph.io.formats.base import ImageFormatNode, Run, be, eio
from txgraph.io.registry import register

__all__ = ["CloopNode"]

_MAX_BLOCK = 64 << 20
_MAX_N = (0xFFFFFFFF - 1) // 8


@register("cloop")
class CloopNode(ImageFormatNode):
    """A cloop image (read-only) over its ``file`` child."""

    driver_name = "cloop"
    reports_cluster_size = False

    def open_image(self) -> None:
        (block_size, n_blocks) = be("II", self.fread(128, 8))
        if block_size % 512:
            raise OpenError(f"block_size {block_size} must be a multiple of 512")
        if block_size == 0:
            raise OpenError("block_size cannot be zero")
        if block_size > _MAX_BLOCK:
            raise OpenError(f"block_size {block_size} must be {_MAX_BLOCK >> 20} MB or less")
        if n_blocks > _MAX_N:
            raise OpenError(f"n_blocks {n_blocks} must be {_MAX_N} or less")
        size = (n_blocks + 1) * 8
        if size > 512 << 20:
            raise OpenError("image requires too many offsets, try increasing block size")
        self.offsets = self.read_table(136, size)
        # Vectorised over the entries the file holds; those past its end read as 0, so the
        # first of them is where a nonzero table stops increasing.
        stored = np.frombuffer(bytes(self.offsets[: len(self.offsets) // 8 * 8]), dtype=">u8")
        if stored.size < n_blocks + 1:
            stored = np.concatenate([stored, np.zeros(1, dtype=">u8")])
        vals = stored.astype(np.uint64)
        if vals.size > 1:
            down = np.nonzero(vals[1:] < vals[:-1])[0]
            big = np.nonzero((vals[1:] - vals[:-1]) > 2 * _MAX_BLOCK)[0]
            first_down = int(down[0]) + 1 if down.size else None
            first_big = int(big[0]) + 1 if big.size else None
            # QEMU walks the table in order: whichever problem comes first is reported
            if first_down is not None and (first_big is None or first_down <= first_big):
                raise OpenError(
                    f"offsets not monotonically increasing at index {first_down}, "
                    "image file is corrupt"
                )
            if first_big is not None:
                raise OpenError(
                    f"invalid compressed block size at index {first_big}, image file is corrupt"
                )
        self.block_size: int = int(block_size)
        self.n_blocks = n_blocks
        self.virtual_size = n_blocks * self.block_size
        self._cached: tuple[int, bytes] | None = None

    def _block(self, index: int) -> bytes:
        """``cloop_read_block``: inflate one block (the last one read is kept)."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        start = self.table_entry(self.offsets, index, 8, "big")
        end = self.table_entry(self.offsets, index + 1, 8, "big")
        data = self.fread(start, end - start)
        try:
            d = zlib.decompressobj()
            out = d.decompress(data, self.block_size)
            ok = d.eof
        except zlib.error:
            raise eio() from None
        if not ok or len(out) != self.block_size:
            raise eio()
        self._cached = (index, out)
        return out

    def map_run(self, offset: int, length: int) -> Run:
        return Run("block", min(length, self.block_size - offset % self.block_size))

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        out = bytearray()
        with self.lock:
            pos = offset
            while pos < offset + length:
                index, within = divmod(pos, self.block_size)
                n = min(offset + length - pos, self.block_size - within)
                out += self._block(index)[within : within + n]
                pos += n
        return bytes(out)

    def block_status(self, offset: int, length: int) -> BlockStatus:
        return BlockStatus(offset, min(length, self.virtual_size - offset), True, False)
