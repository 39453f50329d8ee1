"""QMP commands that reconfigure a live graph: snapshots, quorum, replace, filters, transaction.

QEMU 7.2 commands (arguments already validated against QSD's schema):
``blockdev-snapshot``, ``blockdev-snapshot-sync``, ``x-blockdev-change``,
``transaction`` (QEMU's action types only, exactly as QSD).

txgraph extensions (not in QSD's schema, so their arguments are validated
here with QAPI's error texts and member paths):

* ``x-blockdev-replace`` — the upstream v9 ``blockdev-replace`` proposal
  (``blockdev-replace`` itself stays unknown, as in QSD 7.2);
* ``x-txgraph-replace-edges`` — replace-node with a parents mode, or a list of edges;
* ``x-txgraph-insert-filter`` / ``x-txgraph-remove-filter``;
* ``x-txgraph-transaction`` — ``transaction`` that also accepts every txgraph
  operation as an action type. It is a separate command because QSD's own
  ``transaction`` refuses unknown action types before running anything
  ("Parameter 'type' does not accept value ..."), and an extension must not
  change what a QEMU command answers.
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import QAPIError
from txgraph.model.drivers import driver_spec
from txgraph.ops.filters import (
    filtered_child_name,
    stage_insert_filter,
    stage_remove_filter,
)
from txgraph.jobs.backup import TRANSACTION_ACTIONS as JOB_ACTIONS
from txgraph.ops.qmp_transaction import EXTENSION_ACTIONS, run_transaction
from txgraph.ops.quorum import stage_x_blockdev_change
from txgraph.ops.replace import stage_blockdev_replace, stage_replace_edges
from txgraph.qmp.command_table import CommandContext, command
from txgraph.qmp.qapi import _schema, _Visitor

__all__ = ["validate_extension_action", "REPLACE_SCHEMA", "REPLACE_EDGES_SCHEMA",
           "INSERT_FILTER_SCHEMA", "REMOVE_FILTER_SCHEMA"]

# -- a small QAPI-style validator for the extension commands ------------------------------
# A member spec is (name, kind, required); kind is "str", "object", ("enum", values)
# or ("list", member specs) for a list of objects.
Kind = Any
MemberSpec = tuple[str, Kind, bool]
_Path = tuple[str | int, ...]

_EDGE_SPEC: list[MemberSpec] = [("parent", "str", True), ("child-name", "str", True)]
REPLACE_SCHEMA: dict[str, list[MemberSpec]] = {
    "": [("parent-type", ("enum", ("driver", "export")), True), ("new-child", "str", True)],
    "driver": [("node-name", "str", True), ("child", "str", True)],
    "export": [("export-id", "str", True)],
}
REPLACE_EDGES_SCHEMA: list[MemberSpec] = [
    ("child", "str", False), ("parents-mode", ("enum", ("auto", "all", "exactly-one")), False),
    ("edges", ("list", _EDGE_SPEC), False), ("new-child", "str", True)]
INSERT_FILTER_SCHEMA: list[MemberSpec] = [
    ("node", "str", True), ("filter", "object", True), ("edges", ("list", _EDGE_SPEC), False)]
REMOVE_FILTER_SCHEMA: list[MemberSpec] = [("node", "str", True)]


def _render(path: _Path) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out


def _json_type(kind: Kind) -> str:
    if kind == "object" or isinstance(kind, tuple) and kind[0] == "object":
        return "object"
    if isinstance(kind, tuple) and kind[0] == "list":
        return "array"
    return "string"


def _check_value(kind: Kind, value: Any, path: _Path) -> Any:
    if kind == "str" or isinstance(kind, tuple) and kind[0] == "enum":
        if not isinstance(value, str):
            raise QAPIError(f"Invalid parameter type for '{_render(path)}', expected: string")
        if isinstance(kind, tuple) and value not in kind[1]:
            raise QAPIError(f"Parameter '{path[-1]}' does not accept value '{value}'")
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise QAPIError(f"Invalid parameter type for '{_render(path)}', expected: object")
        return value
    if not isinstance(value, list):
        raise QAPIError(f"Invalid parameter type for '{_render(path)}', expected: array")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise QAPIError(f"Invalid parameter type for '{_render((*path, i))}', expected: object")
        out.append(_check_members(kind[1], item, (*path, i)))
    return out


def _check_members(spec: list[MemberSpec], value: dict[str, Any], path: _Path,
                   leftovers: bool = True) -> dict[str, Any]:
    """Members in spec order (first error wins), then any unexpected member."""
    result: dict[str, Any] = {}
    for name, kind, required in spec:
        if name not in value:
            if required:
                raise QAPIError(f"Parameter '{_render((*path, name))}' is missing")
            continue
        result[name] = _check_value(kind, value[name], (*path, name))
    if leftovers:
        for key in value:
            if key not in result:
                raise QAPIError(f"Parameter '{_render((*path, key))}' is unexpected")
    return result


def _check_union(schema: dict[str, list[MemberSpec]], tag: str, value: dict[str, Any],
                 path: _Path) -> dict[str, Any]:
    result = _check_members(schema[""], value, path, leftovers=False)
    result.update(_check_members(schema[result[tag]], value, path, leftovers=False))
    for key in value:
        if key not in result:
            raise QAPIError(f"Parameter '{_render((*path, key))}' is unexpected")
    return result


def _schema_visit(command_name: str, value: Any, path: _Path) -> dict[str, Any]:
    """Validate ``value`` as the arguments of a QSD command, errors naming ``path``."""
    schema = _schema()
    if not isinstance(value, dict):
        raise QAPIError(f"Invalid parameter type for '{_render(path)}', expected: object")
    return _Visitor(schema).visit_object(schema.commands[command_name]["arg-type"], value, path)


def _check_replace_edges(value: dict[str, Any], path: _Path) -> dict[str, Any]:
    args = _check_members(REPLACE_EDGES_SCHEMA, value, path)
    if "child" in args and "edges" in args:
        raise QAPIError("The parameters child and edges are in conflict")
    if "child" not in args and "edges" not in args:
        raise QAPIError("Either child or edges must be specified")
    if "edges" in args and "parents-mode" in args:
        raise QAPIError("The parameters parents-mode and edges are in conflict")
    return args


def _check_insert_filter(value: dict[str, Any], path: _Path) -> dict[str, Any]:
    args = _check_members(INSERT_FILTER_SCHEMA, value, path)
    options = dict(args["filter"])
    driver = options.get("driver")
    if isinstance(driver, str) and driver_spec(driver) is not None:
        # A known non-filter is refused before its options are judged;
        # the filtered child defaults to the node the filter goes above.
        options.setdefault(filtered_child_name(driver), args["node"])
    args["filter"] = _schema_visit("blockdev-add", options, (*path, "filter"))
    return args


def _check_replace(value: dict[str, Any], path: _Path) -> dict[str, Any]:
    if "parent-type" in value:
        return _check_union(REPLACE_SCHEMA, "parent-type", value, path)
    return _check_replace_edges(value, path)


def validate_extension_action(kind: str, data: Any, path: _Path) -> dict[str, Any]:
    """Validate the ``data`` of one extension action of ``x-txgraph-transaction``."""
    if not isinstance(data, dict):
        raise QAPIError(f"Invalid parameter type for '{_render(path)}', expected: object")
    if kind == "x-txgraph-blockdev-add":
        return _schema_visit("blockdev-add", data, path)
    if kind == "x-txgraph-blockdev-del":
        return _schema_visit("blockdev-del", data, path)
    if kind == "x-txgraph-blockdev-reopen":
        return _schema_visit("blockdev-reopen", data, path)
    if kind == "x-blockdev-change":
        return _schema_visit("x-blockdev-change", data, path)
    if kind == "x-txgraph-replace":
        return _check_replace(data, path)
    if kind == "x-txgraph-insert-filter":
        return _check_insert_filter(data, path)
    if kind == "x-txgraph-remove-filter":
        return _check_members(REMOVE_FILTER_SCHEMA, data, path)
    raise AssertionError(kind)


def _check_transaction(args: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``x-txgraph-transaction``: QEMU actions by QSD's schema, extension actions by ours."""
    schema = _schema()
    arg_type = schema.by_name[schema.commands["transaction"]["arg-type"]]
    action_type = schema.by_name[arg_type["members"][0]["type"]]["element-type"]
    props_type = arg_type["members"][1]["type"]
    for key in args:
        if key not in ("actions", "properties"):
            raise QAPIError(f"Parameter '{key}' is unexpected")
    if "actions" not in args:
        raise QAPIError("Parameter 'actions' is missing")
    if not isinstance(args["actions"], list):
        raise QAPIError("Invalid parameter type for 'actions', expected: array")
    actions: list[dict[str, Any]] = []
    for i, action in enumerate(args["actions"]):
        path: _Path = ("actions", i)
        if isinstance(action, dict) and action.get("type") in EXTENSION_ACTIONS:
            for key in action:
                if key not in ("type", "data"):
                    raise QAPIError(f"Parameter '{_render((*path, key))}' is unexpected")
            if "data" not in action:
                raise QAPIError(f"Parameter '{_render((*path, 'data'))}' is missing")
            data = validate_extension_action(action["type"], action["data"], (*path, "data"))
            actions.append({"type": action["type"], "data": data})
        else:
            visitor = _Visitor(schema)
            actions.append(visitor.visit(action_type, action, path))
    props = _Visitor(schema).visit(props_type, args.get("properties", {}), ("properties",))
    return actions, props


# -- QEMU 7.2 commands --------------------------------------------------------------------
@command("blockdev-snapshot")
def _blockdev_snapshot(ctx: CommandContext, args: dict[str, Any]) -> Any:
    # QEMU runs it as a one-action transaction (qmp_blockdev_snapshot).
    run_transaction(ctx.session, [{"type": "blockdev-snapshot", "data": args}])
    return {}


@command("blockdev-snapshot-sync")
def _blockdev_snapshot_sync(ctx: CommandContext, args: dict[str, Any]) -> Any:
    run_transaction(ctx.session, [{"type": "blockdev-snapshot-sync", "data": args}])
    return {}


@command("x-blockdev-change")
def _x_blockdev_change(ctx: CommandContext, args: dict[str, Any]) -> Any:
    with ctx.session.transaction() as tx:
        stage_x_blockdev_change(ctx.session, tx, args)
    return {}


@command("transaction")
def _transaction(ctx: CommandContext, args: dict[str, Any]) -> Any:
    run_transaction(ctx.session, args["actions"], args.get("properties"), JOB_ACTIONS)
    return {}


# -- txgraph extensions -------------------------------------------------------------------
@command("x-blockdev-replace")
def _x_blockdev_replace(ctx: CommandContext, args: dict[str, Any]) -> Any:
    typed = _check_union(REPLACE_SCHEMA, "parent-type", args, ())
    with ctx.session.transaction() as tx:
        stage_blockdev_replace(ctx.session, tx, typed)
    return {}


@command("x-txgraph-replace-edges")
def _x_replace_edges(ctx: CommandContext, args: dict[str, Any]) -> Any:
    typed = _check_replace_edges(args, ())
    with ctx.session.transaction() as tx:
        moved = stage_replace_edges(ctx.session, tx, typed)
    return {"moved": [{"parent": _parent_name(ctx, p), "child-name": n} for p, n in moved]}


@command("x-txgraph-insert-filter")
def _x_insert_filter(ctx: CommandContext, args: dict[str, Any]) -> Any:
    typed = _check_insert_filter(args, ())
    with ctx.session.transaction() as tx:
        stage_insert_filter(ctx.session, tx, typed)
    return {}


@command("x-txgraph-remove-filter")
def _x_remove_filter(ctx: CommandContext, args: dict[str, Any]) -> Any:
    typed = _check_members(REMOVE_FILTER_SCHEMA, args, ())
    with ctx.session.transaction() as tx:
        stage_remove_filter(ctx.session, tx, typed)
    return {}


@command("x-txgraph-transaction")
def _x_transaction(ctx: CommandContext, args: dict[str, Any]) -> Any:
    actions, props = _check_transaction(args)
    run_transaction(ctx.session, actions, props, JOB_ACTIONS)
    return {}


def _parent_name(ctx: CommandContext, key: str) -> str:
    """A graph key as users name it: node-name, or the backend's id."""
    backend = ctx.session.graph.backends.get(key)
    return backend.name if backend is not None else key
