"""One step on several peers, recorded canonically and compared.

A :class:`StepRecord` is what one command produced on one peer: its canonical
reply and the canonical state after it (``query-named-block-nodes`` and
``x-debug-query-block-graph``). :func:`lockstep` runs one command on every
peer, each in its own directory, and :func:`compare_records` lists how two
records differ (empty when they agree).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from txgraph.oracle.canon import canon_reply, canon_text, substitute
from txgraph.oracle.peers import Peer

__all__ = ["StepRecord", "snapshot", "compare_records", "lockstep", "command"]


def command(execute: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """A QMP command message."""
    msg: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        msg["arguments"] = arguments
    return msg


@dataclass
@dataclass
class StepRecord:
    """What one step produced on one peer (all canonical)."""

    index: int
    command: str
    reply: Any
    nodes: Any
    graph: Any


def snapshot(peer: Peer, workdir: str, writes: bool) -> tuple[Any, Any, dict[str, str]]:
    """Query both state commands; also return canonical->real auto-name mapping."""
    q = command("query-named-block-nodes", {"flat": True})
    nodes_reply = peer.execute(q)
    graph_msg = command("x-debug-query-block-graph")
    graph_reply = peer.execute(graph_msg)
    auto: dict[str, str] = {}
    if isinstance(nodes_reply.get("return"), list):
        for n in nodes_reply["return"]:
            real = str(n.get("node-name", ""))
            if real.startswith("#"):
                auto[canon_text(real, None)] = real
    nodes = canon_reply(q, nodes_reply, workdir, writes)
    graph = canon_reply(graph_msg, graph_reply, workdir, writes)
    nodes = nodes.get("return", nodes) if isinstance(nodes, dict) else nodes
    graph = graph.get("return", graph) if isinstance(graph, dict) else graph
    return nodes, graph, auto


def _diff_values(a: Any, b: Any, path: str, out: list[str], limit: int = 12) -> None:
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: only in right: {json.dumps(b[k])[:300]}")
            elif k not in b:
                out.append(f"{p}: only in left: {json.dumps(a[k])[:300]}")
            else:
                _diff_values(a[k], b[k], p, out, limit)
    elif a != b:
        out.append(f"{path}: {json.dumps(a)[:400]}  !=  {json.dumps(b)[:400]}")


def _diff_graph(a: Any, b: Any, out: list[str]) -> None:
    if not (isinstance(a, dict) and isinstance(b, dict) and "nodes" in a and "nodes" in b):
        _diff_values(a, b, "graph", out)
        return
    for part in ("nodes", "edges"):
        ca = Counter(json.dumps(x) for x in a[part])
        cb = Counter(json.dumps(x) for x in b[part])
        for x in sorted((ca - cb).elements()):
            out.append(f"graph.{part}: only in left:  {x}")
        for x in sorted((cb - ca).elements()):
            out.append(f"graph.{part}: only in right: {x}")


def _is_error(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"error"}


def _diff_nodes(a: Any, b: Any, out: list[str]) -> None:
    if _is_error(a) or _is_error(b):
        out.append(f"nodes: {_short(a)}  !=  {_short(b)}")
        return
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    if only_a:
        out.append(f"nodes only in left:  {only_a}")
    if only_b:
        out.append(f"nodes only in right: {only_b}")
    for k in sorted(set(a) & set(b)):
        _diff_values(a[k], b[k], f"nodes[{k}]", out)


def _short(v: Any) -> str:
    if _is_error(v):
        return f"error {v['error'].get('class')}: {v['error'].get('desc')}"
    if isinstance(v, dict) and "nodes" in v and "edges" in v:
        return f"graph of {len(v['nodes'])} nodes/{len(v['edges'])} edges"
    if isinstance(v, dict):
        return f"{len(v)} nodes {sorted(v)[:8]}"
    return json.dumps(v)[:200]


def compare_records(a: StepRecord, b: StepRecord) -> list[str]:
    """Differences between the same step on two peers (empty list when equal)."""
    out: list[str] = []
    if a.reply is not None and b.reply is not None and a.reply != b.reply:
        if _is_error(a.reply) != _is_error(b.reply):
            out.append(
                f"reply: {_short(a.reply) if _is_error(a.reply) else json.dumps(a.reply)[:300]}"
                f"  !=  {_short(b.reply) if _is_error(b.reply) else json.dumps(b.reply)[:300]}"
            )
        else:
            _diff_values(a.reply, b.reply, "reply", out)
    if a.nodes != b.nodes:
        _diff_nodes(a.nodes, b.nodes, out)
    if a.graph != b.graph:
        if _is_error(a.graph) or _is_error(b.graph):
            out.append(f"graph: {_short(a.graph)}  !=  {_short(b.graph)}")
        else:
            _diff_graph(a.graph, b.graph, out)
    return out


def lockstep(
    peers: Sequence[Peer],
    dirs: Sequence[str],
    autos: list[dict[str, str]],
    history: list[str],
    message: dict[str, Any],
    writes: bool = False,
) -> tuple[list[StepRecord], list[str]]:
    """Run one command on every peer (each in its own directory), record and compare.

    The state machines' single step: ``history`` and each peer's auto-name map
    in ``autos`` are updated; returns the records and the diff of the first
    two peers (empty when they agree). ``writes``: something may have written to
    the images (a job, a guest), so their allocation-dependent sizes are not compared.
    """
    history.append(json.dumps(message))
    records = []
    for i, (peer, d) in enumerate(zip(peers, dirs)):
        sent = substitute(message, str(d), autos[i])
        reply = peer.execute(sent)
        nodes, graph, autos[i] = snapshot(peer, str(d), writes)
        records.append(
            StepRecord(
                len(history) - 1, history[-1], canon_reply(sent, reply, str(d)), nodes, graph
            )
        )
    return records, compare_records(records[0], records[1])
