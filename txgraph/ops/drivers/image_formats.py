"""Open steps of the image format drivers beyond raw and qcow2 (vdi, vpc, qcow, qed, ...).

Each reproduces the graph side of the driver's ``bdrv_open``: the ``file``
child (``bdrv_open_file_child``, role IMAGE), the driver's own options, and
for vmdk the extents named by the descriptor (``vmdk_parse_extents``: one
child ``extents.N`` per extent line, DATA for flat extents and DATA|METADATA
for sparse ones, after which the descriptor file keeps only the METADATA
role). The header itself is validated by the data-plane driver when the node
is prepared, so its errors come from the real file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from txgraph.errors import OpenError
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode, OpenFlag
from txgraph.model.perm_bits import Role
from txgraph.ops.drivers.common import OpenFn, ReopenFn, consume, runtime_open
from txgraph.ops.drivers.crypto import qcow2_crypto_options
from txgraph.ops.inherit import OptionSet
from txgraph.ops.perm_apply import refresh_perms

if TYPE_CHECKING:
    from txgraph.ops.open import Opener

__all__ = ["OPENERS", "REOPENERS", "IMAGE_FORMAT_OPENERS"]


def _open_image_format(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """vdi, vpc, qcow, qed, parallels: ``file`` first, then the header (data plane)."""
    child = opener.open_child(None, work, "file", node, Role.IMAGE, False)
    assert child is not None
    opts = consume(work, spec)
    # qcow's legacy AES takes its key from encrypt.key-secret (looked up by the driver)
    extra = qcow2_crypto_options(opener, opts) if spec.name == "qcow" else None
    runtime_open(opener, node, {"file": child}, extra)


def _open_read_only_format(
    opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet
) -> None:
    """bochs, cloop: ``bdrv_apply_auto_read_only`` first, then ``file`` and the header.

    A read-write request fails ("Image is read-only") unless auto-read-only lets the node
    fall back to read-only; the pre-opened ``file`` keeps its own mode, as in QEMU.
    """
    if node.flags & OpenFlag.RDWR:
        if not node.flags & OpenFlag.AUTO_RDONLY:
            raise OpenError("Image is read-only")
        node.flags &= ~OpenFlag.RDWR
    _open_image_format(opener, node, spec, work)


def _open_vmdk(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``vmdk_open``: the descriptor's extents become children ``extents.N``."""
    from txgraph.io.formats.vmdk_desc import read_extent_list

    child = opener.open_child(None, work, "file", node, Role.IMAGE, False)
    assert child is not None
    desc = read_extent_list(
        opener.rt.read_head, opener.rt.size, child, opener.graph.nodes[child].filename
    )
    children = {"file": child}
    for index, extent in enumerate(desc.extents):
        key = f"extents.{index}"
        role = Role.DATA if extent.flat else Role.DATA | Role.METADATA
        ext = opener.open_child(extent.path, work, key, node, role, False)
        assert ext is not None
        children[key] = ext
    if desc.is_descriptor:
        edge = opener.graph.child_edge(node.name, "file")
        assert edge is not None
        opener.tx.set(edge[1], "role", Role.METADATA | Role.PRIMARY)
        refresh_perms(opener.session, opener.tx, [node.name])
    runtime_open(opener, node, children)


IMAGE_FORMAT_OPENERS: dict[str, OpenFn] = {
    "vdi": _open_image_format,
    "vpc": _open_image_format,
    "vhdx": _open_image_format,
    "qcow": _open_image_format,
    "qed": _open_image_format,
    "parallels": _open_image_format,
    "vmdk": _open_vmdk,
    "bochs": _open_read_only_format,
    "cloop": _open_read_only_format,
    "dmg": _open_read_only_format,
}

#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = IMAGE_FORMAT_OPENERS
#: none of these formats changes an option on reopen (QEMU 7.2's handlers accept none)
REOPENERS: dict[str, ReopenFn] = {}
