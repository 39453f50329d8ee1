"""Open and reopen rules of the ``raw`` format (block/raw-format.c ``raw_open``).

An ``offset``/``size`` window makes the ``file`` edge DATA instead of
FILTERED; both options may change on reopen (the spec's ``changeable_opts``)
and must stay non-negative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgraph.errors import BlockError, OpenError
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode
from txgraph.model.perm_bits import Role
from txgraph.ops.drivers.common import OpenFn, ReopenFn, consume, runtime_open

if TYPE_CHECKING:
    # The opener, the session and the transaction call into this package; their
    # types are needed for annotations only.
    from txgraph.ops.inherit import OptionSet
    from txgraph.ops.open import Opener
    from txgraph.ops.reopen_queue import ReopenEntry
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = ["OPENERS", "REOPENERS"]


def _open_raw(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``raw_open``: an offset/size window makes the file edge DATA instead of FILTERED."""
    opts = consume(work, spec)
    for key in ("offset", "size"):
        if key in opts and (not isinstance(opts[key], int) or opts[key] < 0):
            raise OpenError(f"Parameter '{key}' expects a non-negative number below 2^64")
    windowed = "size" in opts or bool(opts.get("offset", 0))
    role = Role.DATA | Role.PRIMARY if windowed else Role.FILTERED | Role.PRIMARY
    child = opener.open_child(None, work, "file", node, role, False)
    assert child is not None
    runtime_open(opener, node, {"file": child})


def _reopen_raw(
    tx: Transaction,
    session: Session,
    node: BlockNode,
    entry: ReopenEntry,
    changed: dict[str, Any],
    work: dict[str, Any],
) -> None:
    """``raw_reopen_prepare`` / ``raw_read_options``: the window must stay non-negative."""
    for key, value in changed.items():
        if value is not None and (not isinstance(value, int) or value < 0):
            raise BlockError(f"Parameter '{key}' expects a non-negative number below 2^64")


#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = {"raw": _open_raw}
#: this family's ``bdrv_reopen_prepare`` checks, merged into :data:`txgraph.ops.drivers.REOPENERS`
REOPENERS: dict[str, ReopenFn] = {"raw": _reopen_raw}
