"""Open rules of ``quorum`` (block/quorum.c ``quorum_open``).

The children array and the threshold are validated first, then each child
``children.N`` is opened with role DATA. quorum has no reopen handler (its spec
says ``reopenable=False``); adding and removing children is
:mod:`txgraph.ops.quorum`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from txgraph.errors import OpenError
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode
from txgraph.model.options import array_entries, parse_bool
from txgraph.model.perm_bits import Role
from txgraph.ops.drivers.common import OpenFn, ReopenFn, consume, runtime_open

if TYPE_CHECKING:
    # The opener, the session and the transaction call into this package; their
    # types are needed for annotations only.
    from txgraph.ops.inherit import OptionSet
    from txgraph.ops.open import Opener

__all__ = ["OPENERS", "REOPENERS"]


def _open_quorum(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``quorum_open``: validate the children array and threshold, then open each child."""
    count = array_entries(work.values, "children.")
    if count < 0:
        raise OpenError("Option children is not a valid array")
    if count < 1:
        raise OpenError("Number of provided children must be 1 or more")
    opts = consume(work, spec)
    threshold = opts.get("vote-threshold", 0)
    if not isinstance(threshold, int) or threshold < 1:
        raise OpenError("Parameter 'vote-threshold' expects a value >= 1")
    if threshold > count:
        raise OpenError("threshold may not exceed children count")
    pattern = opts.get("read-pattern", "quorum")
    if pattern not in ("quorum", "fifo"):
        raise OpenError("Please set read-pattern as fifo or quorum")
    if pattern == "quorum":
        # blkverify and rewrite-corrupted only mean something when reads vote.
        blkverify = bool(parse_bool(opts.get("blkverify", False)))
        if blkverify and (count != 2 or threshold != 2):
            raise OpenError(
                "blkverify=on can only be set if there are exactly two files and "
                "vote-threshold is 2"
            )
        rewrite = bool(parse_bool(opts.get("rewrite-corrupted", False)))
        if rewrite and blkverify:
            raise OpenError("rewrite-corrupted=on cannot be used with blkverify=on")
    children: dict[str, str] = {}
    for index in range(count):
        key = f"children.{index}"
        child = opener.open_child(None, work, key, node, Role.DATA, False)
        assert child is not None
        children[key] = child
    node.next_child_index = count
    runtime_open(opener, node, children)


#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = {"quorum": _open_quorum}
#: this family's ``bdrv_reopen_prepare`` checks, merged into :data:`txgraph.ops.drivers.REOPENERS`
REOPENERS: dict[str, ReopenFn] = {}
