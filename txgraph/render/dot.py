"""Graphviz DOT text for a :class:`~txgraph.render.picture.Picture`.

The layout follows QEMU's own ``scripts/render_block_graph.py`` convention —
parents above children, BlockBackends and jobs as distinct shapes, edges
labelled with the child name and permissions — and adds what that script
cannot show: read-only mode, implicitly opened nodes (dashed), job-implicit
filters, frozen links (bold, marked ``frozen``), and a highlight of what a
plan step adds (green), changes (orange) or removes (red).
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from txgraph.render.picture import Changes, EdgeView, NodeView, ParentView, Picture

__all__ = ["to_dot", "ADDED", "CHANGED", "REMOVED"]

ADDED = "#1a7f37"
CHANGED = "#d4760a"
REMOVED = "#cf222e"
_PLAIN = "#24292f"
_FROZEN = "#0550ae"
_SHAPES = {"export": "house", "device": "invhouse", "job": "component"}


def _id(name: str) -> str:
    """A DOT identifier for any node name (quoted; backslashes and quotes escaped)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _perms(names: Iterable[str]) -> str:
    return ",".join(names) or "-"


def _short(path: str, limit: int = 48) -> str:
    return path if len(path) <= limit else "…" + path[-(limit - 1) :]


def _node_line(node: NodeView, color: str) -> str:
    flags = ["ro" if node.read_only else "rw"]
    if node.implicit_open:
        flags.append("implicit")
    if node.job_implicit:
        flags.append("job filter")
    rows = [f"<B>{html.escape(node.name)}</B>", f"{html.escape(node.driver)} · {' · '.join(flags)}"]
    if node.filename:
        rows.append(f'<FONT POINT-SIZE="9">{html.escape(_short(node.filename))}</FONT>')
    label = "<" + "<BR/>".join(rows) + ">"
    style = "rounded,dashed" if node.implicit_open or node.job_implicit else "rounded"
    return (
        f'  {_id(node.name)} [shape=box style="{style}" color="{color}" '
        f'fontcolor="{color}" label={label}];'
    )


def _parent_line(parent: ParentView, color: str) -> str:
    return (
        f'  {_id(parent.key)} [shape={_SHAPES.get(parent.kind, "box")} color="{color}" '
        f'fontcolor="{color}" label=<<B>{html.escape(parent.label)}</B>>];'
    )


def _edge_line(edge: EdgeView, color: str) -> str:
    rows = [
        f"<B>{html.escape(edge.name)}</B>",
        f"perm {html.escape(_perms(edge.perm))}",
        f"shared {html.escape(_perms(edge.shared))}",
    ]
    style = "solid"
    if edge.frozen:
        rows.append("frozen")
        style = "bold"
        color = _FROZEN if color == _PLAIN else color
    label = '<<FONT POINT-SIZE="9">' + "<BR/>".join(rows) + "</FONT>>"
    return (
        f'  {_id(edge.parent)} -> {_id(edge.child)} [label={label} color="{color}" '
        f'fontcolor="{color}" style={style}];'
    )


def to_dot(
    picture: Picture,
    *,
    highlight: Changes | None = None,
    side: str = "after",
    title: str | None = None,
) -> str:
    """DOT for ``picture``; with ``highlight``, colour what the change touched.

    ``side`` says which state ``picture`` is: on the ``"before"`` side the
    removed nodes and edges are red, on the ``"after"`` side added ones are
    green and changed ones orange.
    """

    def color(key: str, added: set[str], changed: set[str], removed: set[str]) -> str:
        if highlight is None:
            return _PLAIN
        if side == "before":
            return REMOVED if key in removed else _PLAIN
        return ADDED if key in added else CHANGED if key in changed else _PLAIN

    def node_color(name: str) -> str:
        h = highlight or Changes()
        return color(name, h.nodes_added, h.nodes_changed, h.nodes_removed)

    def edge_color(key: str) -> str:
        h = highlight or Changes()
        return color(key, h.edges_added, h.edges_changed, h.edges_removed)

    lines = [
        "digraph block_graph {",
        "  rankdir=TB;",
        '  node [fontname="Helvetica" fontsize=11];',
        '  edge [fontname="Helvetica" fontsize=9];',
    ]
    if title:
        lines.append(f"  label={_id(title)}; labelloc=t;")
    for key in sorted(picture.parents):
        lines.append(_parent_line(picture.parents[key], _PLAIN))
    for name in sorted(picture.nodes):
        lines.append(_node_line(picture.nodes[name], node_color(name)))
    for key in sorted(picture.edges):
        lines.append(_edge_line(picture.edges[key], edge_color(key)))
    lines.append("}")
    return "\n".join(lines) + "\n"
