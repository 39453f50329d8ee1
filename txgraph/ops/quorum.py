"""x-blockdev-change: adding and removing quorum children.

Reproduces blockdev.c ``qmp_x_blockdev_change``, block.c ``bdrv_add_child`` /
``bdrv_del_child`` and block/quorum.c ``quorum_add_child`` /
``quorum_del_child`` (reference/qemu-graph.md §3.3), checks in QEMU's order
and words (observed on QSD 7.2):

* parent lookup (``bdrv_lookup_bs``), then exactly one of child/node;
* delete: the edge is found by its *name* first, then the driver must
  support removal, then the quorum must keep at least vote-threshold
  children; deleting the newest-numbered child gives its index back
  (``next_child_index`` decrements), any other index is never reused;
* add: the node must exist, the driver must support adding, the node must
  have no parent at all; the edge is ``children.<next_child_index>`` with
  role DATA, attached with the cycle check and a permission refresh.

Not checked, as in QEMU: op blockers and running jobs.
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import BlockError
from txgraph.model.node import Edge
from txgraph.model.options import parse_bool
from txgraph.model.perm_bits import Role
from txgraph.ops.blockdev import unref_node
from txgraph.ops.open import lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

__all__ = ["stage_x_blockdev_change"]

#: drivers with bdrv_add_child / bdrv_del_child
_CHILD_LIST_DRIVERS = frozenset({"quorum"})


def stage_x_blockdev_change(session: Session, tx: Transaction, args: dict[str, Any]) -> None:
    """``qmp_x_blockdev_change {parent, child?, node?}`` inside an open transaction."""
    graph = session.graph
    parent_arg = args["parent"]
    parent = lookup_bs(session, parent_arg, parent_arg)
    has_child, has_node = "child" in args, "node" in args
    if has_child == has_node:
        if has_child:
            raise BlockError("The parameters child and node are in conflict")
        raise BlockError("Either child or node must be specified")
    driver = graph.nodes[parent].driver
    if has_child:
        name = args["child"]
        if graph.child_edge(parent, name) is None:
            raise BlockError(f"Node '{parent_arg}' does not have child '{name}'")
        if driver not in _CHILD_LIST_DRIVERS:
            raise BlockError(f"The node {parent} does not support removing a child")
        _quorum_del_child(session, tx, parent, name)
        return
    node = args["node"]
    if node not in graph.nodes:
        raise BlockError(f"Node '{node}' not found")
    if driver not in _CHILD_LIST_DRIVERS:
        raise BlockError(f"The node {parent} does not support adding a child")
    if graph.parents(node):
        raise BlockError(f"The node {node} already has a parent")
    _quorum_add_child(session, tx, parent, node)


def _children_count(session: Session, quorum: str) -> int:
    return sum(1 for _c, e in session.graph.children(quorum) if e.name.startswith("children."))


def _quorum_add_child(session: Session, tx: Transaction, quorum: str, child: str) -> None:
    """``quorum_add_child``: a DATA edge under the next index; the index advances for good."""
    qnode = session.graph.nodes[quorum]
    if parse_bool(qnode.options.get("blkverify", False)):
        raise BlockError("Cannot add a child to a quorum in blkverify mode")
    index = qnode.next_child_index
    name = f"children.{index}"
    # QEMU consumes the index before attaching and gives it back on failure:
    # the transaction's undo of this set is that give-back.
    tx.set(qnode, "next_child_index", index + 1)
    if session.graph.has_descendant(child, quorum):
        raise BlockError(
            f"Making '{child}' a {name} child of '{quorum}' would create a cycle",
            rule="G1-acyclic",
            subjects=(quorum, child),
        )
    tx.attach(quorum, child, Edge(name=name, role=Role.DATA))
    refresh_perms(session, tx, [quorum])


def _quorum_del_child(session: Session, tx: Transaction, quorum: str, name: str) -> None:
    """``quorum_del_child`` + ``bdrv_unref_child``: threshold rule, index give-back, unref."""
    qnode = session.graph.nodes[quorum]
    threshold = int(qnode.options.get("vote-threshold", 1))
    if _children_count(session, quorum) <= threshold:
        raise BlockError(
            f"The number of children cannot be lower than the vote threshold {threshold}"
        )
    if name == f"children.{qnode.next_child_index - 1}":
        tx.set(qnode, "next_child_index", qnode.next_child_index - 1)
    child, _edge = tx.detach(quorum, name)
    # Dropping a parent only loosens requirements: QEMU ignores refresh errors here.
    try:
        refresh_perms(session, tx, [child])
    except BlockError:
        pass
    unref_node(session, tx, child)
