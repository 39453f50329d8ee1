"""The transaction journal answers "what was the graph before?" exactly as a full copy did.

``policy=safe`` used to deep-copy the graph at the start of every transaction
(O(graph)); it now reads the before-values from the transaction's journal
(O(change)). These tests pin the equivalence on random primitive sequences:
every question the checker asks (node existed, old child of a link, frozen
links) gets the same answer, and the checker's verdict — what ``safe``
refuses — is identical with either ``before``.
"""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from txgraph.checker import GraphBefore, check
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Backend, BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.perm_bits import PERM_ALL, Perm, Role
from txgraph.ops.journal import Journal
from txgraph.ops.undo_log import Transaction

R, W = Perm.CONSISTENT_READ, Perm.WRITE


def _edge(
    g: BlockGraph,
    name: str,
    role: Role,
    kind: ParentKind = ParentKind.NODE,
    perm: Perm = Perm.NONE,
    frozen: bool = False,
) -> Edge:
    e = Edge(name, role, kind, perm, PERM_ALL, seq=g.next_seq())
    e.parent_seq = e.seq
    e.frozen = frozen
    return e


@st.composite
def graphs(draw: st.DrawFn) -> BlockGraph:
    """qcow2 images over files, backing links that their headers name, users on top,
    and some frozen links (as a running job leaves them)."""
    g = BlockGraph()
    images: list[str] = []
    for i in range(draw(st.integers(1, 5))):
        g.add_node(BlockNode(f"f{i}", "file", flags=OpenFlag.RDWR))
        g.add_node(BlockNode(f"img{i}", "qcow2", flags=OpenFlag.RDWR))
        g.attach(f"img{i}", f"f{i}", _edge(g, "file", Role.IMAGE, frozen=draw(st.booleans())))
        if images and draw(st.booleans()):
            base = draw(st.sampled_from(images))
            g.nodes[f"img{i}"].backing_file = f"{base}.qcow2"
            if g.child_edge(f"img{i}", "backing") is None:
                g.attach(f"img{i}", base, _edge(g, "backing", Role.COW, frozen=draw(st.booleans())))
        images.append(f"img{i}")
    for j, top in enumerate(images):
        if draw(st.booleans()):
            key = f"bb:{j}"
            g.add_backend(Backend(key, ParentKind.ROOT, perm=R | W, shared=PERM_ALL))
            g.attach(
                key, top, _edge(g, "root", Role.FILTERED | Role.PRIMARY, ParentKind.ROOT, R | W)
            )
    return g


_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["detach", "retarget", "attach", "freeze", "remove", "readd", "add", "cut", "cut"]
        ),
        st.integers(0, 1000),
        st.integers(0, 1000),
    ),
    max_size=8,
)


def _run(tx: Transaction, ops: list[tuple[str, int, int]]) -> None:
    """Random primitives on the staged graph (shape, not QEMU plausibility, matters here)."""
    g = tx.graph
    removed: list[BlockNode] = []
    for op, a, b in ops:
        edges = sorted((p, e.name) for p, _c, e in g.edges())
        names = sorted(g.nodes)
        backing = [(p, name) for p, name in edges if name == "backing"]
        if op == "detach" and edges:
            tx.detach(*edges[a % len(edges)])
        elif op == "cut" and backing:  # what S1/S2 are about
            tx.detach(*backing[a % len(backing)])
        elif op == "retarget" and edges and names:
            p, name = edges[a % len(edges)]
            target = names[b % len(names)]
            if target != p:
                tx.retarget(p, name, target)
        elif op == "attach" and names:
            p, c = names[a % len(names)], names[b % len(names)]
            if p != c and g.child_edge(p, "backing") is None:
                tx.attach(p, c, Edge("backing", Role.COW, frozen=b % 2 == 0))
        elif op == "freeze" and edges:
            p, name = edges[a % len(edges)]
            found = g.child_edge(p, name)
            assert found is not None
            tx.set(found[1], "frozen", not found[1].frozen)
        elif op == "remove" and names:
            name = names[a % len(names)]
            for p, e in g.parents(name):
                tx.detach(p, e.name)
            for _c, e in g.children(name):
                tx.detach(name, e.name)
            removed.append(tx.remove_node(name))
        elif op == "readd" and removed:
            old = removed.pop(a % len(removed))
            tx.add_node(BlockNode(old.name, "qcow2", flags=OpenFlag.RDWR, backing_file="x.qcow2"))
        elif op == "add":
            name = f"new{a % 3}"
            if name not in g.nodes:
                tx.add_node(BlockNode(name, "qcow2", flags=OpenFlag.RDWR, backing_file="x.qcow2"))


def _verdicts(graph: BlockGraph, touched: set[str] | None, before: object) -> list[object]:
    out: list[object] = []
    for engine in ("z3", "structural"):
        v = check(graph, touched, policy="safe", before=before, engine=engine)  # type: ignore[arg-type]
        out.append((v.ok, v.violations))
    return out


@given(graphs(), _OPS, _OPS)
def test_journal_answers_like_a_copy_of_the_graph(
    graph: BlockGraph, first: list[tuple[str, int, int]], second: list[tuple[str, int, int]]
) -> None:
    snapshot = copy.deepcopy(graph)
    full = GraphBefore(snapshot)
    # An outer journal spans two transactions (a plan step); the first one aborts.
    outer = Journal(graph)
    tx1 = Transaction(graph, outer_journal=outer)
    _run(tx1, first)
    tx1.abort()
    assert graph.digest() == snapshot.digest()
    tx = Transaction(graph, outer_journal=outer)
    _run(tx, second)
    names = set(snapshot.nodes) | set(graph.nodes) | {"new0", "new1", "new2"}
    slots = {(p, e.name) for p, _c, e in snapshot.edges()} | {
        (p, e.name) for p, _c, e in graph.edges()
    }
    for journal in (tx.journal, outer):
        for name in names:
            assert journal.had_node(name) == full.had_node(name), name
        for p, name in slots:
            assert journal.child_before(p, name) == full.child_before(p, name), (p, name)
        # The journal lists the frozen links that may have changed; the rest kept their child.
        assert set(journal.frozen_links()) <= set(full.frozen_links())
        for p, name, c in set(full.frozen_links()) - set(journal.frozen_links()):
            now = graph.child_edge(p, name) if p in graph.g else None
            assert now is not None and now[0] == c
        assert journal.frozen_links() == sorted(
            journal.frozen_links(), key=lambda r: (r[0], r[2], r[1])
        )
        # What the safe policy refuses is the same with either before.
        assert _verdicts(graph, tx.touched, journal) == _verdicts(graph, tx.touched, snapshot)
        assert _verdicts(graph, None, journal) == _verdicts(graph, None, snapshot)
    tx.abort()
    assert graph.digest() == snapshot.digest()


def test_a_cut_backing_chain_is_refused_through_the_journal() -> None:
    """S1/S2 fire from the journal alone: the node lost the backing its header names."""
    g = BlockGraph()
    for name in ("base", "top"):
        g.add_node(BlockNode(name, "qcow2", flags=OpenFlag.RDWR))
        g.add_node(BlockNode(f"{name}-f", "file", flags=OpenFlag.RDWR))
        g.attach(name, f"{name}-f", _edge(g, "file", Role.IMAGE))
    g.nodes["top"].backing_file = "base.qcow2"
    g.attach("top", "base", _edge(g, "backing", Role.COW))
    g.add_backend(Backend("bb:0", ParentKind.ROOT, perm=R | W, shared=PERM_ALL))
    g.attach("bb:0", "top", _edge(g, "root", Role.FILTERED | Role.PRIMARY, ParentKind.ROOT, R | W))
    tx = Transaction(g)
    tx.detach("top", "backing")
    safe = check(g, tx.touched, policy="safe", before=tx.journal).rules()
    qemu = check(g, tx.touched, policy="qemu", before=tx.journal).rules()
    # (the hand-made edges carry no computed permissions, so P1 fires under both)
    assert safe - qemu == {"S1-backing-chain-cut", "S2-orphaned-writer"}
    tx.abort()


def test_a_moved_frozen_link_is_refused_through_the_journal() -> None:
    """F1 from the journal: the frozen link's old child is remembered across the move."""
    g = BlockGraph()
    for name in ("a", "b", "c"):
        g.add_node(BlockNode(name, "qcow2", flags=OpenFlag.RDWR))
    g.nodes["a"].backing_file = "b.qcow2"
    g.attach("a", "b", _edge(g, "backing", Role.COW, frozen=True))
    tx = Transaction(g)
    tx.set(g.child_edge("a", "backing")[1], "frozen", False)  # type: ignore[index]
    tx.retarget("a", "backing", "c")
    assert tx.journal.frozen_links() == [("a", "backing", "b")]
    verdict = check(g, tx.touched, policy="safe", before=tx.journal, engine="structural")
    assert "F1-frozen-link" in verdict.rules()
    tx.abort()
