"""What every image format driver shares: mapping-driven reads, block status, locking.

A format describes its image as *runs* (:meth:`ImageFormatNode.map_run`): guest
bytes stored in a child at a host offset (``DATA``), bytes the format defines
as zeroes (``ZERO``), or bytes it does not define (``UNALLOC``: the backing
reads through, zeroes without one). Reads (``bdrv_co_preadv`` of the format),
block status (``bdrv_co_block_status`` with QEMU's generic rule for
``supports_backing`` drivers in ``bdrv_co_block_status``) and writes are built
on that; each driver module only parses its header and maps offsets.

Lock discipline: ``self.lock`` (an RLock) is owned by the node and guards its
in-memory metadata (tables, header fields, the allocation end); every map
walk and every allocation runs under it (QEMU's per-driver ``s->lock``
CoMutex). Child I/O for guest data runs outside the metadata update but under
the same lock, so a run found by one request cannot be reallocated by another.
"""

from __future__ import annotations

import errno as E
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo, recurse_status

__all__ = ["ImageFormatNode", "Run", "DATA", "ZERO", "UNALLOC", "eio", "le", "be", "could_not_open"]

DATA, ZERO, UNALLOC = "data", "zero", "unalloc"

#: QEMU's BDRV_MAX_LENGTH: no request or table may reach past it
BDRV_MAX_LENGTH = (1 << 63) - 1 - ((1 << 63) - 1) % (1 << 9) - (1 << 30)


@dataclass(frozen=True)
class Run:
    """``length`` guest bytes of one kind; ``host`` is the offset in ``child`` for DATA."""

    kind: str
    length: int
    host: int = 0
    child: str = "file"


def eio(desc: str = "Input/output error") -> IOFailure:
    return IOFailure(desc, E.EIO)


def le(fmt: str, buf: bytes | bytearray, off: int = 0) -> tuple[Any, ...]:
    return struct.unpack_from("<" + fmt, buf, off)


def be(fmt: str, buf: bytes | bytearray, off: int = 0) -> tuple[Any, ...]:
    return struct.unpack_from(">" + fmt, buf, off)


def could_not_open(filename: str, err: int) -> OpenError:
    """``bdrv_open_driver``'s text when a driver fails with an errno and no message."""
    import os

    return OpenError(f"Could not open '{filename}': {os.strerror(err)}")


class ImageFormatNode(DriverNode):
    """A format node over its ``file`` child (and ``backing`` for COW formats)."""

    #: ``drv->supports_backing``: unallocated ranges read from the backing (block status too)
    supports_backing: ClassVar[bool] = False
    #: whether ``bdrv_get_info`` reports a cluster size (``cluster-size`` in queries)
    reports_cluster_size: ClassVar[bool] = True
    #: the blkdebug event the driver raises on the data's child before a guest data read
    #: (``BLKDBG_EVENT(bs->file, BLKDBG_READ_AIO)``), None for drivers that raise none
    data_read_event: ClassVar[str | None] = None
    #: the driver raises ``read_backing_aio`` on ``file`` before a guest read of the backing
    backing_read_event: ClassVar[bool] = False

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        if "file" not in self.children:
            raise OpenError('A block device must be specified for "file"')
        #: guards the driver's metadata (see the module docstring)
        self.lock = threading.RLock()
        self.virtual_size = 0
        self.cluster_size: int | None = None
        self.backing_file: str | None = None
        self.backing_format: str | None = None
        self.open_image()
        if self.virtual_size // 512 * 512 > BDRV_MAX_LENGTH:
            # bdrv_open_driver -> bdrv_refresh_total_sectors. QEMU computes the limit on an
            # int64_t sector count that may already have wrapped: then it opens the node and
            # every later size query of it fails ("Can't get image size"); txgraph always
            # refuses (tests/differential/test_format_mutations.py pins the divergence).
            raise OpenError("Could not refresh total sector count: File too large")

    # -- what a driver module provides -----------------------------------------------
    def open_image(self) -> None:
        """Parse and validate the header (the driver's ``bdrv_open``); raise OpenError."""
        raise NotImplementedError

    def map_run(self, offset: int, length: int) -> Run:
        """The run starting at guest ``offset``, at most ``length`` bytes (under ``lock``)."""
        raise NotImplementedError

    def write_run(self, offset: int, data: bytes) -> int:
        """Write a prefix of ``data`` at ``offset`` (allocating); return its length."""
        raise IOFailure("Operation not supported", E.ENOTSUP)

    def format_specific(self) -> dict[str, Any] | None:
        return None

    # -- helpers for the driver modules ------------------------------------------------
    @property
    def file(self) -> DriverNode:
        return self.children["file"]

    @property
    def filename(self) -> str:
        return self.file.info().filename

    def fread(self, offset: int, length: int, child: str = "file") -> bytes:
        """A metadata read; QEMU's block layer refuses ranges past BDRV_MAX_LENGTH."""
        if offset < 0 or offset + length > BDRV_MAX_LENGTH:
            raise eio()
        node = self.children[child]
        size = node.size()
        if offset >= size:
            return bytes(length)
        data = node.read(offset, min(length, size - offset))
        return data + bytes(length - len(data))

    def read_table(self, offset: int, length: int) -> bytearray:
        """A metadata table as QEMU reads it at open (``bdrv_pread``).

        Past the end of the file QEMU's block layer reads zeroes; only the part the file
        holds is kept (a missing entry reads as 0), so a hostile table size cannot make
        the driver allocate it. A range past BDRV_MAX_LENGTH fails like QEMU's open.
        """
        if offset < 0 or offset + length > BDRV_MAX_LENGTH:
            raise could_not_open(self.filename, E.EIO)
        stored = max(0, min(length, self.file_length() - offset))
        try:
            return bytearray(self.fread(offset, stored) if stored else b"")
        except IOFailure as err:
            raise could_not_open(self.filename, err.errno) from None

    @staticmethod
    def set_table_entry(table: bytearray, index: int, value: int, width: int, order: str) -> None:
        """Store entry ``index`` of a table held by :meth:`read_table` (growing it)."""
        off = index * width
        if off + width > len(table):
            table.extend(bytes(off + width - len(table)))
        table[off : off + width] = value.to_bytes(width, order)  # type: ignore[arg-type]

    @staticmethod
    def table_entry(table: bytearray, index: int, width: int, order: str) -> int:
        off = index * width
        if off + width > len(table):
            return 0
        return int.from_bytes(table[off : off + width], order)  # type: ignore[arg-type]

    def file_length(self, child: str = "file") -> int:
        """``bdrv_getlength`` of a child: whole sectors, so a partial last sector counts."""
        node = self.children[child]
        return (int(getattr(node, "file_length", node.size)()) + 511) // 512 * 512

    # -- data path ---------------------------------------------------------------------
    def size(self) -> int:
        return self.virtual_size

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise IOFailure("Invalid argument", E.EINVAL)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        out = bytearray(length)
        pos = 0
        with self.lock:
            while pos < length:
                run = self.map_run(offset + pos, length - pos)
                n = min(run.length, length - pos)
                if n <= 0:
                    raise eio()
                if run.kind == DATA:
                    if self.data_read_event:
                        self.children[run.child].debug_event(self.data_read_event)
                    out[pos : pos + n] = self.fread(run.host, n, run.child)
                elif run.kind == UNALLOC:
                    if self.backing_read_event and "backing" in self.children:
                        self.file.debug_event("read_backing_aio")
                    self._read_backing(offset + pos, out, pos, n)
                pos += n
        return bytes(out)

    def _read_backing(self, guest: int, out: bytearray, pos: int, n: int) -> None:
        """Unallocated bytes: the backing at the same offset, zeroes past its end."""
        backing = self.children.get("backing")
        if backing is None or not self.supports_backing:
            return
        inside = max(0, min(n, backing.size() - guest))
        if inside:
            out[pos : pos + inside] = backing.read(guest, inside)

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        pos = 0
        with self.lock:
            while pos < len(data):
                n = self.write_run(offset + pos, data[pos:])
                if n <= 0:
                    raise eio()
                pos += n

    def backing_data(self, offset: int, length: int) -> bytes:
        """What the guest reads at ``[offset, offset+length)`` below this layer (COW fill)."""
        out = bytearray(length)
        self._read_backing(offset, out, 0, length)
        return bytes(out)

    def block_status(self, offset: int, length: int) -> BlockStatus:
        """The driver's block status plus ``bdrv_co_block_status``'s backing rule."""
        length = min(length, self.virtual_size - offset)
        with self.lock:
            run = self.map_run(offset, length)
        n = min(run.length, length)
        if run.kind == DATA:
            host = run.host if run.child == "file" or self.data_child_is_file else None
            if self.recurse(run):
                return self._recurse(offset, n, run)
            return BlockStatus(offset, n, True, False, host)
        if run.kind == ZERO:
            return BlockStatus(offset, n, True, True)
        if not self.supports_backing:
            return BlockStatus(offset, n, False, False)
        backing = self.children.get("backing")
        if backing is None:
            return BlockStatus(offset, n, False, True)
        bsize = backing.size()
        if offset < bsize:
            return BlockStatus(offset, min(n, bsize - offset), False, False)
        return BlockStatus(offset, n, False, True)

    #: block status reports host offsets of extents other than ``file`` too
    data_child_is_file: ClassVar[bool] = False

    def recurse(self, run: Run) -> bool:
        """Whether the driver's status of this data run carries BDRV_BLOCK_RECURSE."""
        return False

    def _recurse(self, offset: int, n: int, run: Run) -> BlockStatus:
        """``bdrv_co_block_status``'s RECURSE step: the file's zero status refines a data run."""
        return recurse_status(self.children[run.child], offset, n, run.host)

    # -- control path ------------------------------------------------------------------
    def info(self) -> ImageInfo:
        fi = self.file.info()
        actual = fi.actual_size
        for key, child in self.children.items():
            if key.startswith("extents.") and actual is not None:
                actual += child.info().actual_size or 0
        return ImageInfo(
            format=self.driver_name,
            virtual_size=self.size(),
            filename=fi.filename,
            actual_size=actual,
            backing_file=self.backing_file,
            backing_format=self.backing_format,
            cluster_size=self.cluster_size if self.reports_cluster_size else None,
            format_specific=self.format_specific(),
        )

    def reopen(self, options: Mapping[str, Any], read_only: bool) -> None:
        super().reopen(options, read_only)
