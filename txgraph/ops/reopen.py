"""blockdev-reopen: QEMU 7.2's reopen queue, prepare and commit, as one transaction.

Reproduces ``qmp_blockdev_reopen``, ``bdrv_reopen_queue_child``,
``bdrv_reopen_multiple``, ``bdrv_reopen_prepare``,
``bdrv_reset_options_allowed``, ``bdrv_reopen_parse_file_or_backing``,
``bdrv_set_file_or_backing_noperm`` and ``bdrv_reopen_commit`` (block.c;
reference/qemu-options.md §6): options not given are reset (with QEMU's
exceptions), implicitly created children are re-queued and re-inherit from
their parent's *new* options while referenced children are left alone,
``backing``/``file`` may be re-pointed, everything else must be unchanged by
typed comparison, permissions are refreshed once over the whole queue, and the
list commits or fails as a whole.

Beyond QEMU, every re-resolved value gets a fresh provenance, and the
surprising resets (a read-only node becoming writable because ``read-only``
was omitted, and similar) are reported as structured warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from txgraph.errors import BlockError
from txgraph.model.drivers import RESETTABLE_COMMON_OPTIONS, driver_spec
from txgraph.model.node import BlockNode, Edge, OpenFlag, runtime_common_options
from txgraph.model.options import flatten, parse_bool, qdict_order
from txgraph.model.perm_bits import Role
from txgraph.ops.blockdev import unref_node
from txgraph.ops.drivers import reopen_prepare
from txgraph.ops.drivers.common import qemu_opts_string
from txgraph.ops.filenames import refresh_filename
from txgraph.ops.inherit import OptionSet
from txgraph.ops.open import lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.reopen_queue import ReopenEntry, ReopenQueue
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

__all__ = ["blockdev_reopen", "stage_blockdev_reopen", "ReopenWarning"]

#: options ``bdrv_reopen_prepare`` consumes itself (the rest must be unchanged)
_CONSUMED_COMMON = (
    "cache.direct",
    "cache.no-flush",
    "read-only",
    "auto-read-only",
    "discard",
    "detect-zeroes",
)


@dataclass(frozen=True)
class ReopenWarning:
    """A value a reopen changed although the request did not mention it."""

    node: str
    option: str
    old: Any
    new: Any
    sentence: str

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "option": self.option,
            "old": self.old,
            "new": self.new,
            "sentence": self.sentence,
        }


def blockdev_reopen(session: Session, options_list: list[dict[str, Any]]) -> list[ReopenWarning]:
    with session.transaction() as tx:
        return stage_blockdev_reopen(session, tx, options_list)


def stage_blockdev_reopen(
    session: Session, tx: Transaction, options_list: list[dict[str, Any]]
) -> list[ReopenWarning]:
    """``qmp_blockdev_reopen`` inside an open transaction."""
    queue = ReopenQueue(session)
    for item in options_list:
        name = item.get("node-name")
        if not isinstance(name, str):
            raise BlockError("node-name not specified")
        if name not in session.graph.nodes:
            raise BlockError(f"Failed to find node with node-name='{name}'")
        tx.drained_subtrees.add(name)  # qmp_blockdev_reopen: bdrv_subtree_drained_begin
        queue.queue(name, OptionSet.explicit(flatten(item)), Role.NONE, None, keep_old=False)
    before = {e.name: _snapshot(session.graph.nodes[e.name]) for e in queue.entries}
    for entry in queue.entries:
        _prepare(session, tx, queue, entry)
    refresh_list: list[str] = []
    for entry in queue.entries:
        refresh_list.insert(0, entry.name)
        for old in entry.old_children:
            refresh_list.insert(0, old)
    flags_after = {e.name: e.flags for e in queue.entries}

    def writable_after(node: BlockNode) -> bool:
        flags = flags_after.get(node.name, node.flags)
        return bool(flags & OpenFlag.RDWR) and not flags & OpenFlag.INACTIVE

    refresh_perms(
        session,
        tx,
        [n for n in refresh_list if n in session.graph.nodes],
        writable_after=writable_after,
    )
    for entry in reversed(queue.entries):
        _commit(session, tx, entry)
    for entry in queue.entries:
        for old in entry.old_children:
            if old in session.graph.nodes:
                unref_node(session, tx, old)
    for entry in queue.entries:
        if entry.name in session.graph.nodes:
            refresh_filename(session.graph, entry.name)
    return _warnings(session, queue, before)


def _prepare(session: Session, tx: Transaction, queue: ReopenQueue, entry: ReopenEntry) -> None:
    """``bdrv_reopen_prepare`` for one queued node (checks in QEMU's order)."""
    graph = session.graph
    node = graph.nodes[entry.name]
    spec = driver_spec(node.driver)
    work = dict(entry.options.values)
    for key in ("cache.direct", "cache.no-flush", "read-only", "auto-read-only", "force-share"):
        if key in work and parse_bool(work[key]) is None:
            raise BlockError(f"Parameter '{key}' expects 'on' or 'off'")
    for key in ("cache.direct", "cache.no-flush", "read-only", "auto-read-only"):
        work.pop(key, None)
    discard = work.pop("discard", None)
    if discard is not None:
        if discard in ("off", "ignore"):
            entry.flags &= ~OpenFlag.UNMAP
        elif discard in ("on", "unmap"):
            entry.flags |= OpenFlag.UNMAP
        else:
            raise BlockError("Invalid discard option")
    detect = work.pop("detect-zeroes", None)
    entry.detect_zeroes = "off" if detect is None else str(detect)
    if entry.detect_zeroes == "unmap" and not entry.flags & OpenFlag.UNMAP:
        raise BlockError(
            "setting detect-zeroes to unmap is not allowed without setting "
            "discard operation to unmap"
        )
    # node-name, driver and force-share go back through QemuOpts: as strings.
    for key in ("node-name", "driver", "force-share"):
        if key in work:
            work[key] = qemu_opts_string(work[key])
    if node.flags & OpenFlag.COPY_ON_READ and not entry.flags & OpenFlag.RDWR:
        raise BlockError(f"Can't set node '{node.name}' to r/o with copy-on-read enabled")
    if spec is None or not spec.reopenable:
        raise BlockError(
            f"Block format '{node.driver}' used by node '{node.name}' does not "
            "support reopening files"
        )
    for key in qdict_order(list(node.options)):
        if (
            key not in work
            and key not in RESETTABLE_COMMON_OPTIONS
            and key not in spec.mutable_opts
        ):
            raise BlockError(f"Option '{key}' cannot be reset to its default value")
    reopen_prepare(tx, session, node, entry, work)
    _runtime_reopen(tx, node, entry)
    if (
        spec.supports_backing
        and entry.backing_missing
        and (graph.backing_child(node.name) is not None or node.backing_file)
    ):
        raise BlockError(f"backing is missing for '{node.name}'")
    for is_backing in (True, False):
        key = "backing" if is_backing else "file"
        if key in work:
            _parse_file_or_backing(session, tx, entry, work[key], is_backing)
            del work[key]
    for key in qdict_order(list(work)):
        new = work[key]
        if isinstance(new, str):
            found = graph.child_edge(node.name, key)
            if found is not None and found[0] == new:
                continue
        old = node.options.get(key, _MISSING)
        if not _typed_equal(new, old):
            raise BlockError(f"Cannot change the option '{key}'")


_MISSING = object()


def _typed_equal(new: Any, old: Any) -> bool:
    """``qobject_is_equal``: values of different QObject types are never equal."""
    if old is _MISSING:
        return False
    if isinstance(new, bool) or isinstance(old, bool):
        return isinstance(new, bool) and isinstance(old, bool) and new == old
    if isinstance(new, (int, float)) and isinstance(old, (int, float)):
        return new == old
    return type(new) is type(old) and new == old


def _runtime_reopen(tx: Transaction, node: BlockNode, entry: ReopenEntry) -> None:
    """The driver's ``bdrv_reopen_prepare`` (it validates, nothing changes); the driver's
    commit is part of the transaction's delta."""
    if not tx.rt.knows(node.name):
        return
    new_options = {
        k: v for k, v in entry.options.values.items() if "." not in k or k.startswith("cache.")
    }
    # The settings bdrv_reopen_commit will install, typed (the driver parses them once).
    new_options.update(runtime_common_options(entry.flags, entry.detect_zeroes))
    tx.rt.reopen(node.name, new_options, not entry.flags & OpenFlag.RDWR)


def _parse_file_or_backing(
    session: Session, tx: Transaction, entry: ReopenEntry, value: Any, is_backing: bool
) -> None:
    """``bdrv_reopen_parse_file_or_backing`` + ``bdrv_set_file_or_backing_noperm``."""
    graph = session.graph
    node = graph.nodes[entry.name]
    spec = driver_spec(node.driver)
    assert spec is not None
    child_name = "backing" if is_backing else "file"
    old_edge = graph.child_edge(node.name, child_name)
    old_child = old_edge[0] if old_edge else None
    new_child: str | None
    if value is None:
        new_child = None
    else:
        new_child = lookup_bs(session, None, str(value))
        if graph.has_descendant(new_child, node.name):
            raise BlockError(
                f"Making '{value}' a {child_name} child of '{node.name}' would create a cycle"
            )
    if old_child == new_child:
        return
    if old_child is not None:
        if _skip_implicit_filters(session, old_child) == new_child:
            return
        if graph.nodes[old_child].implicit:
            raise BlockError(f"Cannot replace implicit {child_name} child of {node.name}")
    if spec.is_filter and old_child is None:
        raise BlockError(
            f"'{node.name}' is a {node.driver} filter node that does not support "
            f"a {child_name} child"
        )
    if old_edge is not None and old_edge[1].frozen:
        raise BlockError(
            f"Cannot change frozen '{child_name}' link from '{node.name}' to '{old_child}'"
        )
    if is_backing and not spec.is_filter and not spec.supports_backing:
        raise BlockError(
            f"Driver '{node.driver}' of node '{node.name}' does not support backing files"
        )
    if spec.is_filter:
        role = Role.FILTERED | Role.PRIMARY
    elif is_backing:
        role = Role.COW
    else:
        if old_edge is None:
            raise BlockError("Cannot set file child to format node without file child")
        role = old_edge[1].role
    update_inherits = new_child is not None and _inherits_from_recursive(
        session, new_child, node.name
    )
    if old_edge is not None:
        assert old_child is not None
        _unset_inherits_from(session, tx, node.name, old_child, child_name)
        tx.detach(node.name, child_name)
        entry.old_children.append(old_child)
    if new_child is not None:
        tx.attach(node.name, new_child, Edge(name=child_name, role=role))
        if update_inherits:
            tx.set(graph.nodes[new_child], "inherits_from", node.name)


def _skip_implicit_filters(session: Session, name: str) -> str:
    graph = session.graph
    while graph.nodes[name].implicit:
        nxt = graph.backing_child(name) or graph.file_child(name)
        if nxt is None:
            break
        name = nxt
    return name


def _inherits_from_recursive(session: Session, child: str, parent: str) -> bool:
    """``bdrv_inherits_from_recursive``: child inherits from parent, possibly via others."""
    nodes = session.graph.nodes
    cur: str | None = child
    while cur is not None and cur != parent:
        cur = nodes[cur].inherits_from if cur in nodes else None
    return cur == parent


def _unset_inherits_from(
    session: Session, tx: Transaction, root: str, child: str, edge_name: str
) -> None:
    """``bdrv_unset_inherits_from``: forget an implicit child once root stops referencing it."""
    graph = session.graph
    node = graph.nodes[child]
    if node.inherits_from == root:
        still = any(c == child and e.name != edge_name for c, e in graph.children(root))
        if not still:
            tx.set(node, "inherits_from", None)
    for grandchild, edge in graph.children(child):
        _unset_inherits_from(session, tx, root, grandchild, edge.name)


def _commit(session: Session, tx: Transaction, entry: ReopenEntry) -> None:
    """``bdrv_reopen_commit``: the node takes its new options, flags and detect-zeroes."""
    graph = session.graph
    node = graph.nodes[entry.name]
    options = dict(entry.options.values)
    explicit = dict(entry.explicit)
    provenance = {k: v for k, v in entry.options.prov.items() if k in options}
    child_names = {e.name for _c, e in graph.children(node.name)} | {"backing"}
    for d in (options, explicit, provenance):
        for key in child_names:
            d.pop(key, None)
    tx.set(node, "options", options)
    tx.set(node, "explicit", explicit)
    tx.set(node, "provenance", provenance)
    tx.set(node, "flags", entry.flags)
    tx.set(node, "detect_zeroes", entry.detect_zeroes)


def _snapshot(node: BlockNode) -> dict[str, Any]:
    return {
        "read-only": node.read_only,
        "cache.direct": node.cache_direct,
        "cache.no-flush": node.cache_no_flush,
        "detect-zeroes": node.detect_zeroes,
        "auto-read-only": bool(node.flags & OpenFlag.AUTO_RDONLY),
    }


def _warnings(
    session: Session, queue: ReopenQueue, before: dict[str, dict[str, Any]]
) -> list[ReopenWarning]:
    """Values that changed although the request for that node did not name them."""
    out: list[ReopenWarning] = []
    for entry in queue.entries:
        node = session.graph.nodes.get(entry.name)
        if node is None:
            continue
        after = _snapshot(node)
        for key, old in before[entry.name].items():
            new = after[key]
            if old == new or key in entry.given:
                continue
            why = node.provenance.get(key)
            reason = why.describe() if why else "reset to its default"
            if key == "read-only" and old and not new:
                sentence = (
                    f"'{entry.name}' became writable because 'read-only' was omitted ({reason})"
                )
            else:
                sentence = f"'{entry.name}': {key} changed from {old!r} to {new!r} ({reason})"
            out.append(ReopenWarning(entry.name, key, old, new, sentence))
    return out
