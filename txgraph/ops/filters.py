"""Inserting and removing filter nodes in one transaction (txgraph extensions).

QEMU 7.2 inserts a filter in two monitor steps — ``blockdev-add`` of the
filter on top of X (parentless), then ``blockdev-reopen`` of each parent (or,
in the upstream proposal, ``blockdev-replace``) — and every step is
permission-checked on its own. The intermediate state, where the filter is
a *second* parent of X beside X's real parents, can conflict although the
final graph (filter between X and its parents) is fine: exactly the
``append-greedy-filter`` situation of QEMU's own unit tests, which QEMU's
internal ``bdrv_insert_node``/``bdrv_append`` avoid by editing the graph
first and refreshing permissions once on the final graph (reference/
qemu-graph.md §2.2 P8, §3.4 motivation).

``x-txgraph-insert-filter`` does that for users: the parent edges to move
are detached first, the filter is opened with ``X`` as its filtered child
(its open-time permission refresh then sees only edges that will exist in
the end), the detached edges are re-attached to the filter keeping their
identity (name, role, place in the parent's child list), and the final graph
is refreshed once. ``x-txgraph-remove-filter`` is ``bdrv_drop_filter``
followed by the deletion of the filter node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from txgraph.errors import BlockError
from txgraph.model.drivers import driver_spec
from txgraph.model.node import BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.options import flatten
from txgraph.model.perm_bits import Role
from txgraph.ops.blockdev import stage_blockdev_add, stage_blockdev_del, unref_node
from txgraph.ops.inherit import OptionSet
from txgraph.ops.open import Opener, lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.replace import (
    EdgeRef,
    find_parent_edge,
    replace_node_noperm,
)
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

__all__ = [
    "stage_insert_filter",
    "stage_insert_node",
    "stage_append_job_filter",
    "stage_remove_filter",
    "filtered_child_name",
]


def filtered_child_name(driver: str) -> str:
    """The option naming a filter driver's filtered child (``image`` for blkdebug)."""
    spec = driver_spec(driver)
    if spec is None or not spec.is_filter:
        raise BlockError(f"Driver '{driver}' is not a filter")
    if spec.filtered_child_is_backing:
        return "backing"
    return spec.children[0].name if spec.children else "file"


def _edges_to_move(session: Session, node: str, args: dict[str, Any]) -> list[tuple[str, Edge]]:
    """The parent edges of ``node`` the filter takes over: listed ones, or all movable ones."""
    graph = session.graph
    if "edges" not in args:
        # bdrv_replace_node's choice; the filter's own edge does not exist yet,
        # so only job edges are left out here.
        return [(p, e) for p, e in graph.parents(node) if e.parent_kind is not ParentKind.JOB]
    out: list[tuple[str, Edge]] = []
    for item in args["edges"]:
        key, child, edge = find_parent_edge(session, item["parent"], item["child-name"])
        if child != node:
            raise BlockError(
                f"Edge '{edge.name}' of '{item['parent']}' points to '{child}', not to '{node}'"
            )
        if any(e is edge for _p, e in out):
            raise BlockError(f"Edge '{edge.name}' of '{item['parent']}' is listed twice")
        out.append((key, edge))
    return out


def stage_insert_filter(session: Session, tx: Transaction, args: dict[str, Any]) -> str:
    """``x-txgraph-insert-filter {node, filter, edges?}``: put a new filter above ``node``.

    ``filter`` is the filter's blockdev-add options; its filtered child
    (``file``, or ``image`` for blkdebug) defaults to ``node`` and must be
    ``node`` if given. Without ``edges`` every parent edge of ``node`` moves
    (an export's root edge included), otherwise only the listed ones.
    Returns the filter's node-name.
    """
    graph = session.graph
    node = lookup_bs(session, None, args["node"])
    options = dict(args["filter"])
    driver = options.get("driver")
    if not isinstance(driver, str):
        raise BlockError("Parameter 'driver' is missing")
    key = filtered_child_name(driver)
    given = options.setdefault(key, node)
    if given != node:
        raise BlockError(f"The filter's '{key}' child must be '{node}'")
    edges = _edges_to_move(session, node, args)
    for parent, edge in edges:
        if edge.frozen:
            raise BlockError(
                f"Cannot change '{edge.name}' link to '{node}'",
                rule="F1-frozen-link",
                subjects=(parent, node),
            )
    # Graph edits first (P8): take the edges off ``node`` so the filter's open
    # does not check a state that never exists at a transaction boundary.
    for parent, edge in edges:
        # Registered before the detach, so it runs after the re-attach on abort:
        # the edge object gets back its place in both lists.
        tx.undo(_seq_restorer(edge))
        tx.detach(parent, edge.name)
    name = stage_blockdev_add(session, tx, options)
    for parent, edge in edges:
        if parent in graph.nodes and graph.has_descendant(name, parent):
            raise BlockError(
                f"Making '{name}' a {edge.name} child of '{parent}' would create a cycle",
                rule="G1-acyclic",
                subjects=(parent, name),
            )
        seq = edge.seq
        tx.attach(parent, name, edge)
        edge.seq = seq  # the same BdrvChild keeps its place among its siblings (undo above)
    refresh_perms(session, tx, [node, name])
    return name


def stage_insert_node(
    session: Session, tx: Transaction, node: str, options: dict[str, Any], flags: OpenFlag
) -> str:
    """``bdrv_insert_node``: open a new (unnamed unless named) node over ``node``, then
    ``bdrv_replace_node`` onto it; returns the new node's name.

    Used by jobs for their filters (stream's copy-on-read, backup's
    copy-before-write). The node opens while ``node``'s parents still use it,
    so a permission conflict of the open is "Could not create node: ...";
    then every parent edge moves that ``should_update_child`` allows (not the
    jobs', not one that would close a loop through the new node's children --
    that parent stays on ``node``); a failure of this replace step (a frozen
    parent link, a permission conflict) is "Could not replace node: ...". A
    conflict that only arises once the job attaches to the new node (a parent
    left on ``node`` meets the filter's unshare then) has no prefix. The new
    node is not monitor-owned: it goes away once nothing references it.
    """
    try:
        name = Opener(session, tx).open_inherit(
            None, None, OptionSet.explicit(flatten(options)), flags, None, Role.NONE, None, False
        )
    except BlockError as err:
        err.desc = f"Could not create node: {err.desc}"
        err.args = (err.desc,)
        raise
    try:
        replace_node_noperm(session, tx, node, name, auto_skip=True)
        refresh_perms(session, tx, [node, name])
    except BlockError as err:
        # bdrv_insert_node: a failed bdrv_replace_node (a frozen parent link, a conflict
        # of the moved parents' permissions) is "Could not replace node: ..."
        err.desc = f"Could not replace node: {err.desc}"
        err.args = (err.desc,)
        raise
    return name


def stage_append_job_filter(
    session: Session,
    tx: Transaction,
    driver: str,
    node_name: str | None,
    below: str,
    flags: OpenFlag = OpenFlag.NONE,
) -> str:
    """``bdrv_new_open_driver`` + ``bdrv_append``: a job's own filter (``commit_top``,
    ``mirror_top``) goes above ``below`` with ``below`` as its backing, and every
    parent of ``below`` but the jobs moves onto it. Returns the filter's name."""
    from txgraph.ops.drivers import image_dict
    from txgraph.ops.filenames import refresh_filename
    from txgraph.ops.snapshot import bdrv_append

    node = BlockNode(
        name="", driver=driver, options={"driver": driver}, explicit={"driver": driver}, flags=flags
    )
    Opener(session, tx).assign_node_name(node, node_name)
    options = {**node.options, **node.runtime_options()}
    info = tx.rt.open(node.name, driver, options, {"backing": below}, node.read_only)
    node.image = image_dict(info)
    bdrv_append(session, tx, node.name, below)
    refresh_filename(session.graph, node.name)
    return node.name


def _seq_restorer(edge: Edge) -> Callable[[], None]:
    """The undo that gives ``edge`` back its place in both edge lists."""
    seqs = (edge.seq, edge.parent_seq)

    def restore() -> None:
        edge.seq, edge.parent_seq = seqs

    return restore


def stage_remove_filter(session: Session, tx: Transaction, args: dict[str, Any]) -> list[EdgeRef]:
    """``x-txgraph-remove-filter {node}``: ``bdrv_drop_filter``, then delete the filter.

    Every movable parent of the filter moves to its filtered child; the
    filter (monitor-owned: blockdev-del's rules apply; inline: it simply
    loses its last reference) is closed and its child edge dropped. Returns
    the edges that moved.
    """
    graph = session.graph
    name = args["node"]
    if name not in graph.nodes:
        raise BlockError(f"Failed to find node with node-name='{name}'")
    node = graph.nodes[name]
    spec = driver_spec(node.driver)
    if spec is None or not spec.is_filter:
        raise BlockError(f"Node '{name}' is not a filter")
    found = graph.child_edge(name, filtered_child_name(node.driver))
    if found is None:
        raise BlockError(f"Filter '{name}' has no filtered child")
    child = found[0]
    # Job edges stay; no parent of the filter can lie below its child (acyclic graph).
    moved = replace_node_noperm(session, tx, name, child, auto_skip=True)
    if node.monitor_owned:
        stage_blockdev_del(session, tx, name)
    elif graph.refcount(name) == 0:
        unref_node(session, tx, name)
    refresh_perms(session, tx, [child])
    return moved
