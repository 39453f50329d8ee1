"""Open rules of ``vvfat`` (block/vvfat.c ``vvfat_open``), in QEMU 7.2's order.

The options are checked first (``dir``, then ``label``'s length, then
``fat-type`` against the geometry), then the read-only rule: without ``rw``
the node is read-only (``bdrv_apply_auto_read_only``: "Image is read-only"
unless ``auto-read-only`` allows the fallback); with ``rw`` on a read-only node
QEMU refuses, and on a writable one it creates a temporary qcow image as the
``write-target`` child and writes guest changes back into the host
directory - txgraph does not implement that write-back and refuses it with a
message of its own (QEMU's graph and write-back are pinned against the real
daemon in tests/interop/test_vvfat_rw_qsd.py). Only then is the directory scanned (the data-plane node,
whose errors are QEMU's "Could not read directory ..." and "Directory does
not fit ..."). No ``bdrv_reopen_prepare``: every reopen is refused generically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from txgraph.errors import OpenError
from txgraph.io.drivers.vvfat import open_options
from txgraph.io.drivers.vvfat_image import geometry
from txgraph.io.settings import opt_bool
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode, OpenFlag
from txgraph.ops.drivers.common import OpenFn, ReopenFn, consume, runtime_open

if TYPE_CHECKING:
    from txgraph.ops.inherit import OptionSet
    from txgraph.ops.open import Opener

__all__ = ["OPENERS", "REOPENERS", "RW_UNSUPPORTED"]

#: txgraph's refusal of ``rw=on`` on a writable node (QEMU opens a write target there)
RW_UNSUPPORTED = (
    "vvfat 'rw' (writing guest changes back to the host directory) is not supported "
    "by txgraph; open it read-only"
)


def _open_vvfat(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``vvfat_open`` up to ``init_directories`` (which the data-plane node runs)."""
    opts = consume(work, spec)
    _dirname, fat_type, floppy, _label = open_options(opts)
    geometry(fat_type, floppy)
    if opt_bool(opts, "rw", False):
        if not node.flags & OpenFlag.RDWR:
            raise OpenError("Unable to set VVFAT to 'rw' when drive is read-only")
        raise OpenError(RW_UNSUPPORTED)
    if node.flags & OpenFlag.RDWR:
        if not node.flags & OpenFlag.AUTO_RDONLY:
            raise OpenError("Image is read-only")
        node.flags &= ~OpenFlag.RDWR
    runtime_open(opener, node, {})


#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = {"vvfat": _open_vvfat}
#: vvfat has no ``bdrv_reopen_prepare``
REOPENERS: dict[str, ReopenFn] = {}
