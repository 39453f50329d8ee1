"""The ``vvfat`` driver: a host directory seen by the guest as a FAT disk.

Reproduces QEMU 7.2's block/vvfat.c ``vvfat_open`` (options, read-only rule),
``vvfat_read``/``read_cluster`` and ``vvfat_co_block_status`` (the layout is
:mod:`txgraph.io.drivers.vvfat_image`, writes :mod:`txgraph.io.drivers.vvfat_commit`):

* with a ``write-target`` child (``rw=on``) a sector the target holds reads from
  there; every other sector as below;
* the MBR, boot sector and both FAT copies come from memory; a cluster of a
  directory from the directory table; a cluster of a file from the host file,
  opened when it is first read and kept open while reads stay in that file;
* a file cluster is read into one cluster buffer the node keeps: when the
  host file ends inside the cluster, the rest of the buffer still holds what an
  earlier file cluster left there (QEMU 7.2 does not clear it), and a
  cluster the node cannot read (an unreadable file) reads as zeroes;
* block status: everything is data.

Requests are sector-based (``vvfat_refresh_limits``): a write that does not
cover whole sectors is widened with what the guest reads there (the block
layer's read-modify-write). Lock discipline: the cluster buffer, the current
file and cluster, the write-back state and the boot sector's one writable byte
are owned by the node and guarded by ``self._lock`` (QEMU's ``s->lock``), since
requests may come from several threads.
"""

from __future__ import annotations

import bisect
import errno as E
import os
import threading
from collections.abc import Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo
from txgraph.io.drivers.vvfat_commit import WriteBack
from txgraph.io.drivers.vvfat_image import SECTOR, FatImage, build, geometry
from txgraph.io.drivers.vvfat_image import Mapping as FatMapping
from txgraph.io.registry import register
from txgraph.io.settings import opt_bool, opt_int

__all__ = ["VvfatNode", "open_options"]


def open_options(options: Mapping[str, Any]) -> tuple[str, int, bool, bytes]:
    """``vvfat_open``'s option checks in QEMU's order: (dir, fat-type, floppy, label).

    :raise OpenError: "vvfat block driver requires a 'dir' option",
        "vvfat label cannot be longer than 11 bytes".
    """
    dirname = options.get("dir")
    if not isinstance(dirname, str):
        raise OpenError("vvfat block driver requires a 'dir' option")
    # QemuOpts reads the number as an unsigned 64-bit value, QEMU keeps it in an int
    fat_type = opt_int(options, "fat-type", 0, minimum=-(2**63)) & 0xFFFFFFFF
    fat_type -= (fat_type & 0x80000000) << 1
    floppy = opt_bool(options, "floppy", False)
    label = options.get("label")
    if label is None:
        text = b"QEMU VVFAT"
    else:
        text = os.fsencode(str(label))
        if len(text) > 11:
            raise OpenError("vvfat label cannot be longer than 11 bytes")
    return dirname, fat_type, floppy, text.ljust(11, b" ")


@register("vvfat")
class VvfatNode(DriverNode):
    """A read-only FAT12/16/32 disk built from a host directory at open."""

    driver_name = "vvfat"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        dirname, fat_type, floppy, label = open_options(options)
        self._image: FatImage = build(dirname, geometry(fat_type, floppy), label)
        # file paths are resolved now: the scan ran against the opener's working directory
        for mapping in self._image.mappings:
            mapping.path = os.path.abspath(mapping.path)
        self._begins = [m.begin for m in self._image.mappings]
        self._lock = threading.Lock()
        self._buffer = bytearray(self._image.cluster_size)
        self._current_cluster = -1
        self._current: FatMapping | None = None
        self._cluster: bytes | bytearray = self._buffer
        self._fd: int | None = None
        self._writeback = WriteBack(self, self._image) if "write-target" in children else None

    # -- reads --------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        first = offset // SECTOR
        last = (offset + length + SECTOR - 1) // SECTOR
        if last > self._image.shape.total_sectors:
            raise IOFailure(os.strerror(E.EIO), E.EIO)
        with self._lock:
            data = self.guest_sectors(first, last)
        skip = offset - first * SECTOR
        return data[skip : skip + length]

    def guest_sectors(self, first: int, last: int) -> bytes:
        """``vvfat_read`` of ``[first, last)``: the write target's sectors where it holds
        them, the directory's elsewhere (the node's lock held)."""
        target = self.children.get("write-target") if self._writeback is not None else None
        if target is None:
            return b"".join(self._sectors(first, last))
        out: list[bytes] = []
        sector = first
        while sector < last:
            status = target.block_status(sector * SECTOR, (last - sector) * SECTOR)
            stop = min(last, sector + max(status.length // SECTOR, 1))
            if status.allocated:
                out.append(target.read(sector * SECTOR, (stop - sector) * SECTOR))
            else:
                out.extend(self._sectors(sector, stop))
            sector = stop
        return b"".join(out)

    def base_sector(self, sector: int) -> bytes:
        """One sector as the directory alone shows it (the node's lock held)."""
        return b"".join(self._sectors(sector, sector + 1))

    def mapping_for(self, cluster: int) -> FatMapping | None:
        """``find_mapping_for_cluster`` (None for a negative cluster)."""
        return self._find(cluster) if cluster >= 0 else None

    def close_current_file(self) -> None:
        """``vvfat_close_current_file`` (the node's lock held)."""
        self._close_file()

    def _sectors(self, first: int, last: int) -> list[bytes]:
        """``vvfat_read`` over ``[first, last)`` (whole stretches where QEMU goes sector by
        sector but the answer cannot differ)."""
        image = self._image
        out: list[bytes] = []
        sector = first
        spc = image.shape.sectors_per_cluster
        fat_len = image.sectors_per_fat
        while sector < last:
            if sector < image.offset_to_fat:
                stop = min(last, image.offset_to_fat)
                out.append(bytes(image.first_sectors[sector * SECTOR : stop * SECTOR]))
            elif sector < image.offset_to_root_dir:
                rel = (sector - image.offset_to_fat) % fat_len
                stop = min(last, sector + fat_len - rel, image.offset_to_root_dir)
                count = stop - sector
                out.append(bytes(image.fat[rel * SECTOR : (rel + count) * SECTOR]))
            else:
                rel = sector - image.offset_to_root_dir
                cluster, inside = divmod(rel, spc)
                stop = min(last, sector + spc - inside)
                data = self._read_cluster(cluster)
                count = stop - sector
                if data is None:
                    out.append(bytes(count * SECTOR))
                else:
                    out.append(bytes(data[inside * SECTOR : (inside + count) * SECTOR]))
            sector = stop
        return out

    def _find(self, cluster: int) -> FatMapping | None:
        """``find_mapping_for_cluster``."""
        at = bisect.bisect_right(self._begins, cluster) - 1
        if at < 0:
            return None
        mapping = self._image.mappings[at]
        return mapping if mapping.begin <= cluster < mapping.end else None

    def _read_cluster(self, cluster: int) -> bytes | bytearray | None:
        """``read_cluster``: the cluster's bytes, or None where QEMU returns zeroes."""
        image = self._image
        if cluster > image.cluster_count:
            return None
        if cluster == self._current_cluster:
            return self._cluster
        current = self._current
        if current is None or not current.begin <= cluster < current.end:
            mapping = self._find(cluster)
            if mapping is not None and mapping.is_dir:
                self._close_file()
                self._current = current = mapping
            else:
                if mapping is None or not self._open_file(mapping):
                    return None
                current = mapping
        if current.is_dir:
            start = (cluster - current.begin) * image.cluster_size + 32 * current.first_dir_index
            self._cluster = image.directory[start : start + image.cluster_size]
            self._current_cluster = cluster
            return self._cluster
        assert self._fd is not None
        try:
            got = os.pread(
                self._fd, image.cluster_size, (cluster - current.begin) * image.cluster_size
            )
        except OSError:
            self._current_cluster = -1
            return None
        # a short read leaves the buffer's tail as the last file cluster left it
        self._buffer[: len(got)] = got
        self._cluster = self._buffer
        self._current_cluster = cluster
        return self._cluster

    def _open_file(self, mapping: FatMapping) -> bool:
        """``open_file``: switch the open host file (a failed open keeps the old one)."""
        if self._current is not None and self._current.path == mapping.path:
            return True
        try:
            fd = os.open(mapping.path, os.O_RDONLY)
        except OSError:
            return False
        self._close_file()
        self._fd = fd
        self._current = mapping
        return True

    def _close_file(self) -> None:
        """``vvfat_close_current_file``."""
        if self._current is not None:
            self._current = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._current_cluster = -1

    # -- the rest of the contract ---------------------------------------------------------
    def write(self, offset: int, data: bytes) -> None:
        if self._writeback is None:
            # vvfat_write without a write target (rw=off): -EACCES
            raise IOFailure(os.strerror(E.EACCES), E.EACCES)
        first = offset // SECTOR
        last = (offset + len(data) + SECTOR - 1) // SECTOR
        if last > self._image.shape.total_sectors:
            raise IOFailure(os.strerror(E.EIO), E.EIO)
        with self._lock:
            head = offset - first * SECTOR
            if head or (offset + len(data)) % SECTOR:
                buf = bytearray(self.guest_sectors(first, last))
                buf[head : head + len(data)] = data
            else:
                buf = bytearray(data)
            self._close_file()
            self._writeback.write(first, bytes(buf))

    def size(self) -> int:
        return self._image.shape.total_sectors * SECTOR

    def block_status(self, offset: int, length: int) -> BlockStatus:
        # vvfat_co_block_status: BDRV_BLOCK_DATA for any range
        return BlockStatus(offset, length, allocated=True, zero=False)

    def info(self) -> ImageInfo:
        return ImageInfo(format="vvfat", virtual_size=self.size())

    def close(self) -> None:
        with self._lock:
            self._close_file()
