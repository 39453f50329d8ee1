"""Open and reopen rules of ``qcow2`` (block/qcow2.c ``qcow2_open``, ``qcow2_reopen_prepare``).

``file`` (IMAGE) first, then the header (the data plane reads it), then the
external data file rules: a data file turns the ``file`` edge into METADATA.
The cache-size checks of ``qcow2_update_options_prepare`` run on open and on
reopen alike; the options a reopen may change are the spec's
``changeable_opts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgraph.errors import OpenError
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode
from txgraph.model.perm_bits import Role
from txgraph.ops.drivers.common import OpenFn, ReopenFn, runtime_open
from txgraph.ops.drivers.crypto import qcow2_crypto_options
from txgraph.ops.perm_apply import refresh_perms

if TYPE_CHECKING:
    # The opener, the session and the transaction call into this package; their
    # types are needed for annotations only.
    from txgraph.ops.inherit import OptionSet
    from txgraph.ops.open import Opener
    from txgraph.ops.reopen_queue import ReopenEntry
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = ["OPENERS", "REOPENERS", "check_qcow2_cache_options"]


def _open_qcow2(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``qcow2_open``: ``file`` (IMAGE), the header, then the external data file rules."""
    child = opener.open_child(None, work, "file", node, Role.IMAGE, False)
    assert child is not None
    data_file_given = "data-file" in work or any(k.startswith("data-file.") for k in work.values)
    opts = {k: work.values[k] for k in work.values if spec.accepts_option(k)}
    _consume_qcow2_options(work, spec)
    # what the open reported (header facts: cluster size, data file), not a second report
    info = runtime_open(opener, node, {"file": child}, qcow2_crypto_options(opener, opts))
    check_qcow2_cache_options(opts, info.cluster_size or 65536)
    data_child = (
        opener.open_child(None, work, "data-file", node, Role.DATA, True)
        if data_file_given
        else None
    )
    if info.has_external_data_file:
        if data_child is None and info.data_file:
            data_child = opener.open_child(
                info.data_file, work, "data-file", node, Role.DATA, False
            )
        if data_child is None:
            raise OpenError("'data-file' is required for this image")
        # The metadata file holds no guest data once a data file exists.
        file_edge = opener.graph.child_edge(node.name, "file")
        assert file_edge is not None
        opener.tx.set(file_edge[1], "role", Role.METADATA | Role.PRIMARY)
        refresh_perms(opener.session, opener.tx, [node.name])
    elif data_child is not None:
        raise OpenError("'data-file' can only be set for images with an external data file")


def check_qcow2_cache_options(opts: dict[str, Any], cluster_size: int) -> None:
    """``read_cache_sizes`` and ``qcow2_update_options_prepare``'s cache checks."""
    combined = opts.get("cache-size")
    l2 = opts.get("l2-cache-size")
    refcount = opts.get("refcount-cache-size")
    if combined is not None:
        if l2 is not None and refcount is not None:
            raise OpenError(
                "l2-cache-size, refcount-cache-size, and cache-size may not be set at the same time"
            )
        if l2 is not None and l2 > combined:
            raise OpenError("l2-cache-size may not exceed cache-size")
        if refcount is not None and refcount > combined:
            raise OpenError("refcount-cache-size may not exceed cache-size")
    entry = opts.get("l2-cache-entry-size")
    if entry is not None and (entry < 512 or entry > cluster_size or entry & (entry - 1)):
        raise OpenError(
            "L2 cache entry size must be a power of two between 512 and the "
            f"cluster size ({cluster_size})"
        )
    interval = opts.get("cache-clean-interval")
    if interval is not None and interval > 0xFFFFFFFF:
        raise OpenError("Cache clean interval too big")


def _consume_qcow2_options(work: OptionSet, spec: DriverSpec) -> None:
    for key in [
        k
        for k in work.values
        if spec.accepts_option(k) and k != "data-file" and not k.startswith("data-file.")
    ]:
        work.discard(key)


def _reopen_qcow2(
    tx: Transaction,
    session: Session,
    node: BlockNode,
    entry: ReopenEntry,
    changed: dict[str, Any],
    work: dict[str, Any],
) -> None:
    """``qcow2_reopen_prepare`` → ``qcow2_update_options_prepare``: the cache checks again."""
    cluster = tx.rt.info(node.name).cluster_size or 65536
    check_qcow2_cache_options(changed, cluster)


#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = {"qcow2": _open_qcow2}
#: this family's ``bdrv_reopen_prepare`` checks, merged into :data:`txgraph.ops.drivers.REOPENERS`
REOPENERS: dict[str, ReopenFn] = {"qcow2": _reopen_qcow2}
