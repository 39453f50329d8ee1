"""blockdev-add and blockdev-del as transactions.

Reproduces ``qmp_blockdev_add`` + ``bds_tree_init`` and ``qmp_blockdev_del``
(blockdev.c; reference/qemu-graph.md §3.3, qemu-options.md §5.3): the add
opens a whole tree or nothing; the delete checks QEMU's rules in QEMU's order
and cascades to inline children that lose their last reference.
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import BlockError, OpenError
from txgraph.model.node import OpenFlag, ParentKind
from txgraph.model.options import Provenance, Source, flatten
from txgraph.model.perm_bits import Role
from txgraph.ops.freeze import unfreeze_backing_chain
from txgraph.ops.inherit import OptionSet
from txgraph.ops.open import Opener
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

__all__ = [
    "blockdev_add",
    "blockdev_del",
    "stage_blockdev_add",
    "stage_blockdev_del",
    "unref_node",
    "op_blocker",
]

_ADD_DEFAULT = Provenance(Source.ENTRY_DEFAULT, detail="blockdev-add")


def blockdev_add(session: Session, arguments: dict[str, Any]) -> str:
    """Open the node tree described by ``arguments``; return the root's name."""
    with session.transaction() as tx:
        return stage_blockdev_add(session, tx, arguments)


def stage_blockdev_add(session: Session, tx: Transaction, arguments: dict[str, Any]) -> str:
    """blockdev-add inside an open transaction (also used by the ``transaction`` command)."""
    options = OptionSet.explicit(flatten(arguments))
    if not isinstance(options.values.get("node-name"), str):
        raise OpenError("'node-name' must be specified for the root node")
    # bds_tree_init's defaults: strings, and inherited by children like explicit values.
    for key in ("cache.direct", "cache.no-flush", "read-only"):
        options.set_default(key, "off", _ADD_DEFAULT)
    name = Opener(session, tx).open_inherit(
        None, None, options, OpenFlag.NONE, None, Role.NONE, None, False
    )
    tx.set(session.graph.nodes[name], "monitor_owned", True)
    return name


#: the op types a backing link does not block (``bdrv_backing_attach``)
_BACKING_ALLOWS = frozenset({"commit-target", "stream", "backup-source", "backup-target"})


def op_blocker(session: Session, name: str, op: str = "drive-del") -> str | None:
    """The first reason ``name`` is op-blocked for ``op`` (``bdrv_op_is_blocked``), if any.

    Backing links block their child for every op but four (``bdrv_backing_attach``);
    a block job blocks every op on each node it holds (``block_job_add_bdrv``). QEMU
    keeps blockers newest first, so the most recent one is named.
    """
    graph = session.graph
    for parent, edge in graph.parents(name):
        if edge.parent_kind is ParentKind.JOB:
            return f"block device is in use by block job: {graph.backends[parent].job_type}"
        if (
            edge.parent_kind is ParentKind.NODE
            and edge.role & Role.COW
            and op not in _BACKING_ALLOWS
        ):
            return f"node is used as backing hd of '{parent}'"
    return None


def blockdev_del(session: Session, node_name: str) -> None:
    with session.transaction() as tx:
        stage_blockdev_del(session, tx, node_name)


def stage_blockdev_del(session: Session, tx: Transaction, node_name: str) -> None:
    """blockdev-del inside an open transaction: QEMU's checks in QEMU's order, then the unref."""
    graph = session.graph
    node = graph.nodes.get(node_name)
    if node is None:
        raise BlockError(f"Failed to find node with node-name='{node_name}'")
    if any(e.parent_kind is ParentKind.ROOT for _p, e in graph.parents(node_name)):
        raise BlockError(f"Node {node_name} is in use")
    reason = op_blocker(session, node_name)
    if reason is not None:
        raise BlockError(
            f"Node '{node_name}' is busy: {reason}", rule="op-blocker", subjects=(node_name,)
        )
    if not node.monitor_owned:
        raise BlockError(f"Node {node_name} is not owned by the monitor")
    if graph.refcount(node_name) > 1:
        raise BlockError(f"Block device {node_name} is in use")
    tx.set(node, "monitor_owned", False)
    unref_node(session, tx, node_name)


def unref_node(session: Session, tx: Transaction, name: str) -> None:
    """``bdrv_unref``: delete a node with no references left, then its children.

    Children are detached newest first (``bdrv_close``); each child's
    permissions are refreshed without failing (``bdrv_root_unref_child``
    ignores errors because dropping a parent only loosens requirements).
    """
    graph = session.graph
    if graph.refcount(name) > 0:
        return
    # Close parents before children: a writable format flushes into its file on close.
    tx.rt.close(name)
    node = graph.nodes[name]
    bottom = node.options.get("bottom") if node.driver == "copy-on-read" else None
    if isinstance(bottom, str):
        unfreeze_backing_chain(session, tx, name, bottom)  # cor_close
    for child, edge in graph.children(name):
        if edge.frozen and (name, edge.name) not in graph.thawed:
            # QEMU 7.2 asserts here (bdrv_replace_child_noperm: !child->frozen), e.g. when
            # a reopen takes the overlay off a named commit filter; txgraph refuses.
            raise BlockError(
                f"Cannot change frozen '{edge.name}' link from '{name}' to '{child}'",
                rule="F1-frozen-link",
                subjects=(name, child),
            )
        tx.detach(name, edge.name)
        try:
            refresh_perms(session, tx, [child])
        except BlockError:
            pass
        unref_node(session, tx, child)
    tx.remove_node(name)
