"""Where each QEMU block driver lives: its name mapped to its model spec, open/reopen rules and data plane.

A driver has three parts, one per layer of ../shared/DESIGN.md, each in the
module of the driver's family:

* the model spec (:class:`~txgraph.model.drivers.spec.DriverSpec`: kind,
  children, options, defaults, the options a reopen may change or omit) in
  ``txgraph.model.drivers.<family>``;
* the open and reopen rules (QEMU's ``bdrv_open`` and
  ``bdrv_reopen_prepare`` of the driver) in ``txgraph.ops.drivers.<family>``;
* the data-plane class (a :class:`~txgraph.io.driver.DriverNode`) registered
  under the driver's name in :mod:`txgraph.io.registry` (``txgraph/io/drivers``,
  ``txgraph/io/formats``, ``txgraph/io/qcow2``).

:func:`driver_parts` gathers the three for one name; ``tests/unit/api/test_driver_homes.py``
checks, for every driver the engine accepts, that they exist and agree with
each other and with QSD 7.2's QAPI schema. This module sits above the core
layers (it imports model, ops and io) and nothing in the core imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from txgraph.io.driver import DriverNode
from txgraph.io.registry import driver_class
from txgraph.model import drivers as model_drivers
from txgraph.model.drivers import DRIVER_FAMILY, DRIVER_SPECS, DriverSpec
from txgraph.ops import drivers as ops_drivers
from txgraph.ops.drivers import OpenFn, ReopenFn

__all__ = ["DriverParts", "driver_parts", "driver_names"]


@dataclass(frozen=True)
class DriverParts:
    """The three parts of one driver and the modules that hold them."""

    name: str
    family: str
    spec: DriverSpec
    #: ``txgraph.model.drivers.<family>``
    spec_module: ModuleType
    #: ``txgraph.ops.drivers.<family>``
    rules_module: ModuleType
    #: the driver's ``bdrv_open`` step; None for the job filters, which only jobs create
    opener: OpenFn | None
    #: the driver's ``bdrv_reopen_prepare`` check; None when it accepts no option change
    reopener: ReopenFn | None
    #: the data-plane class the Runtime instantiates for a node of this driver
    data_class: type[DriverNode] | None


def driver_names() -> list[str]:
    """Every driver the engine models (the names ``driver`` may take), sorted."""
    return sorted(DRIVER_SPECS)


def driver_parts(name: str) -> DriverParts | None:
    """The spec, rules and data-plane class of driver ``name`` (None if txgraph has no such driver)."""
    spec = DRIVER_SPECS.get(name)
    if spec is None:
        return None
    family = DRIVER_FAMILY[name]
    return DriverParts(
        name=name,
        family=family,
        spec=spec,
        spec_module=model_drivers.FAMILIES[family],
        rules_module=ops_drivers.FAMILIES[family],
        opener=ops_drivers.OPENERS.get(name),
        reopener=ops_drivers.REOPENERS.get(name),
        data_class=driver_class(name),
    )
