"""A peer's block graph in a canonical, comparable form, and target node definitions.

:func:`graph_state` reads what QEMU 7.2 itself reports — ``query-named-block-nodes``
(flat: driver, read-only, cache.direct), ``x-debug-query-block-graph`` (edges by
name with perm and shared-perm) and ``query-block-exports`` (which node each export
uses) — so the same function runs on txgraph's Engine and on qemu-storage-daemon,
and a synthesized sequence is checked on both by the same equality.

:func:`node_definitions` flattens the ``blockdev-add`` commands of a target file
into one definition per node with children by reference, as ``blockdev-reopen``
and a one-node ``blockdev-add`` want them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["GraphState", "graph_state", "node_definitions", "export_definitions"]

Execute = Callable[[dict[str, Any]], dict[str, Any]]
#: (nodes, node edges, exports): hashable
GraphState = tuple[
    tuple[tuple[str, str, bool, bool], ...],
    tuple[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], ...],
    tuple[tuple[str, str], ...],
]


def _ret(execute: Execute, name: str, **arguments: Any) -> Any:
    msg: dict[str, Any] = {"execute": name}
    if arguments:
        msg["arguments"] = arguments
    reply = execute(msg)
    if "return" not in reply:
        raise RuntimeError(f"{name}: {reply.get('error', reply)}")
    return reply["return"]


def graph_state(execute: Execute) -> GraphState:
    """The canonical state of the peer behind ``execute``.

    Node edges carry perm and shared-perm; an export is ``(id, node)``; the
    BlockBackend edges of exports are described by the export, not by edge.
    """
    nodes = tuple(
        sorted(
            (
                str(n["node-name"]),
                str(n["drv"]),
                bool(n["ro"]),
                bool(n.get("cache", {}).get("direct", False)),
            )
            for n in _ret(execute, "query-named-block-nodes", flat=True)
        )
    )
    graph = _ret(execute, "x-debug-query-block-graph")
    names = {v["id"]: v for v in graph["nodes"]}
    edges = []
    for e in graph["edges"]:
        parent, child = names[e["parent"]], names[e["child"]]
        if parent["type"] != "block-driver":
            continue
        edges.append(
            (
                str(parent["name"]),
                str(e["name"]),
                str(child["name"]),
                tuple(sorted(e["perm"])),
                tuple(sorted(e["shared-perm"])),
            )
        )
    exports = tuple(
        sorted((str(x["id"]), str(x["node-name"])) for x in _ret(execute, "query-block-exports"))
    )
    return nodes, tuple(sorted(edges)), exports


def _flatten(arguments: dict[str, Any], out: dict[str, dict[str, Any]]) -> str | None:
    """Record ``arguments`` and every nested node definition; return the node's name."""
    flat: dict[str, Any] = {}
    for key, value in arguments.items():
        if isinstance(value, dict) and "driver" in value:
            child = _flatten(value, out)
            flat[key] = child if child is not None else value
        else:
            flat[key] = value
    name = flat.get("node-name")
    if isinstance(name, str):
        out[name] = flat
    return name if isinstance(name, str) else None


def node_definitions(commands: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """node-name -> its flat ``blockdev-add`` arguments (nested children by name)."""
    out: dict[str, dict[str, Any]] = {}
    for cmd in commands:
        if cmd.get("execute") == "blockdev-add":
            _flatten(dict(cmd.get("arguments", {})), out)
    return out


def export_definitions(commands: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """export id -> its ``block-export-add`` arguments."""
    return {
        str(c["arguments"]["id"]): dict(c["arguments"])
        for c in commands
        if c.get("execute") == "block-export-add"
    }
