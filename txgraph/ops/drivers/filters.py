"""Open and reopen rules of the filter drivers.

throttle, copy-on-read, preallocate and compress have one filtered ``file``
child; blkdebug reads its config before it opens ``image``; blkverify opens
``raw`` then ``test``; copy-before-write opens ``file`` then ``target``. The
job filters (``commit_top``, ``mirror_top``) are created by jobs
(:mod:`txgraph.jobs`), never opened from options, so they have no open step
here. On reopen throttle may switch groups and preallocate change its sizes
(the specs' ``changeable_opts``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgraph.errors import BlockError, OpenError
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode
from txgraph.model.perm_bits import Role
from txgraph.ops.drivers.common import OpenFn, ReopenFn, consume, runtime_open
from txgraph.ops.freeze import freeze_backing_chain

if TYPE_CHECKING:
    # The opener, the session and the transaction call into this package; their
    # types are needed for annotations only.
    from txgraph.ops.inherit import OptionSet
    from txgraph.ops.open import Opener
    from txgraph.ops.reopen_queue import ReopenEntry
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = ["OPENERS", "REOPENERS"]


def _open_filter(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """throttle, copy-on-read, preallocate, compress: one filtered ``file`` child."""
    child = opener.open_child(None, work, "file", node, Role.FILTERED | Role.PRIMARY, False)
    assert child is not None
    opts = consume(work, spec)
    if spec.name == "throttle":
        group = opts.get("throttle-group")
        if group is None:
            raise OpenError("Parameter 'throttle-group' is missing")
        obj = opener.session.objects.get(group)
        if obj is None or obj.qom_type != "throttle-group":
            raise OpenError(f"Throttle group '{group}' does not exist")
    bottom = opts.get("bottom") if spec.name == "copy-on-read" else None
    if bottom is not None:
        if bottom not in opener.graph.nodes:
            raise OpenError(f"Bottom node '{bottom}' not found")
    runtime_open(opener, node, {"file": child})
    if bottom is not None:
        # cor_open holds the chain it copies from still, down to the bottom.
        freeze_backing_chain(opener.session, opener.tx, node.name, bottom)


def _open_blkdebug(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``blkdebug_open``: options and config first, then the ``image`` child."""
    opts = consume(work, spec)
    image_filename = opts.pop("x-image", None)
    config = opts.get("config")
    if isinstance(config, str) and config:
        try:
            # QEMU reads the config before opening the image child; the data plane
            # does the file access.
            opener.rt.check_readable(config)
        except OSError as err:
            raise OpenError(f"Could not read blkdebug config file: {err.strerror}") from err
    child = opener.open_child(
        image_filename, work, "image", node, Role.FILTERED | Role.PRIMARY, False
    )
    assert child is not None
    _check_blkdebug_limits(opts)
    runtime_open(opener, node, {"image": child})


def _check_blkdebug_limits(opts: dict[str, Any]) -> None:
    """``blkdebug_open``'s alignment overrides: powers of two and multiples of each other."""

    def size(key: str) -> int:
        value = opts.get(key, 0)
        return int(value) if isinstance(value, int) else 0

    def pow2(v: int) -> bool:
        return v > 0 and not v & (v - 1)

    int_max = 2**31 - 1
    align = size("align")
    if align and (align >= int_max or not pow2(align)):
        raise OpenError(f"Cannot meet constraints with align {align}")
    base = max(align, 1)
    max_transfer = size("max-transfer")
    if max_transfer and (max_transfer >= int_max or max_transfer % base):
        raise OpenError(f"Cannot meet constraints with max-transfer {max_transfer}")
    opt_wz = size("opt-write-zero")
    if opt_wz and (opt_wz >= int_max or opt_wz % base):
        raise OpenError(f"Cannot meet constraints with opt-write-zero {opt_wz}")
    max_wz = size("max-write-zero")
    if max_wz and (max_wz >= int_max or max_wz % max(opt_wz, base)):
        raise OpenError(f"Cannot meet constraints with max-write-zero {max_wz}")
    opt_d = size("opt-discard")
    if opt_d and (opt_d >= int_max or opt_d % base):
        raise OpenError(f"Cannot meet constraints with opt-discard {opt_d}")
    max_d = size("max-discard")
    if max_d and (max_d >= int_max or max_d % max(opt_d, base)):
        raise OpenError(f"Cannot meet constraints with max-discard {max_d}")


def _open_blkverify(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``blkverify_open``: ``raw`` (the reference, filtered) first, then ``test``."""
    opts = consume(work, spec)
    raw = opener.open_child(
        opts.get("x-raw"), work, "raw", node, Role.FILTERED | Role.PRIMARY, False
    )
    test = opener.open_child(opts.get("x-image"), work, "test", node, Role.DATA, False)
    assert raw is not None and test is not None
    runtime_open(opener, node, {"raw": raw, "test": test})


def _open_cbw(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``cbw_open``: the filtered ``file``, then the ``target`` written before each guest write."""
    child = opener.open_child(None, work, "file", node, Role.FILTERED | Role.PRIMARY, False)
    target = opener.open_child(None, work, "target", node, Role.DATA, False)
    assert child is not None and target is not None
    opts = consume(work, spec)
    if "bitmap" in opts:
        raise OpenError("Bitmaps for copy-before-write are not supported by txgraph")
    runtime_open(opener, node, {"file": child, "target": target})


def _reopen_throttle(
    tx: Transaction,
    session: Session,
    node: BlockNode,
    entry: ReopenEntry,
    changed: dict[str, Any],
    work: dict[str, Any],
) -> None:
    """``throttle_reopen_prepare``: a new group must exist."""
    group = changed.get("throttle-group")
    if group is not None:
        obj = session.objects.get(group)
        if obj is None or obj.qom_type != "throttle-group":
            raise BlockError(f"Throttle group '{group}' does not exist")


#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = {
    "throttle": _open_filter,
    "copy-on-read": _open_filter,
    "preallocate": _open_filter,
    "compress": _open_filter,
    "blkdebug": _open_blkdebug,
    "blkverify": _open_blkverify,
    "copy-before-write": _open_cbw,
}
#: this family's ``bdrv_reopen_prepare`` checks, merged into :data:`txgraph.ops.drivers.REOPENERS`
REOPENERS: dict[str, ReopenFn] = {"throttle": _reopen_throttle}
