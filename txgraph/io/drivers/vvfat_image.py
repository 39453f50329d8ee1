"""The FAT disk vvfat shows for a host directory: geometry, directory scan, FAT, boot sector, MBR.

Reproduces QEMU 7.2's block/vvfat.c ``vvfat_open`` (geometry), ``init_directories``,
``read_directory``, ``init_fat``/``fat_set``, ``init_mbr`` and ``sector2CHS``:

* geometry: a hard disk (MBR in sector 0, the partition at sector 63) of
  64x16x63 sectors for FAT12 and 1024x16x63 for FAT16/FAT32, or a floppy
  (no MBR) of 80x2x36 sectors (80x2x18 for an explicit FAT12); 16 sectors per
  cluster in every case (QEMU 7.2 sets the floppy values, then overwrites them);
* the tree is scanned breadth first in ``readdir`` order: each directory's
  entries (the volume label in the root, ``.`` and ``..`` first elsewhere,
  long and short names, times from ``stat``), then the clusters, one run per
  file and directory in that order, chained in the FAT; a root of FAT12/16 is
  padded to ``root_entries`` (32 per sector of a cluster);
* the boot sector is always the FAT16 layout (QEMU writes "FAT16" for FAT32 too).

Errors are QEMU's texts: a directory that cannot be read (or a root with too many
entries, or a file over 2 GiB) is "Could not read directory DIR", a tree larger
than the FAT is "Directory does not fit in FAT16 (capacity 528.45 MB)".
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
from dataclasses import dataclass, field

from txgraph.errors import OpenError
from txgraph.io.drivers import vvfat_names as names

__all__ = ["Geometry", "Mapping", "FatImage", "geometry", "build", "read_dir_names"]

SECTOR = 512


@dataclass(frozen=True)
class Geometry:
    """``vvfat_open``'s disk shape."""

    fat_type: int
    cyls: int
    heads: int
    secs: int
    #: 0 for a floppy, 0x3f for a hard disk (the MBR's partition start)
    offset_to_bootsector: int
    sectors_per_cluster: int = 0x10

    @property
    def total_sectors(self) -> int:
        return self.cyls * self.heads * self.secs


def geometry(fat_type: int, floppy: bool) -> Geometry:
    """``vvfat_open``: the shape for ``fat-type`` (0: the default) and ``floppy``.

    :raise OpenError: "Valid FAT types are only 12, 16 and 32".
    """
    if floppy:
        secs = 36 if fat_type == 0 or fat_type != 12 else 18
        fat = fat_type or 12
        shape = Geometry(fat, 80, 2, secs, 0)
    else:
        fat = fat_type or 16
        shape = Geometry(fat, 64 if fat == 12 else 1024, 16, 63, 0x3F)
    if fat not in (12, 16, 32):
        raise OpenError("Valid FAT types are only 12, 16 and 32")
    return shape


@dataclass
class Mapping:
    """``mapping_t``: a run of clusters and the host file or directory behind it."""

    begin: int
    end: int
    #: index of the file's short entry in the directory table
    dir_index: int
    path: str
    is_dir: bool
    parent: int = -1
    first_dir_index: int = 0
    #: no write bit in the host mode at the scan: guest writes into it are refused
    read_only: bool = False


@dataclass
class FatImage:
    """Everything a read of the device needs (built once at open, read-only afterwards)."""

    shape: Geometry
    label: bytes
    sectors_per_fat: int = 0
    root_entries: int = 0
    cluster_count: int = 0
    offset_to_fat: int = 0
    offset_to_root_dir: int = 0
    #: the first 0x40 sectors: MBR (hard disk) and boot sector
    first_sectors: bytearray = field(default_factory=lambda: bytearray(0x40 * SECTOR))
    fat: bytearray = field(default_factory=bytearray)
    directory: bytearray = field(default_factory=bytearray)
    mappings: list[Mapping] = field(default_factory=list)

    @property
    def cluster_size(self) -> int:
        return self.shape.sectors_per_cluster * SECTOR

    @property
    def entries(self) -> int:
        return len(self.directory) // 32


class _Libc:
    """``opendir``/``readdir``: the entries in the order QEMU sees them, ``.`` and ``..``
    included (their place in the stream decides when a full root is refused)."""

    class Dirent(ctypes.Structure):
        _fields_ = [
            ("d_ino", ctypes.c_uint64),
            ("d_off", ctypes.c_int64),
            ("d_reclen", ctypes.c_ushort),
            ("d_type", ctypes.c_ubyte),
            ("d_name", ctypes.c_char * 256),
        ]

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.opendir = libc.opendir
        self.opendir.restype = ctypes.c_void_p
        self.opendir.argtypes = [ctypes.c_char_p]
        self.readdir = libc.readdir64
        self.readdir.restype = ctypes.POINTER(self.Dirent)
        self.readdir.argtypes = [ctypes.c_void_p]
        self.closedir = libc.closedir
        self.closedir.argtypes = [ctypes.c_void_p]


_LIBC = _Libc()


def read_dir_names(path: str) -> list[bytes] | None:
    """The names ``readdir`` returns for ``path`` in order; None if ``opendir`` fails."""
    handle = _LIBC.opendir(os.fsencode(path))
    if not handle:
        return None
    out: list[bytes] = []
    try:
        while True:
            entry = _LIBC.readdir(handle)
            if not entry:
                return out
            out.append(bytes(entry.contents.d_name))
    finally:
        _LIBC.closedir(handle)


def _put_entry(image: FatImage, data: bytes | bytearray) -> int:
    image.directory += data
    return image.entries - 1


def _set_begin(image: FatImage, index: int, begin: int) -> None:
    """``set_begin_of_direntry``: the low and high 16 bits of the first cluster."""
    struct.pack_into("<H", image.directory, index * 32 + 26, begin & 0xFFFF)
    struct.pack_into("<H", image.directory, index * 32 + 20, (begin >> 16) & 0xFFFF)


def _add_name(image: FatImage, start: int, raw: bytes) -> int:
    """``create_short_and_long_name``: long entries, then the short one; its index."""
    longs = names.long_name_entries(raw)
    first_long = image.entries
    for entry in longs:
        _put_entry(image, entry)
    taken = [
        bytes(image.directory[i * 32 : i * 32 + 11])
        for i in range(start, image.entries)
        if image.directory[i * 32 + 11] != names.ATTR_LONG
    ]
    short = names.short_name(names.glib_code_points(raw), taken)
    index = _put_entry(image, short + bytes(21))
    if longs:
        chk = names.checksum(short)
        for i in range(first_long, index):
            image.directory[i * 32 + 13] = chk
    return index


def _read_directory(image: FatImage, index: int) -> None:
    """``read_directory``: the entries of mapping ``index`` and the mappings of its children."""
    mapping = image.mappings[index]
    first_cluster = mapping.begin
    parent_begin = image.mappings[mapping.parent].begin if mapping.parent >= 0 else -1
    listing = read_dir_names(mapping.path)
    if listing is None:
        raise _cannot_read(mapping.path)
    start = mapping.first_dir_index = 0 if first_cluster == 0 else image.entries
    if first_cluster != 0:
        _put_entry(image, b".          " + bytes(21))
        _put_entry(image, b"..         " + bytes(21))
    for raw in listing:
        is_dot, is_dotdot = raw == b".", raw == b".."
        if first_cluster == 0 and image.entries >= image.root_entries - 1:
            raise _cannot_read(mapping.path)  # "Too many entries in root directory"
        if first_cluster == 0 and (is_dot or is_dotdot):
            continue
        path = mapping.path + "/" + os.fsdecode(raw)
        try:
            st = os.stat(path)
        except OSError:
            continue  # QEMU skips what it cannot stat (a dangling link, no search permission)
        if is_dot or is_dotdot:
            entry = start if is_dot else start + 1
        else:
            entry = _add_name(image, start, raw)
        is_dir = stat.S_ISDIR(st.st_mode)
        ctime, atime, mtime = (
            st.st_ctime_ns // 10**9,
            st.st_atime_ns // 10**9,
            st.st_mtime_ns // 10**9,
        )
        struct.pack_into(
            "<BBBHHHHHH",
            image.directory,
            entry * 32 + 11,
            0x10 if is_dir else 0x20,
            0,
            0,
            names.fat_time(ctime),
            names.fat_date(ctime),
            names.fat_date(atime),
            0,
            names.fat_time(mtime),
            names.fat_date(mtime),
        )
        begin = parent_begin if is_dotdot else first_cluster if is_dot else 0
        _set_begin(image, entry, begin)
        if st.st_size > 0x7FFFFFFF:
            raise _cannot_read(mapping.path)  # "File ... is larger than 2GB"
        struct.pack_into("<I", image.directory, entry * 32 + 28, 0 if is_dir else st.st_size)
        if not (is_dot or is_dotdot) and (is_dir or st.st_size):
            ro = not st.st_mode & 0o222  # read_directory's read_only: no write bit
            image.mappings.append(Mapping(0, st.st_size, entry, path, is_dir, index, 0, ro))
    per_cluster = 0x10 * image.shape.sectors_per_cluster
    while image.entries % per_cluster:
        _put_entry(image, bytes(32))
    if image.shape.fat_type != 32 and index == 0 and image.entries < image.root_entries:
        image.directory += bytes(32 * (image.root_entries - image.entries))
    mapping.end = first_cluster + (image.entries - mapping.first_dir_index) * 32 // (
        image.cluster_size
    )
    _set_begin(image, mapping.dir_index, mapping.begin)


def _cannot_read(path: str) -> OpenError:
    return OpenError(f"Could not read directory {path}")


def _fat_set(image: FatImage, cluster: int, value: int) -> None:
    """``fat_set``: one FAT entry (12-bit entries share bytes)."""
    fat = image.fat
    if image.shape.fat_type == 32:
        struct.pack_into("<I", fat, cluster * 4, value & 0xFFFFFFFF)
    elif image.shape.fat_type == 16:
        struct.pack_into("<H", fat, cluster * 2, value & 0xFFFF)
    else:
        off = cluster * 3 // 2
        if cluster & 1:
            fat[off] = (fat[off] & 0x0F) | ((value & 0x0F) << 4)
            fat[off + 1] = (value >> 4) & 0xFF
        else:
            fat[off] = value & 0xFF
            fat[off + 1] = (fat[off + 1] & 0xF0) | ((value >> 8) & 0x0F)


def build(dirname: str, shape: Geometry, label: bytes) -> FatImage:
    """``init_directories`` (+ ``init_mbr`` for a hard disk): the whole image but file data.

    :raise OpenError: QEMU's texts (see the module docstring).
    """
    image = FatImage(shape, label)
    spc = shape.sectors_per_cluster
    sector_count = shape.total_sectors - shape.offset_to_bootsector
    per_fat = 1 + spc * SECTOR * 8 // shape.fat_type
    image.sectors_per_fat = (sector_count + per_fat) // per_fat
    image.offset_to_fat = shape.offset_to_bootsector + 1
    image.offset_to_root_dir = image.offset_to_fat + image.sectors_per_fat * 2
    _put_entry(image, label + bytes([0x28]) + bytes(20))  # the volume label
    # init_fat: one extra entry's room for a 12-bit pair at the end
    image.fat = bytearray(image.sectors_per_fat * SECTOR + 32)
    max_fat = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}[shape.fat_type]
    image.root_entries = 0x02 * 0x10 * spc
    image.cluster_count = (sector_count - image.offset_to_root_dir) // spc
    root = dirname[:-1] if dirname.endswith("/") else dirname
    image.mappings.append(Mapping(0, 0, 0, root, True))
    cluster = 0
    index = 0
    while index < len(image.mappings):
        mapping = image.mappings[index]
        fix_fat = index != 0
        mapping.begin = cluster
        if mapping.is_dir:
            _read_directory(image, index)
        else:
            size = mapping.end
            mapping.end = cluster + 1 + (size - 1) // image.cluster_size
            _set_begin(image, mapping.dir_index, mapping.begin)
        cluster = mapping.end
        if cluster > image.cluster_count:
            raise OpenError(
                f"Directory does not fit in FAT{shape.fat_type} "
                f"(capacity {sector_count / 2000.0:.2f} MB)"
            )
        if fix_fat:
            for j in range(mapping.begin, mapping.end - 1):
                _fat_set(image, j, j + 1)
            _fat_set(image, mapping.end - 1, max_fat)
        index += 1
    _fat_set(image, 0, max_fat)
    _fat_set(image, 1, max_fat)
    _boot_sector(image, sector_count)
    if shape.offset_to_bootsector:
        _mbr(image)
    return image


def _boot_sector(image: FatImage, sector_count: int) -> None:
    """``init_directories``' boot sector (always the FAT16 layout) and the FAT's media byte."""
    shape = image.shape
    media = 0xF8 if shape.offset_to_bootsector else 0xF0
    sector = bytearray(SECTOR)
    sector[0:3] = b"\xeb\x3e\x90"
    sector[3:11] = b"MSWIN4.1"
    struct.pack_into(
        "<HBHBHHBHHHII",
        sector,
        11,
        SECTOR,
        shape.sectors_per_cluster,
        1,
        2,
        image.root_entries,
        0 if sector_count > 0xFFFF else sector_count,
        media,
        image.sectors_per_fat & 0xFFFF,
        shape.secs,
        shape.heads,
        shape.offset_to_bootsector,
        sector_count if sector_count > 0xFFFF else 0,
    )
    sector[36] = 0 if shape.offset_to_bootsector == 0 else 0x80
    sector[38] = 0x29
    struct.pack_into("<I", sector, 39, 0xFABE1AFD)
    sector[43:54] = image.label
    sector[54:62] = b"FAT12   " if shape.fat_type == 12 else b"FAT16   "
    sector[510:512] = b"\x55\xaa"
    start = shape.offset_to_bootsector * SECTOR
    image.first_sectors[start : start + SECTOR] = sector
    image.fat[0] = media


def _chs(sector: int, shape: Geometry) -> tuple[bytes, bool]:
    """``sector2CHS``: (head, sector|cylinder-high, cylinder) and whether it overflowed."""
    rest, sec = divmod(sector, shape.secs)
    cyl, head = divmod(rest, shape.heads)
    if cyl >= shape.cyls:
        return b"\xff\xff\xff", True
    return bytes([head, ((sec + 1) | ((cyl >> 8) << 6)) & 0xFF, cyl & 0xFF]), False


def _mbr(image: FatImage) -> None:
    """``init_mbr``: the disk signature and one bootable partition over the whole disk."""
    shape = image.shape
    mbr = bytearray(SECTOR)
    struct.pack_into("<I", mbr, 0x1B8, 0xBE1AFDFA)
    start, lba_start = _chs(shape.offset_to_bootsector, shape)
    end, lba_end = _chs(shape.total_sectors - 1, shape)
    lba = lba_start or lba_end
    fs_type = {12: 0x01, 16: 0x0E if lba else 0x06, 32: 0x0C if lba else 0x0B}[shape.fat_type]
    part = bytes([0x80]) + start + bytes([fs_type]) + end
    part += struct.pack(
        "<II", shape.offset_to_bootsector, shape.total_sectors - shape.offset_to_bootsector
    )
    mbr[0x1BE : 0x1BE + 16] = part
    mbr[510:512] = b"\x55\xaa"
    image.first_sectors[0:SECTOR] = mbr
