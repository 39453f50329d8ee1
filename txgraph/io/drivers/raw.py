"""The ``raw`` format driver: a window ``[offset, offset+size)`` of its ``file`` child.

Reproduces QEMU 7.2's block/raw-format.c: option checks of
``raw_apply_options`` (with QEMU's texts), ``raw_adjust_offset`` (an explicit
``size`` confines requests: reads outside fail with EINVAL, writes with
ENOSPC), and the probed-raw safety rule of ``raw_co_pwritev`` (CVE-2008-2004):
when the format was probed (``probed``, set by the Runtime from the typed
``OpenNode.probed``), a write touching the
first sector is widened to the whole sector (read-modify-write, as QEMU's
512-byte request alignment does) and refused with EPERM if the resulting
sector would probe as another format.
"""

from __future__ import annotations

import errno as E
from collections.abc import Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo
from txgraph.io.probe import PROBE_SIZE, probe_format
from txgraph.io.registry import register
from txgraph.io.settings import opt_int

__all__ = ["RawNode"]


@register("raw")
class RawNode(DriverNode):
    """Raw image over the ``file`` child, optionally a sub-window of it."""

    driver_name = "raw"

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
        self.probed = False  # the Runtime sets it from OpenNode.probed
        self.offset, self.has_size, self._size = self._window(options)

    def _window(self, options: Mapping[str, Any]) -> tuple[int, bool, int]:
        """``raw_apply_options``: the (offset, has_size, size) window, validated."""
        offset = opt_int(options, "offset", 0)
        has_size = "size" in options
        real = self.children["file"].size()
        if offset > real:
            raise OpenError(
                f"Offset ({offset}) cannot be greater than size of the containing file ({real})"
            )
        if has_size:
            size = opt_int(options, "size", 0)
            if real - offset < size:
                raise OpenError(
                    f"The sum of offset ({offset}) and size ({size}) has to "
                    f"be smaller or equal to the  actual size of the containing file "
                    f"({real})"
                )
            if size % 512:
                raise OpenError("Specified size is not multiple of 512")
        else:
            size = real - offset
        return offset, has_size, size

    def reopen_prepare(self, options: Mapping[str, Any], read_only: bool) -> None:
        """``raw_reopen_prepare``: validate the new window, change nothing."""
        self._window(options)

    def reopen(self, options: Mapping[str, Any], read_only: bool) -> None:
        """``raw_reopen_prepare``/``commit``: offset and size may change."""
        window = self._window(options)
        super().reopen(options, read_only)
        self.offset, self.has_size, self._size = window

    @property
    def file(self) -> DriverNode:
        return self.children["file"]

    def _adjust(self, offset: int, length: int, is_write: bool) -> int:
        """``raw_adjust_offset``: never leak outside an explicit window."""
        if self.has_size and (offset > self._size or length > self._size - offset):
            err = E.ENOSPC if is_write else E.EINVAL
            raise IOFailure("No space left on device" if is_write else "Invalid argument", err)
        return offset + self.offset

    def read(self, offset: int, length: int) -> bytes:
        host = self._adjust(offset, length, False)
        self.file.debug_event("read_aio")  # raw_co_preadv
        return self.file.read(host, length)

    def readinto(self, offset: int, out: memoryview) -> None:
        """``raw_co_preadv``. A ``file`` child is read with ``preadv`` alone, never its
        mapping: a raw image's block status is its file's ``SEEK_DATA``, which on ext4
        depends on the pages earlier reads cached (see ``FileNode.preadinto``)."""
        f = self.file
        host = self._adjust(offset, len(out), False)
        f.debug_event("read_aio")
        ri = getattr(f, "preadinto", None) or getattr(f, "readinto", None)
        if ri is not None:
            ri(host, out)
        else:
            out[:] = f.read(host, len(out))

    def host_extent(self, offset: int, length: int) -> tuple[int, int] | None:
        """A raw read is its file child's read shifted by ``offset`` (``raw_co_preadv``);
        the window check raises what :meth:`read` raises. The ``read_aio`` event it
        announces is only seen by blkdebug, which answers None below."""
        return self.file.host_extent(self._adjust(offset, length, False), length)

    def _check_probed_write(self, offset: int, data: bytes) -> tuple[int, bytes]:
        """Widen a write touching sector 0 to the whole sector and re-probe it."""
        if not self.probed or offset >= PROBE_SIZE:
            return offset, data
        end = offset + len(data)
        if offset > 0 or end < PROBE_SIZE:
            # the widening reads are the block layer's own: no read_aio event
            head = self.file.read(self._adjust(0, offset, False), offset) if offset else b""
            tail_len = max(0, PROBE_SIZE - end)
            tail = self.file.read(self._adjust(end, tail_len, False), tail_len) if tail_len else b""
            data, offset = head + bytes(data) + tail, 0
        if probe_format(bytes(data[:PROBE_SIZE])) != "raw":
            raise IOFailure("Operation not permitted", E.EPERM)
        return offset, bytes(data)

    def write(self, offset: int, data: bytes) -> None:
        offset, data = self._check_probed_write(offset, data)
        host = self._adjust(offset, len(data), True)
        self.file.debug_event("write_aio")  # raw_co_pwritev
        self.file.write(host, data)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        # Zeros always probe as raw, so the probed rule never refuses them.
        self.file.write_zeroes(self._adjust(offset, length, True), length, may_unmap=may_unmap)

    def discard(self, offset: int, length: int) -> None:
        self.file.discard(self._adjust(offset, length, True), length)

    def size(self) -> int:
        """``raw_getlength``: the window, or whatever the file child holds now."""
        size = self._size if self.has_size else max(0, self.file.size() - self.offset)
        return (size + 511) // 512 * 512

    def block_status(self, offset: int, length: int) -> BlockStatus:
        st = self.file.block_status(offset + self.offset, length)
        host = None if st.host_offset is None else st.host_offset
        return BlockStatus(offset, st.length, allocated=True, zero=st.zero, host_offset=host)

    def info(self) -> ImageInfo:
        fi = self.file.info()
        return ImageInfo(
            format="raw", virtual_size=self.size(), filename=fi.filename, actual_size=fi.actual_size
        )
