"""External snapshots: blockdev-snapshot and blockdev-snapshot-sync.

Reproduces blockdev.c ``external_snapshot_prepare`` / ``_commit`` / ``_abort``
/ ``_clean`` and block.c ``bdrv_append`` (reference/qemu-graph.md §3.2,
§3.3, §4.2): the checks in QEMU's order and words, then the overlay gets the
old node as its ``backing`` and takes over every parent of the old node that
can move (not job edges, not the overlay's own new edge), permissions are
refreshed on the final graph, and — as QEMU's commit does — the old node is
switched to read-only with errors ignored.

The read-only switch is staged as the last step of the transaction (see
:func:`txgraph.ops.deferred.defer_to_end`), so when a later action of a QMP
``transaction`` fails, the abort undoes it together with everything else;
QEMU gets the same result by doing the switch only in its commit phase.

What QEMU does not undo is not undone here either: the image file created by
``blockdev-snapshot-sync`` stays on disk (§4.3).
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import BlockError
from txgraph.model.drivers import driver_spec
from txgraph.model.node import Edge, OpenFlag
from txgraph.model.options import Provenance, Source
from txgraph.model.perm_bits import Perm, Role
from txgraph.model.perm_refresh import compute_refresh
from txgraph.ops.blockdev import op_blocker, unref_node
from txgraph.ops.deferred import defer_to_end
from txgraph.ops.filenames import refresh_filename
from txgraph.ops.inherit import OptionSet
from txgraph.ops.open import Opener, lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.replace import replace_node_noperm
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

__all__ = [
    "stage_blockdev_snapshot",
    "stage_blockdev_snapshot_sync",
    "bdrv_append",
    "reopen_set_read_only",
    "set_read_only_ignoring_errors",
]


def stage_blockdev_snapshot(session: Session, tx: Transaction, args: dict[str, Any]) -> None:
    """``blockdev-snapshot {node, overlay}``: the overlay is an existing node."""
    old = _prepare_old(session, tx, args["node"], args["node"])
    overlay = lookup_bs(session, args["overlay"], args["overlay"])
    _append_overlay(session, tx, old, overlay)


def stage_blockdev_snapshot_sync(session: Session, tx: Transaction, args: dict[str, Any]) -> None:
    """``blockdev-snapshot-sync``: create (or open, mode=existing) the overlay image, then append.

    The new node is not monitor-owned: QEMU's ``external_snapshot_clean``
    drops the opening reference, so an overlay nobody ended up using (the old
    node had no parents) is closed again at once.
    """
    device, node_name = args.get("device"), args.get("node-name")
    old = _prepare_old(session, tx, device, node_name)
    fmt = args.get("format", "qcow2")
    snapshot_node_name = args.get("snapshot-node-name")
    # C's NULL tests: an empty name is present (and refused later by bdrv_open)
    if node_name is not None and snapshot_node_name is None:
        raise BlockError("New overlay node-name missing")
    if snapshot_node_name is not None and _name_in_use(session, snapshot_node_name):
        raise BlockError("New overlay node-name already in use")
    old_node = session.graph.nodes[old]
    flags = old_node.flags & ~(OpenFlag.SNAPSHOT | OpenFlag.COPY_ON_READ) | OpenFlag.NO_BACKING
    path = args["snapshot-file"]
    if args.get("mode", "absolute-paths") != "existing":
        _create_image(session, tx, old, path, fmt)
    options = OptionSet()
    explicit = Provenance(Source.EXPLICIT, detail="blockdev-snapshot-sync")
    if snapshot_node_name is not None:
        options.put("node-name", snapshot_node_name, explicit)
    options.put("driver", fmt, explicit)
    # bdrv_open() of the new image: flags inherited from the old node, no backing opened.
    overlay = Opener(session, tx).open_inherit(
        path, None, options, flags & ~OpenFlag.PROTOCOL, None, Role.NONE, None, True
    )
    _append_overlay(session, tx, old, overlay)

    def drop_if_unused() -> None:
        # QEMU drops its reference to the new overlay only when the transaction
        # finishes; until then later actions still see it (and its backing link).
        if overlay in session.graph.nodes and session.graph.refcount(overlay) == 0:
            unref_node(session, tx, overlay)

    defer_to_end(tx, drop_if_unused)


def _name_in_use(session: Session, name: str) -> bool:
    """``bdrv_lookup_bs(name, name, NULL)``: a device id or a node-name."""
    if name in session.graph.nodes:
        return True
    # blk_by_name: only named (monitor) BlockBackends; an export's anonymous one has no name
    return any(
        b.name and b.name == name and b.kind.value == "root"
        for b in session.graph.backends.values()
    )


def _prepare_old(
    session: Session, tx: Transaction, device: str | None, node_name: str | None
) -> str:
    """``external_snapshot_prepare`` up to its checks: the lookup, the drain of the node
    found (``bdrv_drained_begin``, paired with ``.clean``: the jobs above it pause for the
    rest of the transaction, whatever its outcome), the EXTERNAL_SNAPSHOT op blocker."""
    old = lookup_bs(session, device, node_name)
    tx.drained_nodes.add(old)
    reason = op_blocker(session, old)
    if reason is not None:
        raise BlockError(f"Node '{old}' is busy: {reason}", rule="op-blocker", subjects=(old,))
    return old


#: auto node-names ``bdrv_img_create`` consumes per format (observed on QSD 7.2)
_CREATE_OPENS = {"qcow2": 3}


def _create_image(session: Session, tx: Transaction, old: str, path: str, fmt: str) -> None:
    """``bdrv_img_create``: an image of the old node's size whose backing is the old node's file.

    ``-u`` because QEMU passes BDRV_O_NO_BACKING: the backing is not opened
    (it is in use, and locked, by this very process).
    """
    graph = session.graph
    refresh_filename(graph, old)
    node = graph.nodes[old]
    size = tx.rt.info(old).virtual_size
    tx.rt.create_image(path, fmt, size, backing=node.filename, backing_format=node.driver)
    # QEMU creates the image in-process and, for qcow2, opens it three times
    # while doing so (the protocol node, then the format twice: to write the
    # header, then to flush it); each open consumed an auto node-name.
    for _ in range(_CREATE_OPENS.get(fmt, 0)):
        session.namer.next()


def _append_overlay(session: Session, tx: Transaction, old: str, overlay: str) -> None:
    """The overlay checks of ``external_snapshot_prepare``, then ``bdrv_append``."""
    graph = session.graph
    perm = Perm.NONE
    for _parent, edge in graph.parents(overlay):
        perm |= edge.perm
    if perm & Perm.CONSISTENT_READ:
        raise BlockError("The overlay is already in use")
    spec = driver_spec(graph.nodes[overlay].driver)
    if spec is not None and spec.is_filter:
        raise BlockError("Filters cannot be used as overlays")
    if graph.backing_child(overlay) is not None:
        raise BlockError("The overlay already has a backing image")
    if spec is None or not spec.supports_backing:
        raise BlockError("The overlay does not support backing images")
    bdrv_append(session, tx, overlay, old)
    node = graph.nodes[old]
    if not node.flags & OpenFlag.COPY_ON_READ:
        defer_to_end(tx, lambda: set_read_only_ignoring_errors(session, tx, old))


def bdrv_append(session: Session, tx: Transaction, new: str, top: str) -> None:
    """``bdrv_append``: ``top`` becomes ``new``'s backing; ``top``'s parents move to ``new``.

    The new backing edge is attached first (so it heads ``top``'s parent
    list), then ``bdrv_replace_node_noperm`` with auto-skip leaves that very
    edge alone (it lies in ``new``'s subtree), then one permission refresh of
    ``new``'s subtree. ``bdrv_backing_attach`` also clears NO_BACKING.
    """
    graph = session.graph
    node = graph.nodes[new]
    spec = driver_spec(node.driver)
    role = Role.FILTERED | Role.PRIMARY if spec is not None and spec.is_filter else Role.COW
    if graph.has_descendant(top, new):
        raise BlockError(
            f"Making '{top}' a backing child of '{new}' would create a cycle",
            rule="G1-acyclic",
            subjects=(new, top),
        )
    tx.attach(new, top, Edge(name="backing", role=role))
    if node.flags & OpenFlag.NO_BACKING:
        tx.set(node, "flags", node.flags & ~OpenFlag.NO_BACKING)
    replace_node_noperm(session, tx, top, new, auto_skip=True)
    refresh_perms(session, tx, [new])


class _NoSpec:
    reopenable = False


_NO_SPEC = _NoSpec()


def _reopen_set(session: Session, name: str) -> list[str]:
    """The nodes ``bdrv_reopen_set_read_only`` reopens: the node and, recursively,
    the children it created implicitly whose read-only is not their own choice."""
    graph = session.graph
    out = [name]
    for child, edge in graph.children(name):
        cnode = graph.nodes[child]
        if edge.role & Role.COW:
            continue  # a backing child's read-only is forced on (bdrv_backing_options)
        if cnode.inherits_from == name and "read-only" not in cnode.explicit and child not in out:
            out.extend(c for c in _reopen_set(session, child) if c not in out)
    return out


def set_read_only_ignoring_errors(session: Session, tx: Transaction, name: str) -> None:
    """``bdrv_reopen_set_read_only(bs, true, NULL)`` as ``external_snapshot_commit`` calls it.

    The node and its implicitly created children become read-only and their
    child edges drop write/resize. If the permission check refuses (a writer
    still uses the node), nothing changes and no error is reported, as in
    QEMU. The check runs before any staged graph change, so a refusal only
    has to roll back the image locks it took, done here. The data-plane switch
    is a reopen prepare (validated now) committed with the transaction's delta.
    """
    try:
        reopen_set_read_only(
            session,
            tx,
            name,
            True,
            detail="made read-only by an external snapshot (bdrv_reopen_set_read_only)",
        )
    except BlockError:
        return  # refused: ignored, as external_snapshot_commit ignores it


def reopen_set_read_only(
    session: Session, tx: Transaction, name: str, read_only: bool, *, detail: str
) -> None:
    """``bdrv_reopen_set_read_only(bs, read_only, errp)``: the node and the children it
    created implicitly change read-only; a refusal raises and changes nothing."""
    graph = session.graph
    if name not in graph.nodes:
        return
    reopen_set = _reopen_set(session, name)
    # bdrv_reopen_prepare fails for drivers without reopen support (quorum,
    # copy-on-read...): the whole reopen fails.
    if any(not (driver_spec(graph.nodes[n].driver) or _NO_SPEC).reopenable for n in reopen_set):
        raise BlockError(
            f"Block format '{graph.nodes[name].driver}' used by node '{name}' "
            "does not support reopening files"
        )
    targets = [n for n in reopen_set if graph.nodes[n].read_only != read_only]
    if not targets:
        # Nothing changes mode, but QEMU reopens anyway and the option it passed is now
        # one of the node's own: a later reopen that keeps old options keeps it too
        # (bdrv_reopen_queue_child ranks it above what a parent would pass down).
        _record_explicit_read_only(tx, graph.nodes[name], read_only, detail)
        return
    target_set = set(targets)
    # The locks are changed on the current descriptors now; when the reopen
    # commits with a new descriptor the Runtime moves them to it.
    lock_undos: list[Any] = []

    def driver_check(node: Any, perm: Perm, shared: Perm) -> None:
        undo = tx.rt.check_perm_undo(node.name, int(perm), int(shared))
        if undo is not None:
            lock_undos.append(undo)

    def writable_after(node: Any) -> bool:
        if node.name in target_set:
            return not read_only and not node.flags & OpenFlag.INACTIVE
        return bool(node.writable)

    try:
        # every node of the reopen set is checked (bdrv_list_refresh_perms over the
        # queue): a child made read-only may have another writer (a copy-on-read
        # filter) even where the edges from the snapshotted node keep their values
        roots = [name, *(t for t in targets if t != name)]
        changes = compute_refresh(
            graph,
            roots,
            writable_after=writable_after,
            driver_check=driver_check,
            stale=tx.lost_parents,
        )
        tx.rt.set_read_only([t for t in targets if tx.rt.knows(t)], read_only)
    except BaseException:
        for undo in reversed(lock_undos):
            undo()
        raise
    for undo in lock_undos:
        tx.undo(undo)
    for target in targets:
        node = graph.nodes[target]
        tx.set(
            node, "flags", node.flags & ~OpenFlag.RDWR if read_only else node.flags | OpenFlag.RDWR
        )
        options = dict(node.options)
        options["read-only"] = read_only
        tx.set(node, "options", options)
        if target == name:
            _record_explicit_read_only(tx, node, read_only, detail)
            continue
        parent = node.inherits_from
        edge = (
            next((e.name for c, e in graph.children(parent) if c == target), None)
            if parent is not None
            else None
        )
        prov = dict(node.provenance)
        prov["read-only"] = Provenance(Source.INHERITED, parent=parent, edge=edge, detail=detail)
        tx.set(node, "provenance", prov)
    for change in changes:
        tx.set_edge_perm(change.parent, change.name, change.perm, change.shared)


def _record_explicit_read_only(tx: Transaction, node: Any, read_only: bool, detail: str) -> None:
    """``read-only`` becomes one of the node's explicit options, as
    ``bdrv_reopen_set_read_only`` leaves it (its one option is passed explicitly)."""
    explicit = dict(node.explicit)
    explicit["read-only"] = read_only
    tx.set(node, "explicit", explicit)
    prov = dict(node.provenance)
    prov["read-only"] = Provenance(Source.EXPLICIT, detail=detail)
    tx.set(node, "provenance", prov)
