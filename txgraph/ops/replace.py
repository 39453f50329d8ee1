"""Re-pointing edges: QEMU's replace-node machinery and the blockdev-replace proposal.

Reproduces ``bdrv_replace_child_tran`` (one edge keeps its identity and gets a
new child), ``should_update_child`` (an edge whose parent lies in the subtree
of the new child must not move: that would make a loop), and
``bdrv_replace_node_noperm`` / ``bdrv_replace_node_common`` (every parent
edge of ``from`` moves to ``to`` except job edges and loop-creating ones;
with ``auto_skip`` off a loop-creating edge is an error), reference/
qemu-graph.md §3.1, §3.2, §3.5.

On top of that, the two txgraph extensions:

* ``x-blockdev-replace``: the upstream v9 proposal of ``blockdev-replace``
  (one edge named by its parent: a driver node and a child name, or an
  export's root edge) — re-target the edge, then refresh the permissions of
  the old and the new child (``bdrv_replace_child_bs``), §3.4;
* ``x-txgraph-replace-edges``: QEMU's replace-node with a chosen parents mode
  (``auto`` = bdrv_replace_node, ``all`` = fail on a loop, ``exactly-one``)
  or an explicit list of edges, all in one transaction.

Graph edits come first and permissions are refreshed once on the final graph
(§2.2 P8), so intermediate states are never permission-checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from txgraph.errors import BlockError
from txgraph.model.node import Edge, ParentKind
from txgraph.ops.exports import find_export_backend
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

__all__ = [
    "retarget_edge",
    "should_update_child",
    "replace_node_noperm",
    "find_parent_edge",
    "stage_blockdev_replace",
    "stage_replace_edges",
    "EdgeRef",
]

#: (parent key in the graph, edge name)
EdgeRef = tuple[str, str]


def retarget_edge(session: Session, tx: Transaction, parent: str, name: str, new_child: str) -> str:
    """``bdrv_replace_child_tran``: the edge ``(parent, name)`` now points at ``new_child``.

    Every parent follows: a node, or a BlockBackend (an export's ``root``);
    the data plane gets the change with the transaction's delta at commit.
    Returns the old child.
    """
    return tx.retarget(parent, name, new_child)


def should_update_child(session: Session, parent: str, edge: Edge, to: str) -> bool:
    """``should_update_child``: may the parent edge ``edge`` of some node move to ``to``?

    Job edges stay at their node (``stay_at_node``). An edge whose parent is
    ``to`` itself or lies below it would close a loop once it points at
    ``to`` (QEMU finds it by a BFS over ``to``'s subtree looking for the edge).
    """
    if edge.parent_kind is ParentKind.JOB:
        return False
    if parent not in session.graph.nodes:
        return True
    return not session.graph.has_descendant(to, parent)


def replace_node_noperm(
    session: Session, tx: Transaction, from_: str, to: str, *, auto_skip: bool = True
) -> list[EdgeRef]:
    """``bdrv_replace_node_noperm``: move the parent edges of ``from_`` to ``to``.

    Parents are visited in QEMU's list order (newest first). Returns the
    edges that moved. Permissions are the caller's business (P8).
    """
    moved: list[EdgeRef] = []
    for parent, edge in session.graph.parents(from_):
        if not should_update_child(session, parent, edge, to):
            if auto_skip:
                continue
            raise BlockError(
                f"Should not change '{edge.name}' link to '{from_}'",
                rule="G1-acyclic",
                subjects=(parent, from_, to),
            )
        if edge.frozen:
            raise BlockError(
                f"Cannot change '{edge.name}' link to '{from_}'",
                rule="F1-frozen-link",
                subjects=(parent, from_),
            )
        retarget_edge(session, tx, parent, edge.name, to)
        moved.append((parent, edge.name))
    return moved


def _check_edge_move(session: Session, parent: str, edge: Edge, old: str, new: str) -> None:
    """The checks one explicit edge move needs: not frozen, no loop (§3.5)."""
    if edge.frozen:
        raise BlockError(
            f"Cannot change frozen '{edge.name}' link from '{parent}' to '{old}'",
            rule="F1-frozen-link",
            subjects=(parent, old),
        )
    if parent in session.graph.nodes and session.graph.has_descendant(new, parent):
        raise BlockError(
            f"Making '{new}' a {edge.name} child of '{parent}' would create a cycle",
            rule="G1-acyclic",
            subjects=(parent, new),
        )


def find_parent_edge(session: Session, parent: str, name: str) -> tuple[str, str, Edge]:
    """An edge named by its parent: a node-name, or an export's id (its ``root`` edge).

    Returns (graph key of the parent, current child, edge).
    """
    graph = session.graph
    if parent in graph.nodes:
        found = graph.child_edge(parent, name)
        if found is None:
            raise BlockError(f"Block driver node '{parent}' doesn't have child named '{name}'")
        return parent, found[0], found[1]
    key = find_export_backend(session, parent)
    if key is not None:
        found = graph.child_edge(key, name)
        if found is None:
            raise BlockError(f"Export '{parent}' is empty, nothing to replace")
        return key, found[0], found[1]
    for backend in graph.backends.values():
        # a named BlockBackend (a device of an imported graph)
        if backend.name and backend.name == parent and backend.kind is ParentKind.ROOT:
            found = graph.child_edge(backend.key, name)
            if found is None:
                raise BlockError(f"Device '{parent}' is empty, nothing to replace")
            return backend.key, found[0], found[1]
    raise BlockError(f"Parent '{parent}' not found: neither a node-name nor an export id")


def _new_child(session: Session, name: str) -> str:
    if name not in session.graph.nodes:
        raise BlockError(f"Node '{name}' not found")
    return name


def stage_blockdev_replace(session: Session, tx: Transaction, args: dict[str, Any]) -> None:
    """The v9 ``blockdev-replace`` proposal (as ``x-blockdev-replace``): one edge, one refresh.

    ``parent-type`` ``driver`` names ``node-name`` + ``child``; ``export`` names
    ``export-id`` (its BlockBackend's root edge); ``qdev`` does not exist in
    a storage daemon, as in QEMU's tools.
    """
    graph = session.graph
    ptype = args["parent-type"]
    if ptype == "driver":
        node = args["node-name"]
        if node not in graph.nodes:
            raise BlockError(f"Block driver node with node-name '{node}' not found")
        key, old, edge = find_parent_edge(session, node, args["child"])
    elif ptype == "export":
        # blk_by_export_id: exports are anonymous BlockBackends named by the export id.
        eid = args["export-id"]
        backend_key = find_export_backend(session, eid)
        if backend_key is None:
            raise BlockError(f"Export '{eid}' not found")
        found = graph.child_edge(backend_key, "root")
        if found is None:
            raise BlockError(f"Export '{eid}' is empty, nothing to replace")
        key, (old, edge) = backend_key, found
    else:
        raise BlockError(f"Parameter 'parent-type' does not accept value '{ptype}'")
    new = _new_child(session, args["new-child"])
    if new == old:
        return
    _check_edge_move(session, key, edge, old, new)
    retarget_edge(session, tx, key, edge.name, new)
    refresh_perms(session, tx, [old, new])


def stage_replace_edges(session: Session, tx: Transaction, args: dict[str, Any]) -> list[EdgeRef]:
    """``x-txgraph-replace-edges``: replace-node by parents mode, or an explicit edge list.

    ``{"child": X, "parents-mode": M, "new-child": Y}``: ``auto`` is QEMU's
    ``bdrv_replace_node`` (skips loop-creating and job edges), ``all`` fails
    on a loop-creating edge, ``exactly-one`` needs X to have exactly one
    movable parent edge. ``{"edges": [{"parent": P, "child-name": N}, ...],
    "new-child": Y}`` moves exactly those edges. Permissions are refreshed
    once, over the old children and the new one (``bdrv_replace_node_common``).
    """
    new = _new_child(session, args["new-child"])
    if "edges" in args:
        olds: list[str] = []
        moved: list[EdgeRef] = []
        seen: set[EdgeRef] = set()
        for item in args["edges"]:
            key, old, edge = find_parent_edge(session, item["parent"], item["child-name"])
            if (key, edge.name) in seen:
                raise BlockError(
                    f"Edge '{item['child-name']}' of '{item['parent']}' is listed twice"
                )
            seen.add((key, edge.name))
            if old == new:
                continue
            _check_edge_move(session, key, edge, old, new)
            retarget_edge(session, tx, key, edge.name, new)
            olds.append(old)
            moved.append((key, edge.name))
        refresh_perms(session, tx, _unique([*olds, new]))
        return moved
    child = args["child"]
    if child not in session.graph.nodes:
        raise BlockError(f"Node '{child}' not found")
    if child == new:
        return []
    mode = args.get("parents-mode", "auto")
    if mode == "exactly-one":
        movable = [
            (p, e) for p, e in session.graph.parents(child) if e.parent_kind is not ParentKind.JOB
        ]
        if len(movable) != 1:
            raise BlockError(f"Node '{child}' has {len(movable)} parents, expected exactly one")
    moved = replace_node_noperm(session, tx, child, new, auto_skip=(mode == "auto"))
    refresh_perms(session, tx, [child, new])
    return moved


def _unique(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if name not in out:
            out.append(name)
    return out
