"""Rule instances: one per (rule, subject) the region asks about.

Both engines share this enumeration, so they ask exactly the same questions
with exactly the same subjects and literal names; they differ in how they
decide each one (:mod:`structural` evaluates Python predicates, :mod:`smt`
asks z3). G1 (acyclicity) is global and handled by each engine separately.

An instance is skipped only when its constraint is vacuous by construction
(fewer than two edges for a pairwise rule, no parents for P4, force-share off
for FS1): such constraints can never be part of an unsat core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from txgraph.checker.before import Before
from txgraph.checker.region import Region, edge_label, in_edges, node_edges_only, out_edges
from txgraph.checker.verdict import EdgeRef
from txgraph.model.drivers import driver_spec
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Backend, Edge, ParentKind
from txgraph.model.perm_bits import Perm, Role
from txgraph.model.perm_refresh import child_perm_context

__all__ = ["Instance", "enumerate_instances", "named_backends", "chain_cuts", "ROLE_BITS"]

ROLE_BITS: dict[str, Role] = {"FILTERED": Role.FILTERED, "COW": Role.COW, "PRIMARY": Role.PRIMARY}


@dataclass(frozen=True, slots=True)
class Instance:
    """``kind`` selects the predicate/encoding; ``key`` is the readable literal name."""

    rule: str
    kind: str
    key: str
    data: tuple[Any, ...]


def edge_key(ref: EdgeRef) -> str:
    """``parent/name>child``: unique even when a broken graph repeats a child name."""
    return f"{ref[0]}/{ref[1]}>{ref[2]}"


def named_backends(graph: BlockGraph) -> dict[str, str]:
    """Named BlockBackends (name -> key), the namespace node names must avoid.

    QEMU checks node names against ``blk_by_name`` only: device BlockBackends.
    Exports and jobs have their own id namespaces and anonymous BBs, whose
    description is "an unnamed block device".
    """
    return {b.name: b.key for b in graph.backends.values() if _is_named_bb(b)}


def _is_named_bb(b: Backend) -> bool:
    return b.kind is ParentKind.ROOT and bool(b.name) and b.description != "an unnamed block device"


def chain_cuts(graph: BlockGraph, before: Before, nodes: set[str]) -> list[tuple[str, str, str]]:
    """Nodes whose ``backing`` link existed before and is gone now, while their image
    header still names a backing file: (node, old backing child, backing file)."""
    cuts: list[tuple[str, str, str]] = []
    for name in sorted(nodes):
        if not before.had_node(name):
            continue
        node = graph.nodes[name]
        if not node.backing_file or graph.child_edge(name, "backing") is not None:
            continue
        old = before.child_before(name, "backing")
        if old is None:
            continue
        cuts.append((name, old, node.backing_file))
    return cuts


def enumerate_instances(
    region: Region, rules: frozenset[str], before: Before | None
) -> Iterator[Instance]:
    graph = region.graph
    # A node's edge lists are asked for by several rules (and P1 asks for a parent's
    # edges once per child edge): each is built once per check.
    outs = _EdgeLists(graph, out_edges)
    ins = _EdgeLists(graph, in_edges)
    parents = sorted(region.nodes)
    for p in parents:
        kids = outs[p]
        spec = driver_spec(graph.nodes[p].driver)
        if "G2-role-cardinality" in rules:
            if len(kids) >= 2:
                for bit_name, bit in ROLE_BITS.items():
                    yield Instance(
                        "G2-role-cardinality",
                        "g2card",
                        f"G2:node={p}:at-most-one={bit_name}",
                        (p, bit_name, int(bit), tuple((r, int(e.role)) for r, e in kids)),
                    )
            for ref, e in kids:
                for excl in ("FILTERED", "COW"):
                    yield Instance(
                        "G2-role-cardinality",
                        "g2excl",
                        f"G2:edge={edge_key(ref)}:{excl}-exclusive",
                        (ref, int(e.role), excl),
                    )
        # A job's filter dropped from the chain (bdrv_drop_filter) has no child left
        # while the job still holds it: only such a detached filter may be childless.
        detached = (
            spec is not None
            and spec.is_filter
            and not any(e.role & Role.FILTERED for _r, e in kids)
            and _held_by_jobs_only(graph, p)
        )
        if "G3-filter-shape" in rules and spec is not None:
            drv = spec.name
            if spec.is_filter and not detached:
                yield Instance(
                    "G3-filter-shape",
                    "g3one",
                    f"G3:node={p}:one-filtered-child",
                    (p, drv, tuple((r, int(e.role)) for r, e in kids)),
                )
            for ref, e in kids:
                if spec.is_filter:
                    yield Instance(
                        "G3-filter-shape",
                        "g3fcow",
                        f"G3:edge={edge_key(ref)}:filter-cow",
                        (ref, drv, int(e.role)),
                    )
                else:
                    if drv != "raw":
                        yield Instance(
                            "G3-filter-shape",
                            "g3nofilt",
                            f"G3:edge={edge_key(ref)}:not-filter",
                            (ref, drv, int(e.role)),
                        )
                    if not spec.supports_backing:
                        yield Instance(
                            "G3-filter-shape",
                            "g3nocow",
                            f"G3:edge={edge_key(ref)}:no-backing-support",
                            (ref, drv, int(e.role)),
                        )
        if "G5-required-children" in rules and spec is not None and not detached:
            refs = tuple(r for r, _e in kids)
            for cs in spec.children:
                if cs.required:
                    yield Instance(
                        "G5-required-children",
                        "g5req",
                        f"G5:node={p}:child={cs.name}",
                        (p, spec.name, cs.name, refs),
                    )
            if spec.perm_family == "quorum":
                yield Instance(
                    "G5-required-children",
                    "g5quorum",
                    f"G5:node={p}:children",
                    (p, spec.name, len(kids)),
                )
    if "G4-edge-name-unique" in rules:
        for owner in sorted(region.nodes | region.backends):
            kids = outs[owner]
            for i, (a, _ea) in enumerate(kids):
                for b, _eb in kids[i + 1 :]:
                    yield Instance(
                        "G4-edge-name-unique",
                        "g4",
                        f"G4:parent={owner}:a={a[1]}>{a[2]}:b={b[1]}>{b[2]}",
                        (owner, a, b),
                    )
    yield from _name_instances(region, rules)
    yield from _perm_instances(region, rules, ins)
    if before is not None:
        yield from _before_instances(region, rules, before)


def _name_instances(region: Region, rules: frozenset[str]) -> Iterator[Instance]:
    graph = region.graph
    if "N1-namespace" in rules:
        bbs = named_backends(graph)
        if bbs:
            subjects = set(region.nodes)
            for key in region.backends:
                b = graph.backends[key]
                if _is_named_bb(b) and b.name in graph.nodes:
                    subjects.add(b.name)
            names = tuple(sorted(bbs))
            for n in sorted(subjects):
                yield Instance("N1-namespace", "n1", f"N1:node={n}", (n, names))
    for n in sorted(region.nodes):
        if "N2-name-valid" in rules:
            yield Instance("N2-name-valid", "n2", f"N2:node={n}", (n,))
        if "FS1-force-share-ro" in rules and graph.nodes[n].force_share:
            yield Instance("FS1-force-share-ro", "fs1", f"FS1:node={n}", (n,))


def _held_by_jobs_only(graph: BlockGraph, name: str) -> bool:
    """Only block jobs (no node, no BlockBackend) hold ``name`` now."""
    parents = graph.parents(name)
    return bool(parents) and all(e.parent_kind is ParentKind.JOB for _p, e in parents)


class _EdgeLists(dict[str, list[tuple[EdgeRef, Edge]]]):
    """``in_edges``/``out_edges`` of one graph, each node's list built on first use
    (one check's memo: the graph does not change while its instances are made)."""

    def __init__(self, graph: BlockGraph, lister: Callable[[BlockGraph, str], Any]) -> None:
        super().__init__()
        self.graph = graph
        self.lister = lister

    def __missing__(self, node: str) -> list[tuple[EdgeRef, Edge]]:
        got: list[tuple[EdgeRef, Edge]] = self.lister(self.graph, node)
        self[node] = got
        return got


def _perm_instances(region: Region, rules: frozenset[str], ins: _EdgeLists) -> Iterator[Instance]:
    graph = region.graph
    if "P1-edge-perm-formula" in rules:
        # per parent: its ups and formula context (the same for each of its child edges)
        contexts: dict[str, tuple[tuple[EdgeRef, ...], Any]] = {}
        for ref, e in region.edges_in_scope():
            p, _name, c = ref
            if p in graph.nodes:  # membership, not parent_kind: a mislabeled edge must not crash
                pnode = graph.nodes[p]
                if driver_spec(pnode.driver) is None:
                    continue  # unknown driver: its formula is not modelled
                if _held_by_jobs_only(graph, p):
                    # A layer a job dropped from the chain but still holds: QEMU refreshes
                    # only the new chain (bdrv_set_backing_noperm), so its edges keep the
                    # permissions they had until the job lets go of it.
                    continue
                known = contexts.get(p)
                if known is None:
                    ups = tuple(r for r, _e in ins[p])
                    known = contexts[p] = (
                        ups,
                        child_perm_context(pnode, pnode.writable, bool(ups)),
                    )
                ups, ctx = known
                yield Instance(
                    "P1-edge-perm-formula",
                    "p1node",
                    f"P1:edge={edge_key(ref)}",
                    (ref, ctx, int(e.role), ups, graph.nodes[c].force_share),
                )
            elif e.parent_kind is ParentKind.ROOT and p in graph.backends:
                b = graph.backends[p]
                yield Instance(
                    "P1-edge-perm-formula",
                    "p1root",
                    f"P1:edge={edge_key(ref)}",
                    (ref, int(b.perm), int(b.shared)),
                )
    for c in sorted(region.below):
        parent_edges = ins[c]
        if "P3-perm-conflict" in rules and len(parent_edges) >= 2:
            for ref_a, _ea in parent_edges:
                for ref_b, _eb in parent_edges:
                    if ref_a != ref_b:
                        yield Instance(
                            "P3-perm-conflict",
                            "p3",
                            f"P3:node={c}:a={edge_label(ref_a)}:b={edge_label(ref_b)}",
                            (c, ref_a, ref_b),
                        )
        if "P4-read-only-writer" in rules and parent_edges:
            yield Instance(
                "P4-read-only-writer", "p4", f"P4:node={c}", (c, tuple(r for r, _e in parent_edges))
            )


def _before_instances(region: Region, rules: frozenset[str], before: Before) -> Iterator[Instance]:
    graph = region.graph
    if "F1-frozen-link" in rules:
        # A removed parent leaves no trace in ``touched``, so the frozen links come
        # from ``before`` (every one that may have changed), not from the region.
        for p, key, c in before.frozen_links():
            if (p, key) in graph.thawed:
                continue  # its holder let go in this same transaction
            now = graph.child_edge(p, key) if p in graph.g else None
            yield Instance(
                "F1-frozen-link",
                "f1",
                f"F1:edge={p}/{key}>{c}",
                ((p, key, c), now[0] if now else None),
            )
    if "J1-job-chain-cut" in rules:
        # A job's protected links live on its backend; the job clears them itself before
        # its own graph change at the end (stream's prepare), so only others' changes count.
        for backend in sorted(graph.backends.values(), key=lambda b: b.key):
            for parent, name, child in backend.protects:
                if parent not in graph.nodes:
                    continue
                now = graph.child_edge(parent, name)
                yield Instance(
                    "J1-job-chain-cut",
                    "j1",
                    f"J1:job={backend.key}:{parent}/{name}",
                    (backend.key, parent, name, child, now[0] if now else None),
                )
    if not ({"S1-backing-chain-cut", "S2-orphaned-writer"} & rules):
        return
    for node, old, file in chain_cuts(graph, before, region.nodes):
        if "S1-backing-chain-cut" in rules:
            used = any(True for _ in graph.g.in_edges(node))
            yield Instance("S1-backing-chain-cut", "s1", f"S1:node={node}", (node, old, file, used))
        if "S2-orphaned-writer" in rules:
            for top in _chain_tops(graph, node):
                for ref, e in in_edges(graph, top):
                    if e.parent_kind is ParentKind.ROOT:
                        yield Instance(
                            "S2-orphaned-writer",
                            "s2",
                            f"S2:user={ref[0]}:top={top}:node={node}",
                            (ref, top, node, old, int(e.perm)),
                        )


def _chain_tops(graph: BlockGraph, node: str) -> list[str]:
    """``node`` and every node above it through filter or COW links (bdrv_chain_contains)."""
    seen = {node}
    todo = [node]
    while todo:
        cur = todo.pop()
        for ref, e in node_edges_only(in_edges(graph, cur)):
            if e.role & (Role.FILTERED | Role.COW) and ref[0] not in seen:
                seen.add(ref[0])
                todo.append(ref[0])
    return sorted(seen)


WRITE_BITS = int(Perm.WRITE | Perm.WRITE_UNCHANGED)
