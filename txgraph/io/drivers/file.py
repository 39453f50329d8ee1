"""The ``file`` protocol driver over a shared memory mapping.

Reproduces the data-path behaviour of QEMU 7.2's file-posix driver
(``raw_open_common``, ``raw_co_preadv``/``raw_co_pwritev``,
``raw_co_pwrite_zeroes``, ``raw_co_pdiscard``, ``raw_co_flush_to_disk``,
``raw_co_block_status``, ``raw_getlength``, ``raw_get_allocated_file_size``):

* open errors use QEMU's texts: ``Could not open '<f>': <strerror>`` and
  ``'file' driver requires '<f>' to be a regular file``; ``auto-read-only``
  falls back to a read-only open when a writable one is refused;
* the node length is the file length rounded up to 512 bytes (QEMU counts
  whole sectors); reads past EOF return zeros, writes past EOF grow the file;
* flush is ``fdatasync`` (Linux has one page cache, so stores made through the
  mapping and ``pwrite`` are both covered; ``cache.no-flush`` skips it).

What ``cache.direct`` means here: a memory mapping always goes through the
host page cache, so ``cache.direct=on`` cannot bypass it as O_DIRECT does in
QEMU. txgraph accepts and reports the option and keeps the one guarantee guests
may rely on with O_DIRECT on a volatile-cache disk in QEMU too: data is stable
only after a flush. Nothing is promised about page-cache pollution.

Image locking (QEMU's OFD byte-range locks on offsets 100+/200+) is not
implemented; ``locking`` is accepted and ignored.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as E
import mmap
import os
import stat
from collections.abc import Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo
from txgraph.io.registry import register

__all__ = ["FileNode", "punch_hole"]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


def _falloc(fd: int, mode: int, offset: int, length: int) -> bool:
    """``fallocate(2)``; False when the filesystem does not support ``mode``."""
    if _fallocate(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (E.EOPNOTSUPP, E.ENOSYS, E.EINVAL):
        return False
    raise IOFailure(os.strerror(err), err)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range without changing the file size (QEMU's ``do_fallocate``)."""
    return _falloc(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@register("file")
class FileNode(DriverNode):
    """A regular host file, read through a shared mmap, written in place or appended."""

    driver_name = "file"

    def __init__(self, node_name: str, options: Mapping[str, Any],
                 children: Mapping[str, DriverNode], read_only: bool) -> None:
        super().__init__(node_name, options, children, read_only)
        self.filename = str(options.get("filename", ""))
        if not self.filename:
            raise OpenError("The 'file' block driver requires a file name")
        self.no_flush = bool(options.get("cache.no-flush", False))
        self.direct = bool(options.get("cache.direct", False))
        self.fd = self._open(bool(options.get("auto-read-only", False)))
        st = os.fstat(self.fd)
        try:
            self._check_type(st)
        except OpenError:
            os.close(self.fd)
            raise
        self._len = st.st_size
        self._mm: mmap.mmap | None = None
        self._maplen = 0
        self._remap()

    def _check_type(self, st: os.stat_result) -> None:
        """file-posix's check that the ``file`` driver only opens regular files."""
        if not stat.S_ISREG(st.st_mode):
            raise OpenError(f"'file' driver requires '{self.filename}' to be a regular file")

    def _open(self, auto_read_only: bool) -> int:
        flags = os.O_CLOEXEC | (os.O_RDONLY if self.read_only else os.O_RDWR)
        try:
            return os.open(self.filename, flags)
        except OSError as e:
            if not self.read_only and auto_read_only and e.errno in (E.EACCES, E.EROFS, E.EPERM):
                # auto-read-only: QEMU silently falls back to a read-only open.
                self.read_only = True
                return self._open(False)
            raise OpenError(f"Could not open '{self.filename}': {os.strerror(e.errno or E.EIO)}") from None

    def reopen_prepare(self, options: Mapping[str, Any], read_only: bool) -> None:
        """``raw_reopen_prepare``: a writable reopen must be able to open the file writable.

        Changes nothing (the descriptor is replaced at commit, in :meth:`reopen`).
        """
        if read_only or not self.read_only or options.get("auto-read-only", False):
            return
        try:
            os.close(os.open(self.filename, os.O_CLOEXEC | os.O_RDWR))
        except OSError as e:
            raise OpenError(f"Could not open '{self.filename}': "
                            f"{os.strerror(e.errno or E.EIO)}") from None

    def reopen(self, options: Mapping[str, Any], read_only: bool) -> None:
        """``raw_reopen_prepare``: a changed read-only mode needs a new fd (and mapping).

        The Runtime moves the image locks to the new fd (they belong to the
        open file description); the old fd is closed here.
        """
        if read_only != self.read_only:
            old_ro, old_fd = self.read_only, self.fd
            self.read_only = read_only
            try:
                self.fd = self._open(bool(options.get("auto-read-only", False)))
            except OpenError:
                self.read_only = old_ro
                raise
            self._mm = None
            self._len = os.fstat(self.fd).st_size
            self._remap()
            os.close(old_fd)
        super().reopen(options, read_only)
        self.no_flush = bool(options.get("cache.no-flush", False))
        self.direct = bool(options.get("cache.direct", False))

    def _remap(self) -> None:
        """Map the whole current file; older mappings stay valid for their holders."""
        if self._len == 0:
            self._mm, self._maplen = None, 0
            return
        prot = mmap.PROT_READ if self.read_only else mmap.PROT_READ | mmap.PROT_WRITE
        self._mm = mmap.mmap(self.fd, self._len, mmap.MAP_SHARED, prot)
        self._maplen = self._len

    # -- fast accessors used by format drivers -------------------------------
    def file_length(self) -> int:
        """The exact file length in bytes (not rounded)."""
        return self._len

    def view(self, offset: int, length: int) -> memoryview | None:
        """A zero-copy view of ``[offset, offset+length)`` when it lies inside the file."""
        if offset + length > self._maplen:
            if offset + length > self._len or self._len == self._maplen:
                return None
            self._remap()
        assert self._mm is not None
        return memoryview(self._mm)[offset:offset + length]

    def readinto(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` from ``offset``; bytes past EOF read as zeros (like file-posix)."""
        n = len(out)
        if offset + n <= self._maplen:
            assert self._mm is not None
            out[:] = memoryview(self._mm)[offset:offset + n]
            return
        inside = max(0, min(n, self._len - offset))
        if inside:
            if offset + inside > self._maplen:
                self._remap()
            assert self._mm is not None
            out[:inside] = memoryview(self._mm)[offset:offset + inside]
        if inside < n:
            out[inside:] = bytes(n - inside)

    # -- DriverNode ----------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        if offset + length <= self._maplen:
            assert self._mm is not None
            return self._mm[offset:offset + length]
        buf = bytearray(length)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def _check_writable(self) -> None:
        if self.read_only:
            raise IOFailure("Operation not permitted", E.EPERM)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._check_writable()
        n = len(data)
        if offset + n <= self._maplen:
            assert self._mm is not None
            self._mm[offset:offset + n] = data
            return
        try:
            done = os.pwrite(self.fd, data, offset)
        except OSError as e:
            raise IOFailure(os.strerror(e.errno or E.EIO), e.errno or E.EIO) from None
        if done != n:
            raise IOFailure("No space left on device", E.ENOSPC)
        self._len = max(self._len, offset + n)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        """``raw_co_pwrite_zeroes``: punch a hole when unmapping is allowed, else zero-range."""
        self._check_writable()
        end = offset + length
        if offset >= self._len:
            self.truncate(max(self._len, end))
            return
        inside = min(end, self._len) - offset
        mode = (_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE) if may_unmap else _FALLOC_FL_ZERO_RANGE
        if not _falloc(self.fd, mode, offset, inside):
            self.write(offset, bytes(inside))
        if end > self._len:
            self.truncate(end)

    def discard(self, offset: int, length: int) -> None:
        """``raw_co_pdiscard``: best effort hole punching; unsupported is not an error."""
        self._check_writable()
        if self.options.get("discard", "ignore") not in ("unmap", "on"):
            return  # BDRV_O_UNMAP is off: QEMU drops the request
        inside = min(offset + length, self._len) - offset
        if inside > 0:
            punch_hole(self.fd, offset, inside)

    def truncate(self, length: int) -> None:
        self._check_writable()
        os.ftruncate(self.fd, length)
        self._len = length
        if length < self._maplen:
            self._remap()

    def flush(self) -> None:
        if self.no_flush or self.read_only:
            return
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            raise IOFailure(os.strerror(e.errno or E.EIO), e.errno or E.EIO) from None

    def size(self) -> int:
        return _align_up(self._len, 512)

    def block_status(self, offset: int, length: int) -> BlockStatus:
        """``raw_co_block_status`` via SEEK_DATA/SEEK_HOLE: holes read as zeros."""
        if offset >= self._len:
            return BlockStatus(offset, length, allocated=True, zero=True)
        try:
            data = os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError:
            data = self._len  # ENXIO: only a hole up to EOF
        if data > offset:
            n = min(length, data - offset)
            return BlockStatus(offset, n, allocated=True, zero=True)
        hole = os.lseek(self.fd, offset, os.SEEK_HOLE)
        return BlockStatus(offset, min(length, hole - offset), allocated=True, zero=False,
                           host_offset=offset)

    def actual_size(self) -> int:
        return os.fstat(self.fd).st_blocks * 512

    def info(self) -> ImageInfo:
        return ImageInfo(format="file", virtual_size=self.size(), filename=self.filename,
                         actual_size=self.actual_size())

    def close(self) -> None:
        if self.fd >= 0:
            self._mm = None  # exported views keep their own reference alive
            os.close(self.fd)
            self.fd = -1
