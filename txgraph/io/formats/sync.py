"""Metadata writes that QEMU's format drivers make durable inside a guest request.

QEMU's image formats (qcow, qed, vpc, vhdx, vmdk, parallels) write some of
their metadata with ``bdrv_co_pwrite_sync`` or follow a write with an explicit
``bdrv_co_flush(bs->file->bs)``: the write, then a flush of the *child node*
(not of the format node). The flush passes the child's generic layer
(txgraph/io/layer.py), so a blkdebug child sees it as QEMU's does: its own
flush rules are checked when it was written since its last flush, and the
failure fails the guest's request with the flush's errno. The write stays in
the file when the flush fails, as in QEMU.
"""

from __future__ import annotations

import errno as E
import os
from typing import TYPE_CHECKING

from txgraph.errors import IOFailure
from txgraph.io.driver import FilterNode

if TYPE_CHECKING:
    from txgraph.io.driver import DriverNode

__all__ = ["pwrite_sync", "truncate_child"]


def pwrite_sync(child: DriverNode, offset: int, data: bytes) -> None:
    """``bdrv_co_pwrite_sync``: write ``data`` at ``offset`` of ``child``, then flush
    ``child`` (``bdrv_co_flush(child->bs)``); either failure is the caller's error."""
    child.write(offset, data)
    child.flush()


def truncate_child(child: DriverNode, length: int) -> None:
    """``bdrv_co_truncate`` of a format's child (``PREALLOC_MODE_OFF``): a filter passes
    it to its filtered child; ENOTSUP where no driver on the way can resize, as for a
    driver without ``bdrv_co_truncate``."""
    node = child
    while getattr(node, "truncate", None) is None and isinstance(node, FilterNode):
        node = node.filtered
    truncate = getattr(node, "truncate", None)
    if truncate is None:
        raise IOFailure(os.strerror(E.ENOTSUP), E.ENOTSUP)
    truncate(length)
