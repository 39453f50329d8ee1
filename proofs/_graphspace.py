"""The bounded space of block graphs and one-primitive transactions the model proofs range over.

Graphs: up to ``MAX_NODES`` block nodes named ``n0..``, each a ``file`` (protocol leaf), a
``qcow2`` (``file`` child with role IMAGE, optional ``backing`` child with role COW) or a
``throttle`` filter (``file`` child FILTERED|PRIMARY), read-write or read-only, plus at most
one root BlockBackend ``bb`` (a reader that shares everything, or a writer that shares
R|U) on one node. Edge permissions come from the model's refresh
(:func:`txgraph.model.perm_refresh.compute_refresh`). Only graphs the real checker accepts
as a whole (``policy=qemu``, structural engine) are kept: the proofs assume a valid
pre-state. Children are numbered above their parents (``n0`` is the top) to cut
symmetric copies; acyclicity is checked anyway.

Deltas: every single primitive of :class:`txgraph.ops.undo_log.Transaction` that applies
to such a graph — attach a child (each name and role the driver spec allows, to every
node), detach one, retarget one, toggle a node's read-write flag, set force-share on a
read-only node, move the root edge, add an isolated node, remove an isolated node — run
through the real ``Transaction``, whose ``touched`` set is the region.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from txgraph.checker import check
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Backend, BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.perm_bits import PERM_ALL, Perm, Role
from txgraph.model.perm_refresh import compute_refresh
from txgraph.ops.undo_log import Transaction

MAX_NODES = 3
R, W, U = Perm.CONSISTENT_READ, Perm.WRITE, Perm.WRITE_UNCHANGED
FP = Role.FILTERED | Role.PRIMARY
#: (driver, [(child name, role)])
DRIVERS: dict[str, tuple[tuple[str, Role], ...]] = {
    "file": (),
    "qcow2": (("file", Role.IMAGE), ("backing", Role.COW)),
    "throttle": (("file", FP),),
}
REQUIRED = {"file"}
#: root requests: a reader sharing all, a writer sharing R|U
ROOTS: tuple[tuple[Perm, Perm], ...] = ((R, PERM_ALL), (R | W, R | U))


def refresh(g: BlockGraph) -> None:
    """Set every edge to its formula value (``bdrv_refresh_perms`` over the whole graph)."""
    for ch in compute_refresh(g, list(g.nodes), collect=[]):
        found = g.child_edge(ch.parent, ch.name)
        assert found is not None
        found[1].perm, found[1].shared = ch.perm, ch.shared


def _edge(g: BlockGraph, name: str, role: Role, kind: ParentKind = ParentKind.NODE) -> Edge:
    e = Edge(name, role, kind, Perm.NONE, PERM_ALL, seq=g.next_seq())
    e.parent_seq = e.seq
    return e


def _node_choices(i: int, k: int) -> Iterator[tuple[str, bool, dict[str, str | None]]]:
    below = [f"n{j}" for j in range(i + 1, k)]
    for drv, kids in DRIVERS.items():
        for rw in (True, False):
            options: list[list[str | None]] = []
            for cname, _role in kids:
                opts: list[str | None] = list(below)
                if cname not in REQUIRED:
                    opts.append(None)
                options.append(opts)
            for combo in itertools.product(*options):
                yield drv, rw, {c: t for (c, _r), t in zip(kids, combo)}


def build(
    spec: list[tuple[str, bool, dict[str, str | None]]], root: tuple[str, int] | None
) -> BlockGraph:
    g = BlockGraph()
    for i, (drv, rw, _kids) in enumerate(spec):
        g.add_node(BlockNode(f"n{i}", drv, flags=OpenFlag.RDWR if rw else OpenFlag.NONE))
    for i, (drv, _rw, kids) in enumerate(spec):
        roles = dict(DRIVERS[drv])
        for cname, target in kids.items():
            if target is not None:
                g.attach(f"n{i}", target, _edge(g, cname, roles[cname]))
                if cname == "backing":  # the image header names the backing it was opened with
                    g.nodes[f"n{i}"].backing_file = f"{target}.qcow2"
    if root is not None:
        node, which = root
        perm, shared = ROOTS[which]
        g.add_backend(Backend("bb", ParentKind.ROOT, "", "an unnamed block device", perm, shared))
        e = _edge(g, "root", FP, ParentKind.ROOT)
        e.perm, e.shared = perm, shared  # a root edge carries its BlockBackend's request
        g.attach("bb", node, e)
    refresh(g)
    return g


def graphs(max_nodes: int | None = None) -> Iterator[BlockGraph]:
    """Every valid graph of the space (whole-graph check passes).

    Default bound (seconds per proof): graphs of up to 2 nodes with every root
    request, and of 3 nodes with no BlockBackend or the writer one.
    ``TXGRAPH_PROOF_FULL=1`` adds the 3-node graphs under the reader (887 graphs
    in all instead of 338); ``TXGRAPH_PROOF_NODES=N`` changes the node bound.
    """
    if max_nodes is None:
        max_nodes = int(os.environ.get("TXGRAPH_PROOF_NODES", MAX_NODES))
    full = bool(os.environ.get("TXGRAPH_PROOF_FULL"))
    for k in range(1, max_nodes + 1):
        per_node = [list(_node_choices(i, k)) for i in range(k)]
        presets = range(len(ROOTS)) if full or k <= 2 else (1,)
        for spec in itertools.product(*per_node):
            roots: list[tuple[str, int] | None] = [None]
            roots += [(f"n{i}", w) for i in range(k) for w in presets]
            for root in roots:
                g = build(list(spec), root)
                if check(g, None, engine="structural").ok:
                    yield g


@dataclass
class Delta:
    """One primitive: ``apply(tx)`` stages it on the transaction's graph."""

    label: str
    apply: Callable[[Transaction], None]


def deltas(g: BlockGraph) -> Iterator[Delta]:
    """Every single-primitive change of ``g`` in the space (see the module docstring)."""
    nodes = sorted(g.nodes)
    for p in nodes:
        roles = dict(DRIVERS[g.nodes[p].driver])
        for cname, role in roles.items():
            cur = g.child_edge(p, cname)
            for c in nodes:
                if cur is None:
                    yield Delta(
                        f"attach {p}/{cname}->{c}",
                        lambda tx, p=p, c=c, n=cname, r=role: _attach(tx, p, c, n, r),
                    )
                elif cur[0] != c:
                    yield Delta(
                        f"retarget {p}/{cname}->{c}",
                        lambda tx, p=p, c=c, n=cname: _retarget(tx, p, n, c),
                    )
            if cur is not None:
                yield Delta(f"detach {p}/{cname}", lambda tx, p=p, n=cname: _detach(tx, p, n))
        node = g.nodes[p]
        yield Delta(f"toggle-rw {p}", lambda tx, p=p: _toggle_rw(tx, p))
        if node.read_only and not node.force_share:
            yield Delta(f"force-share {p}", lambda tx, p=p: _set(tx, p, "force_share", True))
    if "bb" in g.backends:
        cur_root = g.child_edge("bb", "root")
        for c in nodes:
            if cur_root is not None and cur_root[0] != c:
                yield Delta(f"retarget bb->{c}", lambda tx, c=c: _retarget(tx, "bb", "root", c))
    fresh = next(f"n{i}" for i in itertools.count() if f"n{i}" not in g.nodes)
    for drv in DRIVERS:
        yield Delta(f"add {drv} {fresh}", lambda tx, d=drv: _add(tx, d, fresh))
    for p in nodes:
        if g.g.degree(p) == 0:
            yield Delta(f"remove {p}", lambda tx, p=p: _discard(tx.remove_node(p)))


def _discard(_x: object) -> None:
    pass


def _attach(tx: Transaction, p: str, c: str, name: str, role: Role) -> None:
    tx.attach(p, c, _edge(tx.graph, name, role))


def _retarget(tx: Transaction, p: str, name: str, c: str) -> None:
    tx.retarget(p, name, c)


def _detach(tx: Transaction, p: str, name: str) -> None:
    tx.detach(p, name)


def _toggle_rw(tx: Transaction, p: str) -> None:
    node = tx.graph.nodes[p]
    tx.set(node, "flags", node.flags ^ OpenFlag.RDWR)


def _set(tx: Transaction, p: str, attr: str, value: object) -> None:
    tx.set(tx.graph.nodes[p], attr, value)


def _add(tx: Transaction, drv: str, name: str) -> None:
    tx.add_node(BlockNode(name, drv, flags=OpenFlag.RDWR))


def clone(g: BlockGraph) -> BlockGraph:
    """An independent copy of a graph of the space (its objects hold no nested state
    beyond what ``copy.copy`` duplicates: empty option dicts, no caches), ~30x cheaper
    than ``deepcopy``."""
    out = BlockGraph()
    for n in g.nodes.values():
        out.add_node(copy.copy(n))
    for b in g.backends.values():
        out.add_backend(copy.copy(b))
    for p, c, e in g.edges():
        out.g.add_edge(p, c, key=e.name, obj=copy.copy(e))
    out._seq = g._seq
    out.generation = g.generation
    return out
