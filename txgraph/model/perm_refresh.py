"""Permission refresh: recompute edge permissions and enforce P3/P4.

Reproduces ``bdrv_refresh_perms`` / ``bdrv_do_refresh_perms`` (block.c;
reference/qemu-graph.md §2.2): walk the union of the touched nodes' subtrees
parents-first; at each node check that no parent needs what another parent
does not share (P3), that writers only use writable nodes (P4), let the driver
veto (P6, image locks), then recompute the node's child edges from its
cumulative permissions. The walk is computed here as a pure function; the
caller applies the returned changes through its transaction so they can be
undone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from txgraph.errors import BlockError, PermissionConflict
from txgraph.model.child_perms import ChildPermContext, child_perm
from txgraph.model.drivers import driver_spec
from txgraph.model.graph import BlockGraph
from txgraph.model.node import BlockNode, Edge, OpenFlag
from txgraph.model.perm_bits import PERM_ALL, Perm, perm_from_names, perm_names

__all__ = [
    "EdgePermChange",
    "compute_refresh",
    "cumulative_perms",
    "child_perm_context",
    "parent_description",
]


@dataclass(frozen=True)
class EdgePermChange:
    parent: str
    name: str
    perm: Perm
    shared: Perm


#: ``writable_after(node)``: is the node writable once the pending operation commits?
WritableAfter = Callable[[BlockNode], bool]
#: ``driver_check(node, perm, shared)``: the driver's check_perm (image locks); raises on veto.
DriverCheck = Callable[[BlockNode, Perm, Perm], None]


def parent_description(graph: BlockGraph, parent: str) -> str:
    """``bdrv_child_user_desc``: how an edge's owner is named in conflict errors."""
    if parent in graph.nodes:
        return f"node '{parent}'"
    return graph.backends[parent].description


def cumulative_perms(parent_edges: Iterable[Edge]) -> tuple[Perm, Perm]:
    """``bdrv_get_cumulative_perm``: union of needs, intersection of what is shared."""
    perm, shared = Perm.NONE, PERM_ALL
    for edge in parent_edges:
        perm |= edge.perm
        shared &= edge.shared
    return perm, shared


def _perm_option(node: BlockNode, key: str) -> Perm:
    names = [v for k, v in sorted(node.options.items()) if k.startswith(key + ".")]
    return perm_from_names(str(n) for n in names)


#: internal options of a mirror_top node: the job gave up the source / the mirror is a commit
MIRROR_STOP = "x-txgraph-mirror-stop"
MIRROR_COMMIT = "x-txgraph-mirror-commit"


def child_perm_context(
    node: BlockNode, writable: bool, has_parents: bool = False
) -> ChildPermContext:
    spec = driver_spec(node.driver)
    family = spec.perm_family if spec else "default"
    if family == "mirror_top":
        # bdrv_mirror_top_child_perm reads the job's state: stopped, or an active commit.
        if node.options.get(MIRROR_STOP):
            family = "mirror_top-stop"
        elif node.options.get(MIRROR_COMMIT):
            family = "mirror_top-commit"
    return ChildPermContext(
        family=family,
        parent_writable=writable,
        parent_inactive=bool(node.flags & OpenFlag.INACTIVE),
        parent_no_io=bool(node.flags & OpenFlag.NO_IO),
        take_perms=_perm_option(node, "take-child-perms") if family == "blkdebug" else Perm.NONE,
        unshare_perms=_perm_option(node, "unshare-child-perms")
        if family == "blkdebug"
        else Perm.NONE,
        rewrite_corrupted=(
            node.options.get("rewrite-corrupted") in (True, "on")
            and node.options.get("read-pattern", "quorum") != "fifo"
        ),
        has_parents=has_parents and family == "copy-before-write",
    )


def _formula_reads_parents(node: BlockNode) -> bool:
    """Does the node's child-permission formula depend on its parent set itself (not only
    on the cumulative permissions)? Only copy-before-write's does."""
    spec = driver_spec(node.driver)
    return spec is not None and spec.perm_family == "copy-before-write"


def compute_refresh(
    graph: BlockGraph,
    roots: Iterable[str],
    *,
    writable_after: WritableAfter | None = None,
    driver_check: DriverCheck | None = None,
    collect: list[BlockError] | None = None,
    stale: Collection[str] = (),
) -> list[EdgePermChange]:
    """Walk the roots' subtrees parents-first and return the edge permission changes.

    With ``collect``, violations are appended there instead of raised and the
    walk goes on, giving the permissions the graph *would* have (used to let
    the checker explain a refusal); the driver veto is skipped then.

    ``stale`` names nodes that lost a parent edge (detached or moved away): where the
    walk reaches one, it is recomputed although no edge into it changed its values
    (its cumulative permissions may have shrunk, and with them its child edges).

    :raises PermissionConflict: two parents of a node disagree (QEMU's P3 text).
    :raises BlockError: a writer on a read-only node (P4) or a driver veto.
    """
    is_writable: WritableAfter = writable_after or (lambda n: n.writable)
    # New values of edges already recomputed in this walk: (parent, name) -> (perm, shared)
    overlay: dict[tuple[str, str], tuple[Perm, Perm]] = {}
    changes: list[EdgePermChange] = []

    def current(parent: str, edge: Edge) -> tuple[Perm, Perm]:
        return overlay.get((parent, edge.name), (edge.perm, edge.shared))

    # Only nodes whose incoming edges may have changed need a visit: a node
    # whose parents' edges all kept their values keeps its cumulative
    # permissions, so neither its checks nor its children's edges can change.
    # (QEMU walks the whole subtree; the outcome is the same.)
    roots = list(roots)
    stale = set(stale)
    dirty = set(roots) | stale

    def visit(name: str) -> list[str]:
        """Recompute ``name`` from its parents' current edges; returns the children made dirty."""
        node = graph.nodes[name]
        parents = graph.parents(name)
        values = [(p, e, *current(p, e)) for p, e in parents]
        try:
            _check_conflicts(graph, name, values)
        except BlockError as conflict:
            if collect is None:
                raise
            collect.append(conflict)
        perm = Perm.NONE
        shared = PERM_ALL
        for _p, _e, eperm, eshared in values:
            perm |= eperm
            shared &= eshared
        writable = is_writable(node)
        if perm & (Perm.WRITE | Perm.WRITE_UNCHANGED) and not writable:
            if not node.writable:
                err = BlockError("Block node is read-only", rule="P4-read-only", subjects=(name,))
            else:
                err = BlockError(
                    f"Read-only block node '{name}' cannot support read-write users",
                    rule="P4-read-only",
                    subjects=(name,),
                )
            if collect is None:
                raise err
            collect.append(err)
        if driver_check is not None and collect is None:
            driver_check(node, perm, shared)
        ctx = child_perm_context(node, writable, bool(parents))
        made: list[str] = []
        for child, edge in graph.children(name):
            nperm, nshared = child_perm(ctx, edge.role, perm, shared)
            if graph.nodes[child].force_share:
                nshared = PERM_ALL
            if (nperm, nshared) != current(name, edge):
                overlay[(name, edge.name)] = (nperm, nshared)
                changes.append(EdgePermChange(name, edge.name, nperm, nshared))
                dirty.add(child)
                made.append(child)
            elif child in stale or (
                child not in dirty and _formula_reads_parents(graph.nodes[child])
            ):
                # a node that lost a parent is recomputed (see the docstring); and
                # cbw_child_perm asks whether the node has parents at all: a first parent
                # that passes nothing down still changes the node's own child edges
                dirty.add(child)
                made.append(child)
        return made

    if collect is None and len(roots) == 1 and roots[0] in graph.nodes:
        # Fast path (a chain being opened attaches one child at a time): follow the
        # dirty nodes from the root alone, without ordering the whole subtree, as
        # long as every node visited has one block-node parent at most (then any
        # parent-first order is the topological one). Anything else, or any error
        # (whose choice may depend on the order), redoes the walk below exactly.
        try:
            seen = _single_parent_walk(graph, roots[0], visit)
            # A node that left the graph or has no parent is below nothing (_is_below
            # answers False at once): deleting a chain detaches every layer from its
            # parent before the layer goes, so ``stale`` holds all of them, and testing
            # that in one comprehension replaces a search per node and per refresh
            # (O(depth^2) calls for a chain's blockdev-del).
            nodes, pred = graph.nodes, graph._pred
            live = (
                [x for x in stale if x not in seen and x in nodes and pred[x]]
                if seen is not None
                else []
            )
            if seen is not None and not any(_is_below(graph, x, roots[0]) for x in live):
                return changes
        except BlockError:
            pass
        overlay.clear()
        changes.clear()
        dirty = set(roots) | stale
    for name in graph.subtree_topological(roots):
        if name in dirty:
            visit(name)
    return changes


def _single_parent_walk(
    graph: BlockGraph, root: str, visit: Callable[[str], list[str]]
) -> set[str] | None:
    """Visit the dirty nodes from ``root`` parent-first; the nodes visited, or None as soon
    as a node has two block-node parents or is reached twice (then the caller walks the
    sorted subtree)."""
    pending = [root]
    seen = {root}
    while pending:
        name = pending.pop()
        if sum(1 for p in graph._pred[name] for _k in graph._pred[name][p] if p in graph.nodes) > 1:
            return None
        for child in reversed(visit(name)):
            if child in seen:
                return None
            seen.add(child)
            pending.append(child)
    return seen


def _is_below(graph: BlockGraph, name: str, root: str) -> bool:
    """Whether ``name`` lies in ``root``'s subtree (searched upwards from ``name``)."""
    if name not in graph.nodes:
        return False
    seen, todo = {name}, [name]
    while todo:
        for parent in graph._pred[todo.pop()]:
            if parent == root:
                return True
            if parent in graph.nodes and parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return False


def _check_conflicts(
    graph: BlockGraph, child: str, values: list[tuple[str, Edge, Perm, Perm]]
) -> None:
    """``bdrv_parent_perms_conflict``: every parent b's needs must be shared by every other a."""
    for a_parent, a_edge, _a_perm, a_shared in values:
        for b_parent, b_edge, b_perm, _b_shared in values:
            if a_edge is b_edge:
                continue
            missing = b_perm & ~a_shared
            if missing:
                raise PermissionConflict(
                    f"Permission conflict on node '{child}': permissions '{perm_names(missing)}' "
                    f"are both required by {parent_description(graph, b_parent)} "
                    f"(uses node '{child}' as '{b_edge.qemu_name}' child) and unshared by "
                    f"{parent_description(graph, a_parent)} (uses node '{child}' as "
                    f"'{a_edge.qemu_name}' child).",
                    rule="P3-perm-conflict",
                    subjects=(child, b_parent, a_parent),
                )
