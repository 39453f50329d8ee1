"""Growing a node: the block layer's ``bdrv_co_truncate`` and ``blk_truncate``.

What QEMU 7.2 does when a block job grows its base (commit_run, mirror_run for
an active commit: ``blk_truncate(base, len, exact=false, PREALLOC_MODE_OFF, 0)``):

* ``blk_truncate``: an empty BlockBackend is ENOMEDIUM;
* ``bdrv_co_truncate``: a negative size is EINVAL, a read-only node EACCES
  (``Image is read-only``); when the node grows and its COW child (backing)
  is longer than the old size, ``BDRV_REQ_ZERO_WRITE`` is added so the
  backing's data does not show through the new area;
* then the driver: qcow2 (:mod:`txgraph.io.qcow2.truncate`), raw
  (``raw_co_truncate``: a fixed ``size`` is ENOTSUP ``Cannot resize
  fixed-size raw disks``, else the file grows by the same window), file
  (``raw_co_truncate`` of file-posix: ``ftruncate``), filters forward to their
  filtered child; any other driver is ENOTSUP (``Image format driver does not
  support resize``).

The permission to resize is the caller's business (the job's BlockBackend
took ``resize`` when the base was smaller, as QEMU's commit_start does).

Lock discipline: :func:`blk_truncate` runs the whole change drained
(``Runtime.drained``: no request is in flight while a node's size and map
change; QEMU serialises the growing request against every other one); each
driver then takes its own node lock.
"""

from __future__ import annotations

import errno as E

from txgraph.errors import IOFailure
from txgraph.io.driver import DriverNode, FilterNode
from txgraph.io.runtime import Runtime

__all__ = ["blk_truncate", "truncate"]


def blk_truncate(rt: Runtime, blk: str, length: int) -> None:
    """``blk_truncate(blk, length, false, PREALLOC_MODE_OFF, 0)``, drained."""
    with rt.drained():
        truncate(rt.backend_root(blk), length)


def truncate(node: DriverNode, length: int, zero_write: bool = False) -> None:
    """``bdrv_co_truncate`` (growth; ``exact`` false, preallocation off)."""
    from txgraph.io.drivers.file import FileNode
    from txgraph.io.drivers.raw import RawNode
    from txgraph.io.qcow2.driver import Qcow2Node

    if length < 0:
        raise IOFailure("Image size cannot be negative", E.EINVAL)
    if node.read_only:
        raise IOFailure("Image is read-only", E.EACCES)
    old = node.size()
    backing = node.children.get("backing")
    if length > old and backing is not None and backing.size() > old:
        zero_write = True
    if isinstance(node, Qcow2Node):
        from txgraph.io.qcow2.truncate import qcow2_grow

        qcow2_grow(node, length, zero_write, truncate)
    elif isinstance(node, RawNode):
        if node.has_size:
            raise IOFailure("Cannot resize fixed-size raw disks", E.ENOTSUP)
        truncate(node.file, length + node.offset, zero_write)
    elif isinstance(node, FileNode):
        if length != node.size():
            node.truncate(length)  # a regular file grows with zeros (ZERO_WRITE is free)
    elif isinstance(node, FilterNode):
        truncate(node.filtered, length, zero_write)
    else:
        raise IOFailure("Image format driver does not support resize", E.ENOTSUP)
