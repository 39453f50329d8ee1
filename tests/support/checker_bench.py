"""Per-transaction checker cost: ``python -m tests.support.checker_bench [--nodes N] [--adds K]``.

Builds a graph of N nodes (qcow2-over-file pairs, every fourth pair chained
as a backing file of the previous one, a writable export on some tops),
then performs K transactions that each add 1-3 nodes (a qcow2 over a new
file, optionally with a throttle filter on top) through
:class:`txgraph.ops.undo_log.Transaction`-like primitives, and times
``check(graph, touched)`` after each one. Prints the median and p95 in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

from txgraph.checker import check
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Backend, BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.perm_bits import Perm, Role
from txgraph.model.perm_refresh import compute_refresh

__all__ = ["build", "add_image", "main"]


def _refresh(graph: BlockGraph, roots: list[str]) -> None:
    for ch in compute_refresh(graph, roots):
        found = graph.child_edge(ch.parent, ch.name)
        assert found is not None
        found[1].perm, found[1].shared = ch.perm, ch.shared


def add_image(
    graph: BlockGraph, i: int, backing: str | None = None, throttle: bool = False
) -> set[str]:
    """blockdev-add of ``img{i}`` (qcow2 over ``f{i}``), optionally under a throttle filter."""
    rw = OpenFlag.RDWR
    touched = {f"f{i}", f"img{i}"}
    graph.add_node(BlockNode(f"f{i}", "file", flags=rw))
    graph.add_node(BlockNode(f"img{i}", "qcow2", flags=rw))
    graph.attach(f"img{i}", f"f{i}", Edge("file", Role.IMAGE, seq=graph.next_seq()))
    if backing is not None:
        graph.attach(f"img{i}", backing, Edge("backing", Role.COW, seq=graph.next_seq()))
        touched.add(backing)
    if throttle:
        graph.add_node(BlockNode(f"thr{i}", "throttle", flags=rw))
        graph.attach(
            f"thr{i}", f"img{i}", Edge("file", Role.FILTERED | Role.PRIMARY, seq=graph.next_seq())
        )
        touched.add(f"thr{i}")
    _refresh(graph, sorted(touched))
    return touched


def build(n_nodes: int) -> BlockGraph:
    graph = BlockGraph()
    i = 0
    while len(graph.nodes) < n_nodes:
        # every fourth pair takes the previous image as its backing file; the backends
        # (every tenth image) never land on a backing node, whose parent shares no WRITE
        backing = f"img{i - 1}" if i % 4 == 0 and i > 0 else None
        add_image(graph, i, backing=backing)
        if i % 10 == 0:
            key = f"bb:{i}"
            graph.add_backend(
                Backend(
                    key,
                    ParentKind.ROOT,
                    perm=Perm.CONSISTENT_READ | Perm.WRITE,
                    shared=Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED,
                )
            )
            graph.attach(
                key,
                f"img{i}",
                Edge(
                    "root",
                    Role.FILTERED | Role.PRIMARY,
                    ParentKind.ROOT,
                    perm=Perm.CONSISTENT_READ | Perm.WRITE,
                    shared=Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED,
                    seq=graph.next_seq(),
                ),
            )
            _refresh(graph, [f"img{i}"])
        i += 1
    graph.generation += 1
    return graph


def measure(n_nodes: int, adds: int, engine: str) -> list[float]:
    graph = build(n_nodes)
    assert check(graph, engine=engine).ok  # whole-graph check seeds the fixed ranks
    base = len(graph.nodes)
    times: list[float] = []
    for k in range(adds):
        i = base + k
        touched = add_image(graph, i, throttle=(k % 3 == 0))
        t0 = time.perf_counter()
        verdict = check(graph, touched, engine=engine)
        times.append(time.perf_counter() - t0)
        assert verdict.ok, verdict
        graph.generation += 1  # the transaction commits
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--adds", type=int, default=1000)
    ap.add_argument("--engine", default="z3")
    args = ap.parse_args(argv)
    times = measure(args.nodes, args.adds, args.engine)
    ms = sorted(t * 1e3 for t in times)
    print(
        f"engine={args.engine} nodes={args.nodes} adds={args.adds} "
        f"median={statistics.median(ms):.3f}ms p95={ms[int(len(ms) * 0.95)]:.3f}ms "
        f"max={ms[-1]:.3f}ms"
    )


if __name__ == "__main__":
    main()
