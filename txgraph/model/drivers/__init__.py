"""Driver specifications, one module per driver family; this package is their registry.

A driver's model side is its :class:`~txgraph.model.drivers.spec.DriverSpec`
in the module of its family (:data:`FAMILIES`); the family's open and reopen
rules are in the module of the same name under :mod:`txgraph.ops.drivers`,
its data-plane classes are named in :mod:`txgraph.io.registry`.
:mod:`txgraph.drivers` maps a driver name to all three.

The table is built once at import and read-only afterwards: no lock needed
(``DRIVER_SPECS`` is owned by this module; nothing else writes it).
"""

from __future__ import annotations

from types import ModuleType

from txgraph.model.drivers import (
    crypto,
    filters,
    image_formats,
    protocols,
    qcow2,
    quorum,
    raw,
    vvfat,
)
from txgraph.model.drivers.spec import (
    COMMON_OPTIONS,
    RESETTABLE_COMMON_OPTIONS,
    ChildSpec,
    DriverSpec,
)

__all__ = [
    "DriverSpec",
    "ChildSpec",
    "DRIVER_SPECS",
    "DRIVER_FAMILY",
    "FAMILIES",
    "driver_spec",
    "COMMON_OPTIONS",
    "RESETTABLE_COMMON_OPTIONS",
]

#: family name -> the module holding its specs (ops.drivers has a module of each name)
FAMILIES: dict[str, ModuleType] = {
    "protocols": protocols,
    "raw": raw,
    "qcow2": qcow2,
    "crypto": crypto,
    "image_formats": image_formats,
    "filters": filters,
    "quorum": quorum,
    "vvfat": vvfat,
}


def _build() -> tuple[dict[str, DriverSpec], dict[str, str]]:
    specs: dict[str, DriverSpec] = {}
    family_of: dict[str, str] = {}
    for family, module in FAMILIES.items():
        for spec in module.SPECS:
            assert spec.name not in specs, f"driver {spec.name!r} specified twice"
            specs[spec.name] = spec
            family_of[spec.name] = family
    return specs, family_of


#: every driver txgraph models: name -> spec (blockdev-add accepts exactly these names)
DRIVER_SPECS: dict[str, DriverSpec]
#: driver name -> its family (the module name on the model and the ops side)
DRIVER_FAMILY: dict[str, str]
DRIVER_SPECS, DRIVER_FAMILY = _build()


def driver_spec(name: str) -> DriverSpec | None:
    return DRIVER_SPECS.get(name)
