"""Open and reopen rules of the protocol drivers: file, host_device, null-co, null-aio, nbd.

No children, options only. ``raw_open_common`` (block/file-posix.c) looks up
the ``pr-manager`` before it opens the file and refuses ``aio=native`` without
``cache.direct``; ``raw_reopen_prepare`` changes only the cache-drop options
(the spec's ``changeable_opts``); nbd refuses to make a read-only export
writable on reopen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgraph.errors import BlockError, OpenError
from txgraph.model.drivers import DriverSpec, driver_spec
from txgraph.model.node import BlockNode, OpenFlag
from txgraph.ops.drivers.common import OpenFn, ReopenFn, consume, qemu_opts_string, runtime_open
from txgraph.ops.pr_manager import pr_manager_lookup

if TYPE_CHECKING:
    # The opener, the session and the transaction call into this package; their
    # types are needed for annotations only.
    from txgraph.ops.inherit import OptionSet
    from txgraph.ops.open import Opener
    from txgraph.ops.reopen_queue import ReopenEntry
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = ["OPENERS", "REOPENERS"]


def _open_protocol(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """file, host_device, null-co, null-aio, nbd: no children, options only."""
    opts = consume(work, spec)
    if spec.name in ("file", "host_device"):
        if "pr-manager" in opts:  # raw_open_common looks it up before opening the file
            pr_manager_lookup(opener.session, opts["pr-manager"])
        aio = opts.get("aio", spec.defaults["aio"])
        if aio == "native" and not node.cache_direct:
            raise OpenError(
                "aio=native was specified, but it requires cache.direct=on, "
                "which was not specified."
            )
    runtime_open(opener, node, {})


def _reopen_file(
    tx: Transaction,
    session: Session,
    node: BlockNode,
    entry: ReopenEntry,
    changed: dict[str, Any],
    work: dict[str, Any],
) -> None:
    """``raw_reopen_prepare``: the cache-drop options change; the driver's other options go
    back through QemuOpts, so they return as strings for the "cannot change" comparison."""
    spec = driver_spec(node.driver)
    assert spec is not None
    for key in spec.options - spec.changeable_opts:
        if key in work:
            work[key] = qemu_opts_string(work[key])


def _reopen_nbd(
    tx: Transaction,
    session: Session,
    node: BlockNode,
    entry: ReopenEntry,
    changed: dict[str, Any],
    work: dict[str, Any],
) -> None:
    """``nbd_client_reopen_prepare``: a read-only export cannot become writable."""
    info = tx.rt.info(node.name)
    if entry.flags & OpenFlag.RDWR and info.extra.get("read-only-export"):
        raise BlockError("Can't reopen read-only NBD mount as read/write")


#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = {
    "file": _open_protocol,
    "host_device": _open_protocol,
    "null-co": _open_protocol,
    "null-aio": _open_protocol,
    "nbd": _open_protocol,
}
#: this family's ``bdrv_reopen_prepare`` checks, merged into :data:`txgraph.ops.drivers.REOPENERS`
REOPENERS: dict[str, ReopenFn] = {
    "file": _reopen_file,
    "host_device": _reopen_file,
    "nbd": _reopen_nbd,
}
