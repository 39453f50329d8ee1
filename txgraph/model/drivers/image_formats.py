"""Driver specifications of the image formats beyond raw and qcow2 (vdi, vpc, qed, ...).

Merged into :data:`txgraph.model.drivers.DRIVER_SPECS` (as ``SPECS``). The QAPI schema of
QSD 7.2 carries the option types (``BlockdevOptionsGenericFormat`` for vdi,
vpc, vhdx, parallels, bochs, cloop and dmg; ``BlockdevOptionsGenericCOWFormat``
for qed and vmdk; ``BlockdevOptionsQcow`` for qcow); this table carries what
the graph rules need: backing support (``drv->supports_backing``), which
drivers have a ``bdrv_reopen_prepare``, and which answer ``bdrv_get_info``
(that decides whether ``cluster-size`` and ``dirty-flag`` appear in queries)
or ``bdrv_get_specific_info`` (``format-specific``).
"""

from __future__ import annotations

from txgraph.model.drivers.spec import ChildSpec, DriverSpec
from txgraph.model.perm_bits import Role

__all__ = ["SPECS", "IMAGE_FORMAT_SPECS", "HAS_GET_INFO", "HAS_SPECIFIC_INFO", "READ_ONLY_FORMATS"]

_FILE = (ChildSpec("file", Role.IMAGE),)

IMAGE_FORMAT_SPECS: dict[str, DriverSpec] = {
    spec.name: spec
    for spec in (
        DriverSpec("vdi", "format", children=_FILE),
        DriverSpec("vpc", "format", children=_FILE),
        DriverSpec("vhdx", "format", children=_FILE),
        # qcow (v1): its encryption is the legacy aes one.
        DriverSpec(
            "qcow",
            "format",
            supports_backing=True,
            options=frozenset({"encrypt."}),
            strong_opts=frozenset({"encrypt.key-secret"}),  # qcow_strong_runtime_opts
            flat_opts=frozenset({"encrypt."}),
            children=_FILE,
            can_compress=True,
        ),
        DriverSpec("qed", "format", supports_backing=True, children=_FILE),
        # parallels sets supports_backing (its unallocated clusters read through).
        DriverSpec("parallels", "format", supports_backing=True, reopenable=False, children=_FILE),
        # vmdk's extents are children ``extents.N`` opened from the descriptor.
        DriverSpec("vmdk", "format", supports_backing=True, children=_FILE, can_compress=True),
        # read-only drivers: bdrv_apply_auto_read_only in their open, no reopen handler
        DriverSpec("bochs", "format", reopenable=False, children=_FILE),
        DriverSpec("cloop", "format", reopenable=False, children=_FILE),
        DriverSpec("dmg", "format", reopenable=False, children=_FILE),
    )
}

#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = tuple(IMAGE_FORMAT_SPECS.values())

#: drivers whose ``bdrv_get_info`` succeeds (``cluster-size``, ``dirty-flag`` in queries)
HAS_GET_INFO: frozenset[str] = frozenset({"vdi", "vpc", "qcow", "qed", "vmdk", "vhdx"})
#: drivers with ``bdrv_get_specific_info`` (``format-specific`` in queries)
HAS_SPECIFIC_INFO: frozenset[str] = frozenset({"qcow2", "vmdk"})
#: drivers that only open read-only (``bdrv_apply_auto_read_only`` in their open)
READ_ONLY_FORMATS: frozenset[str] = frozenset({"bochs", "cloop", "dmg"})
