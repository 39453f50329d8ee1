"""Benchmark: a 20-step reconfiguration as one txgraph transaction vs 20 QMP commands on QSD.

The question measured: on a graph of N nodes, how long does it take to commit a
20-step reconfiguration (external snapshots, throttle-filter insertions,
reopens) with txgraph's ``x-txgraph-transaction``, against the same steps sent
to qemu-storage-daemon 7.2 as 20 separate QMP commands, the only way 7.2 has
(a filter goes in with ``blockdev-add`` + ``blockdev-reopen`` of its parent)?

Graph (identical on both peers, built untimed, setup commands pipelined in
batches): ``CHAINS`` device chains ``dev<j>(raw) -> top<j>(qcow2) -> tf<j>(file)``
on real qcow2 images, plus null-co nodes up to N. Each peer has its own image
directory (image locks are real). The steps, per chain ``j`` (5 x ``CHAINS``):

====  ==========================================  ============================================
step  txgraph action                              QSD command
====  ==========================================  ============================================
1     ``x-txgraph-blockdev-add`` overlay ovl<j>    ``blockdev-add`` (qcow2, backing null)
2     ``blockdev-snapshot`` top<j> -> ovl<j>        ``blockdev-snapshot``
3     ``x-txgraph-insert-filter`` throttle thr<j>   ``blockdev-add`` throttle thr<j> over ovl<j>
4     ``x-txgraph-blockdev-reopen`` dev<j>          ``blockdev-reopen`` dev<j> (file: thr<j>)
5     ``x-txgraph-blockdev-reopen`` ovl<j>          ``blockdev-reopen`` ovl<j>
====  ==========================================  ============================================

Both peers are separate processes driven through the same small QMP client over
a unix socket (:mod:`txgraph.peers`); txgraph runs with its invariant checker
on. After the timed part both graphs are read back (``x-debug-query-block-graph``
and ``query-named-block-nodes``) and must be equal — nodes, edges with their
permissions, and each node's driver, read-only flag and detect-zeroes — so the
two timings are for the same work. Rounds alternate QSD and txgraph (A B A
B...). One JSON row per N: ``name``, ``txgraph`` and ``peer`` (median ms),
``spread`` (min-max of each side), ``unit``, ``ratio`` = peer / txgraph (> 1:
txgraph faster), ``graphs_match``. Progress goes to stderr.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from txgraph.peers import QSD, QMPProcess, TxgraphDaemon

__all__ = [
    "CHAINS",
    "STEPS",
    "run_txn_benchmark",
    "setup_commands",
    "txgraph_actions",
    "qsd_commands",
    "canonical_graph",
]

#: device chains the steps operate on; 5 steps each
CHAINS = 4
#: steps per run
STEPS = 5 * CHAINS
#: setup commands sent before waiting for their replies
BATCH = 256

Command = tuple[str, dict[str, Any]]


def _make_images(workdir: Path) -> None:
    """The chain and overlay images (small qcow2, no backing in their headers)."""
    for j in range(CHAINS):
        for stem in (f"top{j}", f"ovl{j}"):
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(workdir / f"{stem}.qcow2"), "16M"],
                check=True,
                capture_output=True,
            )


def setup_commands(workdir: Path, nodes: int) -> list[Command]:
    """The untimed setup: a throttle group, the chains, and null-co nodes up to ``nodes``."""
    per_chain = 3
    fillers = nodes - per_chain * CHAINS
    if fillers < 0:
        raise ValueError(f"a graph needs at least {per_chain * CHAINS} nodes")
    out: list[Command] = [
        (
            "object-add",
            {"qom-type": "throttle-group", "id": "tg", "limits": {"iops-total": 1000000}},
        )
    ]
    for j in range(CHAINS):
        out.append(
            (
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": f"top{j}",
                    "file": {
                        "driver": "file",
                        "node-name": f"tf{j}",
                        "filename": str(workdir / f"top{j}.qcow2"),
                    },
                },
            )
        )
        out.append(("blockdev-add", {"driver": "raw", "node-name": f"dev{j}", "file": f"top{j}"}))
    out += [("blockdev-add", {"driver": "null-co", "node-name": f"n{i}"}) for i in range(fillers)]
    return out


def _overlay(workdir: Path, j: int) -> dict[str, Any]:
    return {
        "driver": "qcow2",
        "node-name": f"ovl{j}",
        "backing": None,
        "file": {
            "driver": "file",
            "node-name": f"of{j}",
            "filename": str(workdir / f"ovl{j}.qcow2"),
        },
    }


def _throttle(j: int) -> dict[str, Any]:
    return {"driver": "throttle", "node-name": f"thr{j}", "throttle-group": "tg"}


def _dev_reopen(j: int) -> dict[str, Any]:
    return {"driver": "raw", "node-name": f"dev{j}", "file": f"thr{j}", "detect-zeroes": "on"}


def _ovl_reopen(j: int) -> dict[str, Any]:
    return {
        "driver": "qcow2",
        "node-name": f"ovl{j}",
        "file": f"of{j}",
        "backing": f"top{j}",
        "detect-zeroes": "on",
    }


def txgraph_actions(workdir: Path) -> list[dict[str, Any]]:
    """The 20 actions of the one ``x-txgraph-transaction``."""
    out: list[dict[str, Any]] = []
    for j in range(CHAINS):
        out += [
            {"type": "x-txgraph-blockdev-add", "data": _overlay(workdir, j)},
            {"type": "blockdev-snapshot", "data": {"node": f"top{j}", "overlay": f"ovl{j}"}},
            {
                "type": "x-txgraph-insert-filter",
                "data": {"node": f"ovl{j}", "filter": _throttle(j)},
            },
            {"type": "x-txgraph-blockdev-reopen", "data": {"options": [_dev_reopen(j)]}},
            {"type": "x-txgraph-blockdev-reopen", "data": {"options": [_ovl_reopen(j)]}},
        ]
    return out


def qsd_commands(workdir: Path) -> list[Command]:
    """The same steps as QEMU 7.2 takes them: 20 separate QMP commands."""
    out: list[Command] = []
    for j in range(CHAINS):
        out += [
            ("blockdev-add", _overlay(workdir, j)),
            ("blockdev-snapshot", {"node": f"top{j}", "overlay": f"ovl{j}"}),
            ("blockdev-add", {**_throttle(j), "file": f"ovl{j}"}),
            ("blockdev-reopen", {"options": [_dev_reopen(j)]}),
            ("blockdev-reopen", {"options": [_ovl_reopen(j)]}),
        ]
    return out


def run_batched(peer: QMPProcess, commands: Iterable[Command], batch: int = BATCH) -> None:
    """Send ``commands`` in pipelined batches (write ``batch``, then read their replies).

    Bounded batches keep both socket buffers from filling while nobody reads.
    Every reply must be a success.
    """
    pending = list(commands)
    for start in range(0, len(pending), batch):
        chunk = pending[start : start + batch]
        data = "".join(json.dumps({"execute": c, "arguments": a}) + "\n" for c, a in chunk)
        peer._file.write(data.encode())  # the same client, pipelined
        peer._file.flush()
        for command, _args in chunk:
            reply = _next_reply(peer)
            if "error" in reply:
                raise RuntimeError(
                    f"{peer.label}: setup {command} failed: {reply['error']['desc']}"
                )


def _next_reply(peer: QMPProcess) -> dict[str, Any]:
    while True:
        msg = peer._read()
        if "event" in msg:
            peer.events.append(msg)
            continue
        return msg


def canonical_graph(peer: QMPProcess) -> dict[str, Any]:
    """What must match after the run: nodes, edges with permissions, per-node options."""
    graph = peer.cmd("x-debug-query-block-graph")
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    nodes = sorted((n["name"], n["type"]) for n in graph["nodes"])
    edges = sorted(
        (
            names[e["parent"]],
            names[e["child"]],
            e["name"],
            tuple(sorted(e["perm"])),
            tuple(sorted(e["shared-perm"])),
        )
        for e in graph["edges"]
    )
    options = sorted(
        (n["node-name"], n["drv"], n["ro"], n["detect_zeroes"])
        for n in peer.cmd("query-named-block-nodes", {"flat": True})
    )
    return {"nodes": nodes, "edges": edges, "options": options}


def _one_run(
    factory: Callable[..., QMPProcess],
    workdir: Path,
    nodes: int,
    timed: Callable[[QMPProcess], None],
) -> tuple[float, dict[str, Any]]:
    with factory(workdir=str(workdir)) as peer:
        run_batched(peer, setup_commands(workdir, nodes))
        start = time.perf_counter()
        timed(peer)
        elapsed = time.perf_counter() - start
        return elapsed, canonical_graph(peer)


def _checked(peer: QMPProcess, command: str, arguments: dict[str, Any]) -> None:
    reply = peer.execute(command, arguments)
    if "error" in reply:
        raise RuntimeError(f"{peer.label}: {command} failed: {reply['error']['desc']}")


def _canon_dir(graph: dict[str, Any], workdir: Path) -> dict[str, Any]:
    canon: dict[str, Any] = json.loads(json.dumps(graph).replace(str(workdir), "{dir}"))
    return canon


def run_txn_benchmark(
    nodes: Iterable[int] = (100, 10_000), repeats: int = 3
) -> list[dict[str, Any]]:
    """One row per graph size: median commit latency of ``repeats`` interleaved rounds."""
    rows: list[dict[str, Any]] = []
    base = Path(tempfile.mkdtemp(prefix="txgraph-bench-txn-"))
    try:
        dirs = {"qsd": base / "qsd", "txgraph": base / "txgraph"}
        for d in dirs.values():
            d.mkdir()
            _make_images(d)
        for n in nodes:
            times: dict[str, list[float]] = {"qsd": [], "txgraph": []}
            final: dict[str, Any] = {}
            for r in range(repeats):
                qsd_dir, tx_dir = dirs["qsd"], dirs["txgraph"]

                def qsd_steps(peer: QMPProcess, d: Path = qsd_dir) -> None:
                    for command, arguments in qsd_commands(d):
                        _checked(peer, command, arguments)

                def txgraph_steps(peer: QMPProcess, d: Path = tx_dir) -> None:
                    _checked(peer, "x-txgraph-transaction", {"actions": txgraph_actions(d)})

                elapsed, graph = _one_run(QSD, qsd_dir, n, qsd_steps)
                times["qsd"].append(elapsed)
                final["qsd"] = _canon_dir(graph, qsd_dir)
                elapsed, graph = _one_run(TxgraphDaemon, tx_dir, n, txgraph_steps)
                times["txgraph"].append(elapsed)
                final["txgraph"] = _canon_dir(graph, tx_dir)
                print(f"bench txn: {n} nodes, round {r + 1}/{repeats}", file=sys.stderr, flush=True)
            match = final["qsd"] == final["txgraph"]
            ours, peer = statistics.median(times["txgraph"]), statistics.median(times["qsd"])
            rows.append(
                {
                    "name": f"txn-{STEPS}-steps-{n}-nodes",
                    "nodes": n,
                    "steps": STEPS,
                    "txgraph": round(ours * 1000, 2),
                    "peer": round(peer * 1000, 2),
                    "spread": {
                        side: [round(min(times[key]) * 1000, 2), round(max(times[key]) * 1000, 2)]
                        for side, key in (("txgraph", "txgraph"), ("peer", "qsd"))
                    },
                    "unit": "ms",
                    "ratio": round(peer / ours, 3),
                    "graphs_match": match,
                    "final_nodes": len(final["qsd"]["nodes"]),
                    "final_edges": len(final["qsd"]["edges"]),
                    "peer_name": "qemu-storage-daemon 7.2",
                }
            )
            if not match:
                rows[-1]["difference"] = _difference(final["qsd"], final["txgraph"])
        return rows
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _difference(left: dict[str, Any], right: dict[str, Any], limit: int = 6) -> list[str]:
    """A short description of how the two final graphs differ (QSD left, txgraph right)."""
    out: list[str] = []
    for part in ("nodes", "edges", "options"):
        a = {json.dumps(x) for x in left[part]}
        b = {json.dumps(x) for x in right[part]}
        out += [f"{part} only on QSD: {x}" for x in sorted(a - b)[:limit]]
        out += [f"{part} only on txgraph: {x}" for x in sorted(b - a)[:limit]]
    return out[: limit * 2]
