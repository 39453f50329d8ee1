"""The ``dmg`` format (Apple UDIF): read-only, koly trailer, mish chunk tables, zlib chunks.

Reproduces QEMU 7.2's block/dmg.c as Debian builds it (no dmg-bz2 and no
dmg-lzfse module): ``dmg_find_koly_offset`` (the trailer magic in the last
515 bytes of the sector-rounded length), ``dmg_open``'s offset checks in order,
the mish blocks from the binary resource fork (``dmg_read_resource_fork``) or
from the XML property list's ``<data>`` elements (``dmg_read_plist_xml``),
``dmg_read_mish_block`` (chunks of unknown type, bzip2 and lzfse ones among
them, are left out: their sectors then read as EIO) and ``dmg_co_preadv``
(one chunk decoded at a time: zeroes for UDZE/UDIG, a copy for UDRW, inflate
for UDZO that must end the stream with exactly the chunk's sectors). A sector
in no chunk is EIO. No block status of its own: everything is data.
"""

from __future__ import annotations

import errno as E
import struct
import zlib

from txgraph.errors import OpenError
from txgraph.io.driver import BlockStatus
from txgraph.io.formats.base import ImageFormatNode, Run, could_not_open, eio
from txgraph.io.registry import register

__all__ = ["DmgNode", "glib_base64_decode"]

_LENGTHS_MAX = 64 << 20
_SECTORCOUNTS_MAX = _LENGTHS_MAX // 512
UDZE, UDRW, UDIG, UDZO = 0, 1, 2, 0x80000005
_KNOWN = frozenset({UDZE, UDRW, UDIG, UDZO})  # UDBZ/ULFO: their modules are not built
_U64 = (1 << 64) - 1
_B64 = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
_B64[ord("=")] = 0


def glib_base64_decode(text: bytes) -> bytes:
    """``g_base64_decode``: characters outside the alphabet are skipped, a trailing partial
    quad is dropped, ``=`` in the last two places of a quad drops its bytes."""
    out = bytearray()
    v = i = 0
    last = [0, 0]
    for ch in text:
        c = _B64.get(ch)
        if c is None:
            continue
        last[1], last[0] = last[0], ch
        v = (v << 6 | c) & 0xFFFFFF
        i += 1
        if i == 4:
            out.append(v >> 16)
            if last[1] != ord("="):
                out.append(v >> 8 & 0xFF)
            if last[0] != ord("="):
                out.append(v & 0xFF)
            i = 0
    return bytes(out)


@register("dmg")
class DmgNode(ImageFormatNode):
    """A UDIF disk image (read-only) over its ``file`` child."""

    driver_name = "dmg"
    reports_cluster_size = False

    def _einval(self) -> OpenError:
        return could_not_open(self.filename, E.EINVAL)

    def _u64(self, offset: int) -> int:
        return int(struct.unpack(">Q", self.fread(offset, 8))[0])

    def _u32(self, offset: int) -> int:
        return int(struct.unpack(">I", self.fread(offset, 4))[0])

    def open_image(self) -> None:
        self.types: list[int] = []
        self.sectors: list[int] = []
        self.counts: list[int] = []
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.max_sectors = 1
        koly = self._find_koly()
        self.data_fork = self._u64(koly + 0x18)
        if self.data_fork > koly:
            raise self._einval()
        rsrc_off, rsrc_len = self._u64(koly + 0x28), self._u64(koly + 0x30)
        if rsrc_off >= koly or rsrc_len > koly - rsrc_off:
            raise self._einval()
        xml_off, xml_len = self._u64(koly + 0xD8), self._u64(koly + 0xE0)
        if xml_off >= koly or xml_len > koly - xml_off:
            raise self._einval()
        total = self._u64(koly + 0x1EC)
        if total >= 1 << 63:  # an int64_t sector count below zero
            raise self._einval()
        if rsrc_len:
            self._resource_fork(rsrc_off, rsrc_len)
        elif xml_len:
            self._plist_xml(xml_off, xml_len)
        else:
            raise self._einval()
        self.virtual_size = total * 512
        self.current = len(self.types)
        self.buf = bytearray()  # QEMU's uncompressed_chunk: stale bytes stay between chunks

    def _find_koly(self) -> int:
        length = self.file_length()
        if length < 512:
            raise OpenError("dmg file must be at least 512 bytes long")
        offset = length - 511 - 512 if length > 511 + 512 else 0
        buf = self.fread(offset, min(length, 515))
        at = buf.find(b"koly")
        if at < 0:
            raise OpenError("Could not locate UDIF trailer in dmg file")
        return offset + at

    def _resource_fork(self, begin: int, length: int) -> None:
        """``dmg_read_resource_fork``: the resource data's length-prefixed mish blocks."""
        data_off = self._u32(begin)
        if data_off > length:
            raise self._einval()
        count = self._u32(begin + 8)
        if count == 0 or (data_off + count) & 0xFFFFFFFF > length:
            raise self._einval()
        offset = begin + data_off
        end = offset + count
        while offset < end:
            count = self._u32(offset)
            if count == 0 or count > end - offset:
                raise self._einval()
            offset += 4
            self._mish(self.fread(offset, count))
            offset += count

    def _plist_xml(self, begin: int, length: int) -> None:
        """``dmg_read_plist_xml``: each ``<data>`` element base64-decodes to a mish block."""
        if length == 0 or length > 16 << 20:
            raise self._einval()
        text = self.fread(begin, length).split(b"\0", 1)[0]  # strstr stops at a NUL
        pos = 0
        while (start := text.find(b"<data>", pos)) >= 0:
            start += 6
            stop = text.find(b"</data>", start)
            if stop < 0:
                raise self._einval()
            self._mish(glib_base64_decode(text[start:stop]))
            pos = stop + 1

    def _mish(self, buf: bytes) -> None:
        """``dmg_read_mish_block``: known chunks appended, the rest skipped."""
        count = len(buf) & 0xFFFFFFFF
        if count < 244 or buf[:4] != b"mish":
            return  # not a mish block: ignored
        out_offset, data_offset = (
            struct.unpack_from(">Q", buf, 8)[0],
            struct.unpack_from(">Q", buf, 0x18)[0],
        )
        in_offset = (self.data_fork + data_offset) & _U64
        for k in range((count - 204) // 40):
            at = 204 + 40 * k
            kind = struct.unpack_from(">I", buf, at)[0]
            if kind not in _KNOWN:
                continue  # QEMU warns once on its stderr (bzip2, lzfse, unknown types)
            sector, scount, off, length = struct.unpack_from(">QQQQ", buf, at + 8)
            if kind not in (UDZE, UDIG) and scount > _SECTORCOUNTS_MAX:
                raise self._einval()
            if length > _LENGTHS_MAX:
                raise self._einval()
            self.types.append(kind)
            self.sectors.append((sector + out_offset) & _U64)
            self.counts.append(scount)
            self.offsets.append((off + in_offset) & _U64)
            self.lengths.append(length)
            if kind == UDZO:
                self.max_sectors = max(self.max_sectors, scount & 0xFFFFFFFF)
            elif kind == UDRW:
                self.max_sectors = max(self.max_sectors, (-(-length // 512)) & 0xFFFFFFFF)

    # -- reads ----------------------------------------------------------------------------
    def _in_chunk(self, chunk: int, sector: int) -> bool:
        return chunk < len(self.types) and self.sectors[chunk] <= sector < (
            self.sectors[chunk] + self.counts[chunk]
        )

    def _search(self, sector: int) -> int:
        """``search_chunk``: QEMU's binary search (chunks are expected in sector order)."""
        n = len(self.types)
        lo, hi = 0, n
        while lo <= hi:
            mid = (lo + hi) // 2
            if mid >= n:
                return n  # QEMU reads one entry past its table here; every branch then fails
            if self.sectors[mid] > sector:
                if mid == 0:
                    return n
                hi = mid - 1
            elif self.sectors[mid] + self.counts[mid] > sector:
                return mid
            else:
                lo = mid + 1
        return n

    def _load(self, sector: int) -> None:
        """``dmg_read_chunk``: make the chunk holding ``sector`` current (EIO otherwise)."""
        if self._in_chunk(self.current, sector):
            return
        chunk = self._search(sector)
        if chunk >= len(self.types):
            raise eio()
        self.current = len(self.types)
        kind, off, length = self.types[chunk], self.offsets[chunk], self.lengths[chunk]
        if kind == UDZO:
            want = 512 * self.counts[chunk]
            try:
                d = zlib.decompressobj()
                out = d.decompress(self.fread(off, length), want)
            except (zlib.error, OverflowError):
                raise eio() from None
            if not d.eof or len(out) != want:
                raise eio()
            self._fill(out)
        elif kind == UDRW:
            self._fill(self.fread(off, length))
        self.current = chunk

    def _fill(self, data: bytes) -> None:
        if len(self.buf) < len(data):
            self.buf.extend(bytes(len(data) - len(self.buf)))
        self.buf[: len(data)] = data

    def map_run(self, offset: int, length: int) -> Run:
        return Run("chunk", min(length, 512 - offset % 512))

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        start, end = offset // 512 * 512, -(-(offset + length) // 512) * 512
        out = bytearray()
        with self.lock:
            for pos in range(start, end, 512):
                sector = pos // 512
                self._load(sector)
                if self.types[self.current] in (UDZE, UDIG):
                    out += bytes(512)
                    continue
                at = (sector - self.sectors[self.current]) * 512
                piece = bytes(self.buf[at : at + 512])
                out += piece + bytes(512 - len(piece))  # past QEMU's buffer: undefined there
        return bytes(out[offset - start : offset - start + length])

    def block_status(self, offset: int, length: int) -> BlockStatus:
        return BlockStatus(offset, min(length, self.virtual_size - offset), True, False)
