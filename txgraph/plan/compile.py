"""txgraph's extension steps as QEMU 7.2 command sequences (for ``txgraph apply --qmp``).

QEMU 7.2 has no command that moves an edge by itself. What it has, and what
every extension step compiles to:

* ``blockdev-reopen`` of a parent node with its options and the child option
  naming the new child (``bdrv_reopen_parse_file_or_backing`` re-points the
  ``file``/``backing`` edge; a reopen resets omitted options to their defaults,
  so every option the node holds now is given: its explicit options, its other
  children by name, and its resolved ``read-only``/``cache``/``detect-zeroes``);
* ``block-export-del`` + ``block-export-add`` of an export whose root must move
  (7.2 cannot re-target an export's BlockBackend; connected NBD clients are
  disconnected, and only the id and writability are known to carry over: the
  NBD export name and the other options, which no query shows, become QEMU's
  defaults; :func:`compile_step` says so in its notes);
* ``blockdev-add`` / ``blockdev-del`` for the filter itself;
* QEMU's own ``transaction`` for a group of QEMU action types only.

:func:`compile_step` returns the candidate orders of those commands; the caller
(:mod:`txgraph.plan.live`) dry-runs each on the scratch graph and takes the
first whose every intermediate state QEMU accepts, so a permission conflict of
one order is avoided when another order has none. A named BlockBackend (a
guest device) whose root must move, atomic groups of txgraph actions and job
wait points have no 7.2 form: :class:`CompileError` says so before anything is
sent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from txgraph.drive.qapi_types import typed_blockdev_options
from txgraph.errors import TxgraphError
from txgraph.model.drivers import driver_spec
from txgraph.model.node import ParentKind
from txgraph.model.perm_bits import Perm
from txgraph.ops.exports import export_backend_key
from txgraph.ops.filters import filtered_child_name
from txgraph.ops.session import Session
from txgraph.plan.format import Step

__all__ = ["CompileError", "Compiled", "compile_step", "EXTENSIONS", "MAX_ORDERS"]

#: the steps that are not QEMU 7.2 commands
EXTENSIONS = (
    "x-txgraph-insert-filter",
    "x-txgraph-remove-filter",
    "x-txgraph-replace-edges",
    "x-blockdev-replace",
    "x-txgraph-transaction",
    "x-txgraph-wait-job",
)
#: at most this many orders of the edge moves are tried (permutations grow fast)
MAX_ORDERS = 24
_RESOLVED = ("read-only", "cache.direct", "cache.no-flush", "detect-zeroes")


class CompileError(TxgraphError, ValueError):
    """An extension step that has no QEMU 7.2 command sequence."""


@dataclass
class Compiled:
    """One step's QEMU 7.2 form: candidate command orders, best first, and notes."""

    orders: list[list[dict[str, Any]]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Move:
    parent: str  # graph key of the parent (node-name, or an export's backend key)
    edge: str
    new_child: str


def _msg(execute: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"execute": execute, "arguments": arguments}


def reopen_options(session: Session, name: str, changes: dict[str, str]) -> dict[str, Any]:
    """The full ``blockdev-reopen`` options of node ``name`` with children ``changes`` re-pointed.

    Reopen (``bdrv_reopen_prepare`` with ``keep_old_opts`` false) resets every
    omitted option, so everything the node holds now is spelled out.
    """
    graph = session.graph
    node = graph.nodes[name]
    children = {edge.name: child for child, edge in graph.children(name)}
    kids = set(children) | {"file", "backing"}
    flat: dict[str, Any] = {
        k: v
        for k, v in node.explicit.items()
        if k.split(".")[0] not in kids and not k.startswith("children.")
    }
    flat["driver"] = node.driver
    flat["node-name"] = name
    for key in _RESOLVED:
        if key in node.options:
            flat[key] = node.options[key]
    for edge, child in children.items():
        if not edge.startswith("children."):
            flat[edge] = changes.get(edge, child)
    spec = driver_spec(node.driver)
    if spec is not None and spec.supports_backing and "backing" not in children:
        flat["backing"] = None
    backing = flat.pop("backing", "absent")
    typed = typed_blockdev_options(flat)
    if backing != "absent":
        typed["backing"] = backing
    return typed


def _move_commands(session: Session, move: _Move) -> list[dict[str, Any]]:
    graph = session.graph
    if move.parent in graph.nodes:
        if move.edge.startswith("children."):
            raise CompileError(
                f"QEMU 7.2 cannot re-point quorum child '{move.edge}' of '{move.parent}' "
                "by a reopen (use x-blockdev-change)"
            )
        options = reopen_options(session, move.parent, {move.edge: move.new_child})
        return [_msg("blockdev-reopen", {"options": [options]})]
    for export in session.exports.values():
        if export_backend_key(export.id) == move.parent:
            root = graph.backends[move.parent]
            add: dict[str, Any] = {
                "type": export.type,
                "id": export.id,
                "node-name": move.new_child,
                "writable": bool(root.perm & Perm.WRITE),
            }
            return [
                _msg("block-export-del", {"id": export.id}),
                _msg("block-export-add", add),
            ]
    other = graph.backends.get(move.parent)
    label = other.name if other is not None and other.name else move.parent
    raise CompileError(
        f"QEMU 7.2 has no command that moves the root of '{label}' to '{move.new_child}'"
    )


def _orders(
    session: Session,
    moves: list[_Move],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
) -> list[list[dict[str, Any]]]:
    """Candidate orders: ``before`` (the filter's blockdev-add), the moves in each order,
    ``after``; then the same with every export taken down before ``before`` and put back
    at the end, for a filter whose open alone would conflict with an export's
    permissions (QEMU 7.2 checks the filter as a second parent beside it)."""
    out: list[list[dict[str, Any]]] = []
    for perm in itertools.islice(itertools.permutations(moves), MAX_ORDERS):
        body = [c for m in perm for c in _move_commands(session, m)]
        out.append([*before, *body, *after])
    exports = [m for m in moves if m.parent not in session.graph.nodes]
    if before and exports:
        nodes = [m for m in moves if m.parent in session.graph.nodes]
        downs = [_move_commands(session, m) for m in exports]
        for perm in itertools.islice(itertools.permutations(nodes), MAX_ORDERS):
            body = [c for m in perm for c in _move_commands(session, m)]
            out.append([*(d[0] for d in downs), *before, *body, *(d[1] for d in downs), *after])
    return out


def _notes(session: Session, moves: list[_Move]) -> list[str]:
    return [
        f"export '{m.parent.removeprefix('bb:export:')}' is re-created on '{m.new_child}' "
        "(QEMU 7.2 cannot move an export: its NBD clients are disconnected; it keeps its id "
        "and writability, its other options, the NBD export name among them, become "
        "QEMU's defaults)"
        for m in moves
        if m.parent not in session.graph.nodes
    ]


def _movable(session: Session, node: str) -> list[tuple[str, str]]:
    return [
        (p, e.name) for p, e in session.graph.parents(node) if e.parent_kind is not ParentKind.JOB
    ]


def _edge_key(session: Session, parent: str) -> str:
    if parent in session.graph.nodes:
        return parent
    if parent in session.exports:
        return export_backend_key(parent)
    for key, backend in session.graph.backends.items():
        if backend.name == parent:
            return key
    raise CompileError(f"Parent '{parent}' not found: neither a node-name nor an export id")


def compile_step(session: Session, step: Step) -> Compiled | None:
    """The QEMU 7.2 form of ``step`` on ``session``'s graph (None: ``step`` is QEMU's own)."""
    args = step.arguments
    name = step.execute
    if step.actions is not None or name == "x-txgraph-transaction":
        actions = step.actions if step.actions is not None else list(args.get("actions", []))
        ext = [str(a.get("type")) for a in actions if str(a.get("type", "")).startswith("x-")]
        if ext:
            raise CompileError(
                f"the group's actions {ext} have no QEMU 7.2 form that keeps the group atomic"
            )
        return Compiled([[_msg("transaction", {"actions": actions})]])
    if name not in EXTENSIONS:
        return None
    if name == "x-txgraph-insert-filter":
        node, options = str(args["node"]), dict(args["filter"])
        key = filtered_child_name(str(options.get("driver")))
        options.setdefault(key, node)
        fname = options.get("node-name")
        if not isinstance(fname, str):
            raise CompileError("the filter needs a node-name to be inserted with QEMU 7.2 commands")
        if "edges" in args:
            pairs = [(_edge_key(session, e["parent"]), str(e["child-name"])) for e in args["edges"]]
        else:
            pairs = _movable(session, node)
        moves = [_Move(p, e, fname) for p, e in pairs]
        add = _msg("blockdev-add", options)
        return Compiled(_orders(session, moves, [add], []), _notes(session, moves))
    if name == "x-txgraph-remove-filter":
        fname = str(args["node"])
        graph = session.graph
        if fname not in graph.nodes:
            return Compiled([[_msg("blockdev-del", {"node-name": fname})]])  # QEMU's error
        found = graph.child_edge(fname, filtered_child_name(graph.nodes[fname].driver))
        if found is None:
            raise CompileError(f"Filter '{fname}' has no filtered child")
        moves = [_Move(p, e, found[0]) for p, e in _movable(session, fname)]
        tail = (
            [_msg("blockdev-del", {"node-name": fname})] if graph.nodes[fname].monitor_owned else []
        )
        return Compiled(_orders(session, moves, [], tail), _notes(session, moves))
    if name == "x-blockdev-replace":
        if args.get("parent-type") == "export":
            key = export_backend_key(str(args["export-id"]))
            moves = [_Move(key, "root", str(args["new-child"]))]
        else:
            moves = [_Move(str(args["node-name"]), str(args["child"]), str(args["new-child"]))]
        return Compiled(_orders(session, moves, [], []), _notes(session, moves))
    if name == "x-txgraph-replace-edges":
        new = str(args["new-child"])
        if "edges" in args:
            pairs = [(_edge_key(session, e["parent"]), str(e["child-name"])) for e in args["edges"]]
        else:
            child = str(args["child"])
            pairs = [
                (p, e)
                for p, e in _movable(session, child)
                if p not in session.graph.nodes or not session.graph.has_descendant(new, p)
            ]
        moves = [_Move(p, e, new) for p, e in pairs]
        return Compiled(_orders(session, moves, [], []), _notes(session, moves))
    raise CompileError(f"'{name}' steps are not applied to QEMU yet (no QEMU 7.2 form)")
