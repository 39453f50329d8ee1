"""The block layer's compressed write: ``bdrv_co_pwrite(child, ..., BDRV_REQ_WRITE_COMPRESSED)``.

What QEMU 7.2's ``bdrv_aligned_pwritev`` does with the flag, for a backup's
block-copy (``block_copy_do_copy`` with ``compress``): a read-only node
refuses (EPERM); ``detect-zeroes`` turns an all-zero buffer into a zero write
first (the flag is then dropped); otherwise the driver's compressed write
(``bdrv_driver_pwritev_compressed``). Filters pass the flag down to their
filtered child (throttle, copy-on-read, ... forward compressed writes).

txgraph writes compressed clusters for qcow2 (:mod:`txgraph.io.qcow2.compressed_write`)
and qcow (:meth:`txgraph.io.formats.qcow.QcowNode.write_compressed`); vmdk
(streamOptimized), the other format QEMU can compress into, gets a plain write
here: the same guest data, not the same allocation.

No state and no lock of its own: the node's driver locks what it changes.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from txgraph.errors import IOFailure
from txgraph.io.driver import DriverNode, FilterNode
from txgraph.io.layer import is_zero
from txgraph.io.settings import DetectZeroes

__all__ = ["pwrite_compressed"]


def pwrite_compressed(target: DriverNode, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` of ``target`` as compressed clusters where it can."""
    from txgraph.io.formats.qcow import QcowNode
    from txgraph.io.qcow2.compressed_write import write_compressed
    from txgraph.io.qcow2.driver import Qcow2Node

    bottom = target
    while isinstance(bottom, FilterNode):
        bottom = bottom.filtered
    compress: Callable[[int, bytes], None]
    if isinstance(bottom, Qcow2Node):
        qcow2 = bottom

        def compress(at: int, buf: bytes) -> None:
            write_compressed(qcow2, at, buf)

    elif isinstance(bottom, QcowNode):
        compress = bottom.write_compressed
    else:
        target.write(offset, data)  # no compressed writes modelled there: plain data
        return
    node = target
    while True:
        if node.settings.read_only:
            raise IOFailure("Operation not permitted", errno.EPERM)
        if node.settings.detect_zeroes is not DetectZeroes.OFF and is_zero(data):
            node.write(offset, data)  # the generic layer makes it a zero write
            return
        if node is bottom:
            compress(offset, data)
            return
        assert isinstance(node, FilterNode)
        node = node.filtered
