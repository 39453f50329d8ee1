"""Filters that pass data through unchanged, blkverify, and host_device.

- ``preallocate`` (block/preallocate.c) presents exactly its ``file`` child's
  data. QEMU's preallocate grows the file ahead of writes, a space policy, not a
  data change; txgraph passes writes through: the guest sees identical data, the
  file does not get preallocated. (``compress`` has a module of its own.)
- ``blkverify`` (block/blkverify.c) reads from both ``raw`` and ``test`` and
  compares; QEMU aborts the process on a mismatch, txgraph fails the request
  with EIO instead so the server keeps serving.
- ``host_device`` is the file protocol restricted to block and character devices.
"""

from __future__ import annotations

import errno as E
import os
import stat

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import DriverNode, FilterNode, ImageInfo
from txgraph.io.drivers.file import FileNode
from txgraph.io.registry import register

__all__ = ["PassthroughFilter", "BlkverifyNode", "HostDeviceNode"]


@register("preallocate")
class PassthroughFilter(FilterNode):
    """A filter whose requests all go unchanged to ``file``."""

    driver_name = "preallocate"


@register("blkverify")
class BlkverifyNode(DriverNode):
    """Reads must agree between ``raw`` (the reference) and ``test``; writes go to both."""

    driver_name = "blkverify"

    def read(self, offset: int, length: int) -> bytes:
        ref = self.children["raw"].read(offset, length)
        if self.children["test"].read(offset, length) != ref:
            raise IOFailure("Input/output error", E.EIO)
        return ref

    def write(self, offset: int, data: bytes) -> None:
        self.children["test"].write(offset, data)
        self.children["raw"].write(offset, data)

    def size(self) -> int:
        return self.children["test"].size()

    def info(self) -> ImageInfo:
        return ImageInfo(format="blkverify", virtual_size=self.size())


@register("host_device")
class HostDeviceNode(FileNode):
    """``host_device``: like ``file``, but the path must be a block or character device."""

    driver_name = "host_device"

    def host_extent(self, offset: int, length: int) -> tuple[int, int] | None:
        """None: a character device may not splice; its reads keep ``readinto``."""
        return None

    def _check_type(self, st: os.stat_result) -> None:
        if not (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise OpenError(
                f"'host_device' driver requires '{self.filename}' to be either "
                "a character or block device"
            )
