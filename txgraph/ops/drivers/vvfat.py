"""Open rules of ``vvfat`` (block/vvfat.c ``vvfat_open``), in QEMU 7.2's order.

The options are checked first (``dir``, then ``label``'s length, then
``fat-type`` against the geometry), then the read-only rule: without ``rw``
the node is read-only (``bdrv_apply_auto_read_only``: "Image is read-only"
unless ``auto-read-only`` allows the fallback); with ``rw`` on a read-only node
QEMU refuses, and on a writable one ``enable_write_target`` creates a temporary
qcow image (:mod:`txgraph.io.drivers.vvfat_target`) and opens it as the
``write-target`` child with ``vvfat_qcow_options`` (read-only and auto-read-only
off, cache.no-flush on; the parent's other options are not inherited), then
unlinks the file. Only then is the directory scanned (the data-plane node,
whose errors are QEMU's "Could not read directory ..." and "Directory does
not fit ..."). No ``bdrv_reopen_prepare``: every reopen is refused generically.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from txgraph.errors import OpenError
from txgraph.io.drivers.vvfat import open_options
from txgraph.io.drivers.vvfat_image import SECTOR, geometry
from txgraph.io.drivers.vvfat_target import create_write_target
from txgraph.io.settings import opt_bool
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode, OpenFlag
from txgraph.model.options import Provenance, Source
from txgraph.model.perm_bits import Role
from txgraph.ops.drivers.common import OpenFn, ReopenFn, consume, runtime_open
from txgraph.ops.inherit import OptionSet

if TYPE_CHECKING:
    from txgraph.ops.open import Opener

__all__ = ["OPENERS", "REOPENERS", "WRITE_TARGET_ROLE"]

#: the write target's edge: ``BDRV_CHILD_DATA | BDRV_CHILD_METADATA``
WRITE_TARGET_ROLE = Role.DATA | Role.METADATA


def _enable_write_target(opener: Opener, node: BlockNode, size: int) -> str:
    """``enable_write_target``: create, open and attach the qcow child; unlink its file."""
    path = create_write_target(size)
    try:
        # child_vvfat_qcow's inherit_options (vvfat_qcow_options) sets three defaults and
        # leaves the open flags at 0: nothing else comes from the parent
        opts = OptionSet()
        prov = Provenance(Source.ROLE, node.name, "write-target", "vvfat_qcow_options")
        opts.put("driver", "qcow", Provenance(Source.ROLE, node.name, "write-target"))
        for key, value in (("read-only", "off"), ("auto-read-only", "off")):
            opts.put(key, value, prov)
        opts.put("cache.no-flush", "on", prov)
        child = opener.open_inherit(
            path, None, opts, OpenFlag.NONE, None, WRITE_TARGET_ROLE, "write-target", False
        )
        opener.graph.nodes[child].inherits_from = node.name
        opener.attach_child(node, child, "write-target", WRITE_TARGET_ROLE)
    finally:
        os.unlink(path)  # the open file stays: the image lives as long as the node
    return child


def _open_vvfat(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``vvfat_open`` up to ``init_directories`` (which the data-plane node runs)."""
    opts = consume(work, spec)
    _dirname, fat_type, floppy, _label = open_options(opts)
    shape = geometry(fat_type, floppy)
    children: dict[str, str] = {}
    if opt_bool(opts, "rw", False):
        if not node.flags & OpenFlag.RDWR:
            raise OpenError("Unable to set VVFAT to 'rw' when drive is read-only")
        target = _enable_write_target(opener, node, shape.total_sectors * SECTOR)
        children["write-target"] = target
    elif node.flags & OpenFlag.RDWR:
        if not node.flags & OpenFlag.AUTO_RDONLY:
            raise OpenError("Image is read-only")
        node.flags &= ~OpenFlag.RDWR
    runtime_open(opener, node, children)


#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = {"vvfat": _open_vvfat}
#: vvfat has no ``bdrv_reopen_prepare``
REOPENERS: dict[str, ReopenFn] = {}
