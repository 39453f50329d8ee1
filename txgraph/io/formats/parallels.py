"""The ``parallels`` format: header checks, BAT, unclean-shutdown rule, reads and writes.

Reproduces QEMU 7.2's block/parallels.c: ``parallels_open`` (version and
magic, the offset multiplier of each magic - sectors for
``WithoutFreeSpace``, clusters for ``WithouFreSpacExt`` -, the cluster and
catalog limits with their texts, the in-use marker: an image not closed
cleanly cannot be opened read-write, a read-write open sets the marker and
``parallels_close`` clears it and truncates the file to the data end),
``parallels_co_readv`` (an unallocated cluster reads from the backing, zeroes
without), ``parallels_co_block_status`` and ``allocate_clusters`` (a new
cluster at the data end, filled from the backing, then its BAT entry).
QEMU preallocates the file in steps and trims it at close; txgraph grows it
one cluster at a time, which leaves the same image after close.
"""

from __future__ import annotations

import struct

import numpy as np

from txgraph.errors import IOFailure, OpenError
from txgraph.io.formats.base import DATA, UNALLOC, ImageFormatNode, Run, could_not_open, le
from txgraph.io.formats.sync import pwrite_sync
from txgraph.io.registry import register

__all__ = ["ParallelsNode"]

_MAGIC = b"WithoutFreeSpace"
_MAGIC2 = b"WithouFreSpacExt"
_INUSE = 0x746F6E59
_EXT_MAGIC = 0xAB234CEF23DCEA87
_INT32_MAX = 2**31 - 1


@register("parallels")
class ParallelsNode(ImageFormatNode):
    """A Parallels image over ``file``."""

    driver_name = "parallels"
    supports_backing = True
    reports_cluster_size = False

    def open_image(self) -> None:
        h = self.fread(0, 64)
        (version, _heads, _cyls, tracks, bat_entries, nb_sectors, inuse, data_off) = le(
            "IIIIIQII", h, 16
        )
        if version != 2:
            raise OpenError("Image not in Parallels format")
        if h[:16] == _MAGIC:
            self.multiplier = 1
            nb_sectors &= 0xFFFFFFFF
        elif h[:16] == _MAGIC2:
            self.multiplier = tracks
        else:
            raise OpenError("Image not in Parallels format")
        if tracks == 0:
            raise OpenError("Invalid image: Zero sectors per track")
        if tracks > _INT32_MAX // 513:
            raise OpenError("Invalid image: Too big cluster")
        self.tracks = tracks
        self.cs: int = int(tracks) * 512
        if bat_entries > _INT32_MAX // 4:
            raise OpenError("Catalog too large")
        self.bat_entries = bat_entries
        self.virtual_size = nb_sectors * 512
        self.data_end = data_off or (64 + bat_entries * 4 + 511) // 512
        self.bat = self.read_table(64, bat_entries * 4)
        unclean = inuse == _INUSE
        if unclean and not self.read_only:
            raise OpenError(
                "parallels: Image was not closed correctly; cannot be opened read/write"
            )
        (ext_off,) = le("Q", h, 56)
        if ext_off and self.read_only:
            self._check_format_extension(ext_off)
        # vectorised: a hostile catalog is as long as the file
        entries = np.frombuffer(bytes(self.bat[: len(self.bat) // 4 * 4]), dtype="<u4")
        if entries.size and int(entries.max()):
            self.data_end = max(self.data_end, int(entries.max()) * self.multiplier + tracks)
        self.marked = False
        if not self.read_only:
            try:
                # parallels_update_header: written and flushed (bdrv_pwrite_sync), so the
                # file is clean when the guest's first request comes
                pwrite_sync(self.file, 44, struct.pack("<I", _INUSE))
            except IOFailure as err:
                raise could_not_open(self.filename, err.errno) from None
            self.marked = True

    def _check_format_extension(self, ext_off: int) -> None:
        """``parallels_read_format_extension`` (read-only opens; read-write ones ignore it).

        QEMU 7.2 asserts when the byte offset wraps to zero or below (the daemon aborts);
        txgraph refuses such an image instead. A well-formed extension (bitmaps) is not
        implemented.
        """
        at = (ext_off << 9) & 0xFFFFFFFFFFFFFFFF
        if at == 0 or at >= 1 << 63:
            raise OpenError("txgraph: invalid parallels Format Extension offset")
        (magic,) = le("Q", self.fread(at, 8))
        if magic != _EXT_MAGIC:
            raise OpenError(
                f"Wrong parallels Format Extension magic: 0x{magic:x}, expected: 0x{_EXT_MAGIC:x}"
            )
        raise OpenError("txgraph: parallels Format Extensions are not supported")

    def _sector(self, index: int) -> int:
        if index >= self.bat_entries:
            return 0
        return self.table_entry(self.bat, index, 4, "little") * self.multiplier

    def map_run(self, offset: int, length: int) -> Run:
        index, within = divmod(offset, self.cs)
        n = min(length, self.cs - within)
        sector = self._sector(index)
        if not sector:
            i = index + 1
            while n < length and not self._sector(i):
                n = min(length, n + self.cs)
                i += 1
            return Run(UNALLOC, n)
        return Run(DATA, n, sector * 512 + within)

    def write_run(self, offset: int, data: bytes) -> int:
        index, within = divmod(offset, self.cs)
        n = min(len(data), self.cs - within)
        sector = self._sector(index)
        if not sector:
            start = offset - within
            content = bytearray(self.backing_data(start, min(self.cs, self.virtual_size - start)))
            content.extend(bytes(self.cs - len(content)))
            content[within : within + n] = data[:n]
            sector = self.data_end
            self.file.write(sector * 512, bytes(content))
            self.data_end += self.tracks
            entry = sector // self.multiplier
            self.set_table_entry(self.bat, index, entry, 4, "little")
            self.file.write(64 + index * 4, struct.pack("<I", entry))
            return n
        self.file.write(sector * 512 + within, bytes(data[:n]))
        return n

    def close(self) -> None:
        """``parallels_close``: clear the in-use marker, trim the file to the data end."""
        if not self.marked:
            return
        self.marked = False
        try:
            with self.lock:
                pwrite_sync(self.file, 44, struct.pack("<I", 0))  # parallels_update_header
                trunc = getattr(self.file, "truncate", None)
                if trunc is not None and self.file_length() > self.data_end * 512:
                    trunc(self.data_end * 512)
        except (IOFailure, OSError):
            pass  # QEMU ignores errors here as well
