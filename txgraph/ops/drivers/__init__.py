"""Driver open and reopen rules, one module per driver family; this package is their registry.

Each family module (named as its twin under :mod:`txgraph.model.drivers`)
holds what the driver's ``bdrv_open`` does to the graph (``OPENERS``: consume
the driver's options, open and attach its children in QEMU's order, prepare
its data-plane object) and what its ``bdrv_reopen_prepare`` checks
(``REOPENERS``). The order matters: it decides which error wins and which
auto-name counter value each node receives.

Which options a reopen may change is not written here but read from the
spec (``DriverSpec.changeable_opts``): :func:`reopen_prepare` takes exactly
those out of the request before the driver's check sees them, and whatever
is left must be unchanged (``bdrv_reopen_prepare``'s "Cannot change the
option").

The tables are built once at import and read-only afterwards (owned by this
module; no lock needed).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from txgraph.errors import OpenError
from txgraph.model.drivers import DriverSpec, driver_spec
from txgraph.model.node import BlockNode
from txgraph.ops.drivers import (
    crypto,
    filters,
    image_formats,
    protocols,
    qcow2,
    quorum,
    raw,
    vvfat,
)
from txgraph.ops.drivers.common import OpenFn, ReopenFn, image_dict

if TYPE_CHECKING:
    from txgraph.ops.inherit import OptionSet
    from txgraph.ops.open import Opener
    from txgraph.ops.reopen_queue import ReopenEntry
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = [
    "FAMILIES",
    "OPENERS",
    "REOPENERS",
    "OpenFn",
    "ReopenFn",
    "open_driver",
    "reopen_prepare",
    "image_dict",
]

#: family name -> its module (the same names as :data:`txgraph.model.drivers.FAMILIES`)
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


def _merge(table: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for module in FAMILIES.values():
        for name, fn in getattr(module, table).items():
            assert name not in merged, f"driver {name!r} has two {table} entries"
            merged[name] = fn
    return merged


#: driver name -> its ``bdrv_open`` step
OPENERS: dict[str, OpenFn] = _merge("OPENERS")
#: driver name -> its ``bdrv_reopen_prepare`` check (drivers without one accept no change)
REOPENERS: dict[str, ReopenFn] = _merge("REOPENERS")


def open_driver(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """The driver's ``bdrv_open`` (``bdrv_open_driver`` → ``drv->bdrv_open``)."""
    opener_fn = OPENERS.get(spec.name)
    if opener_fn is None:
        # A job filter: QEMU opens it with bdrv_new_open_driver only and never registers it
        # as a driver, so a json: filename naming it finds no such driver (bdrv_find_format).
        raise OpenError(f"Unknown driver '{spec.name}'")
    opener_fn(opener, node, spec, work)


def reopen_prepare(
    tx: Transaction, session: Session, node: BlockNode, entry: ReopenEntry, work: dict[str, Any]
) -> None:
    """The driver's ``bdrv_reopen_prepare``: take what it may change, let it validate that."""
    spec = driver_spec(node.driver)
    assert spec is not None
    changed = {key: work.pop(key) for key in list(work) if key in spec.changeable_opts}
    check = REOPENERS.get(spec.name)
    if check is not None:
        check(tx, session, node, entry, changed, work)
