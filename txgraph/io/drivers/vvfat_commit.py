"""Guest writes on a ``rw=on`` vvfat node: the checks, the write target, the write-back.

Reproduces QEMU 7.2's block/vvfat.c ``vvfat_write``, ``try_commit``,
``is_consistent``, ``get_cluster_count_for_direntry``'s write-out scheduling,
``commit_one_file`` and the end of ``do_commit``, for the writes txgraph serves:

* a one-sector write of the boot sector may change only the ``reserved1``
  byte (kept in memory, nothing reaches the write target); any other write
  before the first FAT is refused with EPERM, as is a write into a file or
  directory whose host mode had no write bit when the tree was scanned;
* everything else goes to the ``write-target`` child (a qcow image), the
  clusters written are marked, and a commit is tried: QEMU's consistency check
  fails while a cluster outside every file and directory holds written data
  (the guest then keeps reading what it wrote, nothing reaches the host); a
  consistent state writes every changed file back from its first changed
  cluster (as 7.2.22 does it, whose stable updates walk the chain to that
  cluster correctly), empties the write target and clears the marks; when no
  file changed the write target keeps the data;
* txgraph does not reproduce QEMU's commit of structural changes (a changed
  FAT or directory cluster: new, deleted, renamed, grown or shrunk files and
  directories): such a write is refused with EOPNOTSUPP before anything is
  stored, so the guest, the write target and the host directory stay as they
  were (QEMU would take the write; see tests/interop/test_vvfat_rw_refusals.py).
  This covers a guest setting the read-only attribute of an entry, where QEMU
  7.2 compares with an entry at a wrongly computed index (EPERM, or an
  assertion failure when the index is past the table).

A write-out that cannot be done (the host file cannot be opened or written) ends
the commit there; QEMU 7.2 aborts the daemon in that case.

Lock discipline: a :class:`WriteBack` belongs to one VvfatNode and is used only
under that node's lock (QEMU's ``s->lock``).
"""

from __future__ import annotations

import errno as E
import os
import struct
from typing import TYPE_CHECKING

from txgraph.errors import IOFailure
from txgraph.io.drivers.vvfat_image import SECTOR, FatImage
from txgraph.io.drivers.vvfat_image import Mapping as FatMapping

if TYPE_CHECKING:
    from txgraph.io.drivers.vvfat import VvfatNode

__all__ = ["WriteBack", "STRUCTURAL_CHANGE", "FAT32_ABORT"]

#: txgraph's refusal of a write whose commit makes QEMU 7.2 abort
FAT32_ABORT = (
    "vvfat: QEMU 7.2 aborts writing file data of a FAT32 disk back; txgraph refuses the write"
)
#: txgraph's refusal of a write QEMU would commit as a structural change
STRUCTURAL_CHANGE = (
    "vvfat: txgraph does not write FAT or directory changes back to the host directory"
)
#: ``offsetof(bootsector_t, u.fat16.reserved1)``: the one byte a guest may change
_RESERVED1 = 0x25


def _eperm() -> IOFailure:
    return IOFailure(os.strerror(E.EPERM), E.EPERM)


def _walk_order(image: FatImage) -> dict[int, int]:
    """A file's rank in ``check_directory_consistency``'s walk (depth first, each
    directory's entries in order), keyed by its directory entry index."""
    children: dict[int, list[int]] = {}
    for index, mapping in enumerate(image.mappings):
        if mapping.parent >= 0:
            children.setdefault(mapping.parent, []).append(index)
    order: dict[int, int] = {}
    stack = [0]
    while stack:
        index = stack.pop()
        mapping = image.mappings[index]
        if not mapping.is_dir:
            order[mapping.dir_index] = len(order)
            continue
        stack.extend(reversed(children.get(index, [])))
    return order


class WriteBack:
    """The write path of one node with a write target (under the node's lock)."""

    def __init__(self, node: VvfatNode, image: FatImage) -> None:
        self._node = node
        self._image = image
        shape = image.shape
        # enable_write_target runs before init_directories: sized from the whole partition
        count = (shape.total_sectors - shape.offset_to_bootsector) // shape.sectors_per_cluster
        self._count = count
        #: clusters written since the last commit (USED_ALLOCATED); a write always
        #: allocates in the target, so these are the clusters cluster_was_modified finds
        self._written: set[int] = set()
        self._root_end = image.mappings[0].end  # last_cluster_of_root_directory
        self._walk = _walk_order(image)

    # -- vvfat_write ---------------------------------------------------------------------
    def write(self, first: int, buf: bytes) -> None:
        """``vvfat_write`` of whole sectors ``first ..`` (the node's lock held)."""
        image = self._image
        count = len(buf) // SECTOR
        boot = image.shape.offset_to_bootsector
        if first == boot and count == 1:
            sector = image.first_sectors[boot * SECTOR : (boot + 1) * SECTOR]
            if any(a != b for i, (a, b) in enumerate(zip(sector, buf)) if i != _RESERVED1):
                raise _eperm()  # "Tried to write to protected bootsector"
            image.first_sectors[boot * SECTOR + _RESERVED1] = buf[_RESERVED1]
            return
        if first < image.offset_to_fat:
            raise _eperm()
        self._check_read_only(first, buf)
        self._check_structure(first, buf)
        lo, hi = self._cluster_of(first), self._cluster_of(first + count - 1)
        clusters = range(max(lo, 0), min(hi + 1, self._count))
        if image.shape.fat_type == 32 and self._writeouts(self._written.union(clusters)):
            # commit_one_file's assertion fails on FAT32 (the daemon aborts)
            raise IOFailure(FAT32_ABORT, E.EOPNOTSUPP)
        target = self._node.children["write-target"]
        target.write(first * SECTOR, buf)
        self._written.update(clusters)
        self._try_commit()

    def _cluster_of(self, sector: int) -> int:
        """``sector2cluster``: C's division, so the last sectors before the root directory
        count as cluster 0 and earlier ones are negative."""
        rel = sector - self._image.offset_to_root_dir
        spc = self._image.shape.sectors_per_cluster
        return rel // spc if rel >= 0 else -(-rel // spc)

    def _check_read_only(self, first: int, buf: bytes) -> None:
        """``vvfat_write``'s "Tried to write to write-protected file" check."""
        lo = max(self._cluster_of(first), 0)
        hi = self._cluster_of(first + len(buf) // SECTOR - 1)
        cluster = lo
        while cluster <= hi:
            mapping = self._node.mapping_for(cluster)
            if mapping is None:
                cluster += 1
                continue
            if mapping.read_only:
                raise _eperm()
            cluster = mapping.end

    def _check_structure(self, first: int, buf: bytes) -> None:
        """txgraph's refusal: the first FAT and the directory clusters must read as before."""
        image = self._image
        fat_end = image.offset_to_fat + image.sectors_per_fat
        for i in range(len(buf) // SECTOR):
            sector = first + i
            new = buf[i * SECTOR : (i + 1) * SECTOR]
            if image.offset_to_fat <= sector < fat_end:
                rel = sector - image.offset_to_fat
                old = bytes(image.fat[rel * SECTOR : (rel + 1) * SECTOR])
            elif sector >= image.offset_to_root_dir:
                mapping = self._node.mapping_for(self._cluster_of(sector))
                if mapping is None or not mapping.is_dir:
                    continue
                old = self._node.base_sector(sector)
            else:
                continue
            if new != old:
                raise IOFailure(STRUCTURAL_CHANGE, E.EOPNOTSUPP)

    # -- try_commit ----------------------------------------------------------------------
    def _try_commit(self) -> None:
        """``try_commit``: ``is_consistent``, then ``do_commit`` (failures stay silent)."""
        node = self._node
        node.close_current_file()
        files = self._writeouts(self._written)
        if not files:
            return  # inconsistent, or do_commit with nothing to commit: the target keeps it
        # schedule_writeout in check_directory_consistency's order, from the first
        # changed cluster; handle_commits in that order
        for index in sorted(files):
            mapping = node.mapping_for(files[index])
            assert mapping is not None
            offset = (files[index] - mapping.begin) * self._image.cluster_size
            if not self._commit_one_file(mapping, offset):
                return
        make_empty = getattr(node.children["write-target"], "make_empty", None)
        if make_empty is not None:  # bdrv_make_empty where the target's driver has one
            make_empty()
        self._written.clear()

    def _writeouts(self, written: set[int]) -> dict[int, int]:
        """``is_consistent`` with the FAT and directories unchanged, and the files it
        schedules for write-out (walk rank -> first written cluster); empty when a
        written cluster inside the FAT's range belongs to no file or directory."""
        node = self._node
        files: dict[int, int] = {}
        for cluster in written:
            mapping = node.mapping_for(cluster)
            if mapping is None:
                if self._root_end <= cluster < self._image.cluster_count:
                    return {}
            elif not mapping.is_dir:
                index = self._walk[mapping.dir_index]
                files[index] = min(files.get(index, cluster), cluster)
        return files

    def _fat_next(self, cluster: int) -> int:
        """``modified_fat_get`` on an unchanged FAT."""
        if cluster < self._root_end:
            return cluster + 1 if cluster + 1 < self._root_end else 0x0FFFFFFF
        fat = self._image.fat
        bits = self._image.shape.fat_type
        if bits == 32:
            return int(struct.unpack_from("<I", fat, cluster * 4)[0])
        if bits == 16:
            return int(struct.unpack_from("<H", fat, cluster * 2)[0])
        pair = fat[cluster * 3 // 2] | fat[cluster * 3 // 2 + 1] << 8
        return (pair >> (4 if cluster & 1 else 0)) & 0xFFF

    def _commit_one_file(self, mapping: FatMapping, offset: int) -> bool:
        """``commit_one_file``: the file from ``offset`` on, read through the guest view."""
        image = self._image
        (size,) = struct.unpack_from("<I", image.directory, mapping.dir_index * 32 + 28)
        cs = image.cluster_size
        cluster = mapping.begin
        for _ in range(0, offset, cs):
            cluster = self._fat_next(cluster)
        try:
            fd = os.open(mapping.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return False
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            while offset < size:
                rest = min(cs, size - offset)
                following = self._fat_next(cluster)
                first = image.offset_to_root_dir + cluster * image.shape.sectors_per_cluster
                data = self._node.guest_sectors(first, first + (rest + SECTOR - 1) // SECTOR)
                os.write(fd, data[:rest])
                offset += rest
                cluster = following
            os.ftruncate(fd, size)
        except (OSError, IOFailure):
            return False
        finally:
            os.close(fd)
        self._node.close_current_file()
        return True
