"""Canonical forms of QMP replies and graph state, so two block layers can be compared.

The oracle of every differential check is a live qemu-storage-daemon 7.2; what
is compared is the canonical form of what it and txgraph answer:

* every string has the peer's working directory replaced by ``{dir}`` and QEMU's
  auto node names ``#block<counter><2 random digits>`` replaced by
  ``#block<counter>`` (txgraph emulates the counter, so this comparison is strict);
* ``x-debug-query-block-graph`` becomes sorted lists of nodes ``(name, type)`` and
  edges ``(parent, child, edge name, sorted perm, sorted shared-perm)``, numeric
  ids dropped, anonymous BlockBackends named after what they point to;
* ``query-named-block-nodes`` becomes ``{canonical name: projection}`` of the
  fields that define behaviour (:data:`NODE_FIELDS`, :data:`IMAGE_FIELDS`);
  ``actual-size`` only where no guest wrote.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

__all__ = [
    "NODE_FIELDS",
    "IMAGE_FIELDS",
    "canon_text",
    "canon_value",
    "canon_nodes",
    "canon_graph",
    "canon_reply",
    "substitute",
]

_AUTO = re.compile(r"#block(\d+)(\d\d)")

#: fields of a ``query-named-block-nodes`` entry compared per node (plus every bps*/iops*)
NODE_FIELDS = (
    "drv",
    "ro",
    "cache",
    "detect_zeroes",
    "file",
    "backing_file",
    "backing_file_depth",
    "encrypted",
    "write_threshold",
    "node-name",
)
#: fields of the ``image`` member compared per node (``actual-size`` handled separately)
IMAGE_FIELDS = (
    "virtual-size",
    "format",
    "filename",
    "cluster-size",
    "backing-filename",
    "backing-filename-format",
    "full-backing-filename",
    "format-specific",
    "dirty-flag",
    "encrypted",
)


def canon_text(s: str, workdir: str | None) -> str:
    """Replace the scenario directory by ``{dir}`` and strip auto-name random digits."""
    if workdir:
        s = s.replace(workdir, "{dir}")
        real = os.path.realpath(workdir)
        if real != workdir:
            s = s.replace(real, "{dir}")
    return _AUTO.sub(r"#block\1", s)


def canon_value(v: Any, workdir: str | None) -> Any:
    if isinstance(v, str):
        return canon_text(v, workdir)
    if isinstance(v, list):
        return [canon_value(x, workdir) for x in v]
    if isinstance(v, dict):
        return {canon_text(k, workdir): canon_value(x, workdir) for k, x in v.items()}
    return v


def _project_image(img: dict[str, Any], with_actual: bool, workdir: str | None) -> dict[str, Any]:
    out = {k: canon_value(img[k], workdir) for k in IMAGE_FIELDS if k in img}
    if with_actual and "actual-size" in img:
        out["actual-size"] = img["actual-size"]
    if "backing-image" in img:
        out["backing-image"] = _project_image(img["backing-image"], with_actual, workdir)
    return out


def _project_node(node: dict[str, Any], writes: bool, workdir: str | None) -> dict[str, Any]:
    out = {k: canon_value(node[k], workdir) for k in NODE_FIELDS if k in node}
    for k in node:
        if k.startswith(("bps", "iops")) or k == "group":
            out[k] = node[k]
    if "image" in node:
        # after guest writes st_blocks depends on the host filesystem's allocation timing
        # (seen: 4 KiB either way on ext4), even on a node that is read-only now
        with_actual = not writes
        out["image"] = _project_image(node["image"], with_actual, workdir)
    return out


def canon_nodes(
    nodes: list[dict[str, Any]], workdir: str | None, writes: bool = False
) -> dict[str, Any]:
    """``query-named-block-nodes`` return value -> {canonical name: projection}."""
    out: dict[str, Any] = {}
    for n in nodes:
        name = canon_text(str(n.get("node-name", "")), workdir)
        key = name
        i = 1
        while key in out:  # should never happen; keep both so a difference shows
            i += 1
            key = f"{name}#dup{i}"
        out[key] = _project_node(n, writes, workdir)
    return out


def canon_graph(graph: dict[str, Any], workdir: str | None) -> dict[str, list[Any]]:
    """``x-debug-query-block-graph`` return value -> sorted lists of nodes and edges (no ids)."""
    raw_nodes = graph.get("nodes", [])
    raw_edges = graph.get("edges", [])
    by_id: dict[Any, dict[str, Any]] = {n["id"]: n for n in raw_nodes}
    names: dict[Any, str] = {}
    for n in raw_nodes:
        if n.get("name"):
            names[n["id"]] = canon_text(n["name"], workdir)
    # anonymous backends/jobs: describe them by what they point to
    anon_count: Counter[str] = Counter()
    for n in sorted(raw_nodes, key=lambda n: str(n.get("id"))):
        if n["id"] in names:
            continue
        outs = sorted(
            f"{e['name']}->{canon_text(by_id.get(e['child'], {}).get('name') or '?', workdir)}"
            for e in raw_edges
            if e["parent"] == n["id"]
        )
        base = f"<{n.get('type')}:{','.join(outs)}>"
        anon_count[base] += 1
        names[n["id"]] = base if anon_count[base] == 1 else f"{base}#{anon_count[base]}"
    nodes = sorted([names[n["id"]], n.get("type")] for n in raw_nodes)
    edges = sorted(
        [
            names.get(e["parent"], "?"),
            names.get(e["child"], "?"),
            e.get("name"),
            sorted(e.get("perm", [])),
            sorted(e.get("shared-perm", [])),
        ]
        for e in raw_edges
    )
    return {"nodes": nodes, "edges": edges}


def canon_reply(
    message: Any, reply: dict[str, Any] | None, workdir: str | None, writes: bool = False
) -> Any:
    """A reply reduced to what must match: ``{"return": ...}`` or ``{"error": {class, desc}}``."""
    if reply is None:
        return None
    if "error" in reply:
        err = reply["error"]
        return {
            "error": {"class": err.get("class"), "desc": canon_text(str(err.get("desc")), workdir)}
        }
    if "return" not in reply:
        return {"unexpected": canon_value(reply, workdir)}
    ret = reply["return"]
    name = message.get("execute") if isinstance(message, dict) else None
    if name == "query-named-block-nodes" and isinstance(ret, list):
        return {"return": canon_nodes(ret, workdir, writes)}
    if name == "x-debug-query-block-graph" and isinstance(ret, dict):
        return {"return": canon_graph(ret, workdir)}
    return {"return": canon_value(ret, workdir)}


_PLACEHOLDER = re.compile(r"\{(#block\d+)\}")


def substitute(v: Any, workdir: str, auto: dict[str, str]) -> Any:
    """Put ``workdir`` for ``{dir}`` and each peer's real name for ``{#block<counter>}``."""
    if isinstance(v, str):
        v = v.replace("{dir}", workdir)
        return _PLACEHOLDER.sub(lambda m: auto.get(m.group(1), m.group(1) + "?unresolved"), v)
    if isinstance(v, list):
        return [substitute(x, workdir, auto) for x in v]
    if isinstance(v, dict):
        return {k: substitute(x, workdir, auto) for k, x in v.items()}
    return v
