"""Graph snapshots and their differences, in the vocabulary of QEMU's queries.

A snapshot records what ``x-debug-query-block-graph`` and
``query-named-block-nodes`` show: per node its driver, ``ro``, ``cache``,
``detect_zeroes`` and options; per edge ``(parent, name)`` its child, ``perm``
and ``shared-perm``. Parents that are not nodes are named as users know them
(``export:<id>``, ``device:<id>``, ``job:<id>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from txgraph.model.graph import BlockGraph
from txgraph.model.perm_bits import perm_list

__all__ = ["GraphSnapshot", "GraphDiff", "PreImage", "snapshot", "diff"]


@dataclass(frozen=True)
class GraphSnapshot:
    nodes: dict[str, dict[str, Any]]
    #: "parent/name" -> {"parent", "name", "child", "perm", "shared-perm"}
    edges: dict[str, dict[str, Any]]


@dataclass
class GraphDiff:
    nodes_added: list[dict[str, Any]] = field(default_factory=list)
    nodes_removed: list[dict[str, Any]] = field(default_factory=list)
    #: {"node", "changes": {key: [old, new]}}
    nodes_changed: list[dict[str, Any]] = field(default_factory=list)
    edges_added: list[dict[str, Any]] = field(default_factory=list)
    edges_removed: list[dict[str, Any]] = field(default_factory=list)
    #: {"parent", "name", "changes": {key: [old, new]}}
    edges_changed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(self.to_dict().values())

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "nodes-added": self.nodes_added,
            "nodes-removed": self.nodes_removed,
            "nodes-changed": self.nodes_changed,
            "edges-added": self.edges_added,
            "edges-removed": self.edges_removed,
            "edges-changed": self.edges_changed,
        }


def _parent_label(graph: BlockGraph, key: str) -> str:
    backend = graph.backends.get(key)
    if backend is None:
        return key
    if key.startswith("bb:export:"):
        return f"export:{key[len('bb:export:') :]}"
    if backend.kind.value == "job":
        return f"job:{backend.name}"
    return f"device:{backend.name}" if backend.name else key


_HIDDEN_OPTIONS = (
    "read-only",
    "cache.direct",
    "cache.no-flush",
    "detect-zeroes",
    "node-name",
    "driver",
)


def _node_entry(graph: BlockGraph, name: str) -> dict[str, Any]:
    from txgraph.ops.filenames import refresh_filename

    node = graph.nodes[name]
    refresh_filename(graph, name)
    return {
        "node-name": name,
        "drv": node.driver,
        "ro": node.read_only,
        "cache": {"direct": node.cache_direct, "no-flush": node.cache_no_flush},
        "detect_zeroes": node.detect_zeroes,
        "file": node.filename,
        "options": {k: v for k, v in node.options.items() if k not in _HIDDEN_OPTIONS},
    }


def _edge_entries(graph: BlockGraph, parent: str) -> dict[str, dict[str, Any]]:
    """The snapshot entries of ``parent``'s child edges (a node or a backend)."""
    if parent not in graph.g:
        return {}
    label = _parent_label(graph, parent)
    return {
        f"{label}/{edge.name}": {
            "parent": label,
            "name": edge.name,
            "child": child,
            "perm": perm_list(edge.perm),
            "shared-perm": perm_list(edge.shared),
        }
        for child, edge in graph.children(parent)
    }


def snapshot(graph: BlockGraph) -> GraphSnapshot:
    nodes = {name: _node_entry(graph, name) for name in graph.nodes}
    edges: dict[str, dict[str, Any]] = {}
    for parent, child, edge in graph.edges():
        label = _parent_label(graph, parent)
        edges[f"{label}/{edge.name}"] = {
            "parent": label,
            "name": edge.name,
            "child": child,
            "perm": perm_list(edge.perm),
            "shared-perm": perm_list(edge.shared),
        }
    return GraphSnapshot(nodes, edges)


class PreImage:
    """The part of a snapshot a step may change, taken just before it changes: O(change).

    Installed as a :class:`~txgraph.ops.journal.Journal` watcher for one plan
    step. Before the first change of a vertex it records that vertex's node
    entry and its child edges, and the node entries of its ancestors (a node's
    ``file`` name depends on its subtree). :meth:`diff` then compares those
    entries with the same entries after the step; everything else is
    unchanged, since every change goes through a Transaction (whose notes call
    the watcher). The result equals ``diff(snapshot(before), snapshot(after))``
    (checked against it by the plan tests with ``TXGRAPH_VERIFY_DIFF=1``).

    Owner: the thread running the plan step (the engine's command lock).
    """

    def __init__(self, graph: BlockGraph) -> None:
        self.graph = graph
        self.nodes: dict[str, dict[str, Any] | None] = {}
        self.parents: dict[str, dict[str, dict[str, Any]]] = {}

    def __call__(self, key: str) -> None:
        graph = self.graph
        if key not in self.parents:
            self.parents[key] = _edge_entries(graph, key)
        stack = [key]
        while stack:
            cur = stack.pop()
            if cur in self.nodes:
                continue
            if cur in graph.nodes:
                self.nodes[cur] = _node_entry(graph, cur)
                stack.extend(graph._pred[cur])
            elif cur == key and cur not in graph.backends:
                self.nodes[cur] = None  # not there yet (an add)

    def diff(self) -> GraphDiff:
        graph = self.graph
        before_nodes = {k: v for k, v in self.nodes.items() if v is not None}
        after_nodes = {k: _node_entry(graph, k) for k in self.nodes if k in graph.nodes}
        before_edges: dict[str, dict[str, Any]] = {}
        after_edges: dict[str, dict[str, Any]] = {}
        for parent, entries in self.parents.items():
            before_edges.update(entries)
            after_edges.update(_edge_entries(graph, parent))
        return diff(
            GraphSnapshot(before_nodes, before_edges), GraphSnapshot(after_nodes, after_edges)
        )


def _changes(old: dict[str, Any], new: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(set(old) | set(new)):
        if key in skip:
            continue
        a, b = old.get(key), new.get(key)
        if key == "options" and isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    out[f"options.{sub}"] = [a.get(sub), b.get(sub)]
        elif key == "cache" and isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    out[f"cache.{sub}"] = [a.get(sub), b.get(sub)]
        elif a != b:
            out[key] = [a, b]
    return out


def diff(before: GraphSnapshot, after: GraphSnapshot) -> GraphDiff:
    d = GraphDiff()
    for name in sorted(after.nodes.keys() - before.nodes.keys()):
        d.nodes_added.append(after.nodes[name])
    for name in sorted(before.nodes.keys() - after.nodes.keys()):
        d.nodes_removed.append(before.nodes[name])
    for name in sorted(before.nodes.keys() & after.nodes.keys()):
        changes = _changes(before.nodes[name], after.nodes[name], ("node-name",))
        if changes:
            d.nodes_changed.append({"node": name, "changes": changes})
    for key in sorted(after.edges.keys() - before.edges.keys()):
        d.edges_added.append(after.edges[key])
    for key in sorted(before.edges.keys() - after.edges.keys()):
        d.edges_removed.append(before.edges[key])
    for key in sorted(before.edges.keys() & after.edges.keys()):
        changes = _changes(before.edges[key], after.edges[key], ("parent", "name"))
        if changes:
            e = after.edges[key]
            d.edges_changed.append({"parent": e["parent"], "name": e["name"], "changes": changes})
    return d
