"""The ``throttle`` filter: I/O through ``file`` limited by a shared throttle group.

Reproduces QEMU 7.2's block/throttle.c: the node option ``throttle-group``
names a ``throttle-group`` object (``throttle_configure_tgm``; unknown names
fail with ``Throttle group '<x>' does not exist``); reads and writes are
intercepted by the group (``throttle_group_co_io_limits_intercept``) with
their byte count, write-zeroes and discard count as writes, flush and block
status pass straight through; while the node is drained, throttling is
disabled so queued requests finish at once (``throttle_co_drain_begin``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from txgraph.errors import OpenError
from txgraph.io.driver import DriverNode, FilterNode
from txgraph.io.registry import register
from txgraph.io.settings import opt_str
from txgraph.io.throttle_groups import ThrottleGroup, current_groups

__all__ = ["ThrottleNode"]


@register("throttle")
class ThrottleNode(FilterNode):
    """A filter whose requests wait in a throttle group before reaching ``file``."""

    driver_name = "throttle"

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
        name = opt_str(options, "throttle-group", "") or ""
        self._groups = current_groups()
        group = self._groups.get(name)
        if group is None:
            raise OpenError(f"Throttle group '{name}' does not exist")
        self.group: ThrottleGroup = group
        group.members.add(node_name)
        self._disabled = 0
        self._lock = threading.Lock()
        #: the length settled at open: throttle has no variable length (QEMU caches
        #: total_sectors), so a file child replaced later (reopen, blockdev-snapshot's
        #: bdrv_append) does not change what the node reports; only a write past the
        #: end grows it (bdrv_co_write_req_finish)
        self._length = self.children["file"].size()

    # -- drain: QEMU's io_limits_disabled counter ------------------------------------------
    def drain_begin(self) -> None:
        with self._lock:
            self._disabled += 1
        self.group.kick()

    def drain_end(self) -> None:
        with self._lock:
            self._disabled = max(0, self._disabled - 1)

    def _released(self) -> bool:
        return self._disabled > 0

    def size(self) -> int:
        return self._length

    def _wrote(self, offset: int, length: int) -> None:
        """``bdrv_co_write_req_finish``: total_sectors grows to cover the write."""
        end = -(-(offset + length) // 512) * 512
        with self._lock:  # concurrent writers (export threads): the largest end wins
            if end > self._length:
                self._length = end

    # -- data path -------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        self.group.intercept(False, length, self._released)
        return self.children["file"].read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self.group.intercept(True, len(data), self._released)
        self.children["file"].write(offset, data)
        self._wrote(offset, len(data))

    def write_compressed(self, offset: int, data: bytes) -> None:
        """``throttle_co_pwritev_compressed``: limited as a write, then forwarded."""
        self.group.intercept(True, len(data), self._released)
        self.children["file"].write_compressed(offset, data)
        self._wrote(offset, len(data))

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self.group.intercept(True, length, self._released)
        self.children["file"].write_zeroes(offset, length, may_unmap=may_unmap)
        self._wrote(offset, length)

    def discard(self, offset: int, length: int) -> None:
        self.group.intercept(True, length, self._released)
        self.children["file"].discard(offset, length)

    def reopen(self, options: Mapping[str, Any], read_only: bool) -> None:
        """``throttle_reopen_prepare`` + ``_commit``: validate the group, then move to it.

        Requests keep being limited by the (new) group after the reopen; the
        limits live in the group object, so a reopen that names the same group
        changes nothing about them.
        """
        name = opt_str(options, "throttle-group", self.group.id) or ""
        group = self._groups.get(name)
        if group is None:
            raise OpenError(f"Throttle group '{name}' does not exist")
        super().reopen(options, read_only)
        self._move_to(group)

    def reopen_throttle_group(self, name: str) -> None:
        """``throttle_reopen_commit``: move to another existing group."""
        group = self._groups.get(name)
        if group is None:
            raise OpenError(f"Throttle group '{name}' does not exist")
        self._move_to(group)

    def _move_to(self, group: ThrottleGroup) -> None:
        if group is self.group:
            return
        self.group.members.discard(self.node_name)
        self.group = group
        group.members.add(self.node_name)

    def close(self) -> None:
        self.group.members.discard(self.node_name)
