"""The z3 engine and the structural engine agree on random block graphs, valid and
broken, and a region check agrees with a whole-graph check when only the region broke."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import assume, given
from hypothesis import strategies as st

from txgraph.checker import Verdict, check
from txgraph.errors import BlockError
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Backend, BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.perm_bits import PERM_ALL, Perm, Role
from txgraph.model.perm_refresh import compute_refresh

R, W, U, S = Perm.CONSISTENT_READ, Perm.WRITE, Perm.WRITE_UNCHANGED, Perm.RESIZE
FP = Role.FILTERED | Role.PRIMARY


@dataclass
class Case:
    graph: BlockGraph
    touched: set[str] = field(default_factory=set)
    images: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _attach(
    g: BlockGraph,
    parent: str,
    child: str,
    name: str,
    role: Role,
    kind: ParentKind = ParentKind.NODE,
    perm: Perm = Perm.NONE,
    shared: Perm = PERM_ALL,
) -> None:
    e = Edge(name, role, kind, perm, shared, seq=g.next_seq())
    e.parent_seq = e.seq
    g.g.add_edge(parent, child, key=name, obj=e)  # below attach(): broken graphs allowed


@st.composite
def valid_graphs(draw: st.DrawFn) -> Case:
    """qcow2-over-file images, backing links to older images, throttles, exports."""
    g = BlockGraph()
    case = Case(g)
    for i in range(draw(st.integers(1, 5))):
        rw = draw(st.booleans())
        flags = OpenFlag.RDWR if rw else OpenFlag.NONE
        g.add_node(BlockNode(f"f{i}", "file", flags=flags))
        g.add_node(BlockNode(f"img{i}", "qcow2", flags=flags))
        _attach(g, f"img{i}", f"f{i}", "file", Role.IMAGE)
        tops = [n for n in case.images if not g.node_parents(n)]
        if tops and draw(st.booleans()):
            base = draw(st.sampled_from(sorted(tops)))
            g.nodes[f"img{i}"].backing_file = f"{base}.qcow2"
            _attach(g, f"img{i}", base, "backing", Role.COW)
        case.images.append(f"img{i}")
        case.files.append(f"f{i}")
        if draw(st.booleans()):
            g.add_node(BlockNode(f"thr{i}", "throttle", flags=flags))
            _attach(g, f"thr{i}", f"img{i}", "file", FP)
    for j, top in enumerate(sorted(n for n in g.nodes if not g.node_parents(n))):
        if draw(st.booleans()):
            writable = g.nodes[top].writable and draw(st.booleans())
            perm = R | W if writable else R
            g.add_backend(Backend(f"bb:{j}", ParentKind.ROOT, perm=perm, shared=R | W | U))
            _attach(g, f"bb:{j}", top, "root", FP, ParentKind.ROOT, perm, R | W | U)
    try:
        changes = compute_refresh(g, list(g.nodes))
    except BlockError:
        assume(False)
    for ch in changes:
        found = g.child_edge(ch.parent, ch.name)
        assert found is not None
        found[1].perm, found[1].shared = ch.perm, ch.shared
    return case


def _break(draw: st.DrawFn, case: Case, what: str) -> None:
    g, t = case.graph, case.touched
    if what == "cycle":
        leaf, top = draw(st.sampled_from(case.files)), draw(st.sampled_from(case.images))
        _attach(g, leaf, top, "backing", Role.COW)
        t.update((leaf, top))
    elif what == "second-cow":
        a, b = draw(st.sampled_from(case.images)), draw(st.sampled_from(case.images))
        if g.child_edge(a, "backing2") is None:
            _attach(g, a, b, "backing2", Role.COW, perm=R, shared=R | U)
            t.update((a, b))
    elif what == "conflict":
        f = draw(st.sampled_from(case.files))
        name = f"dup{len(g.nodes)}"
        g.add_node(BlockNode(name, "qcow2", flags=OpenFlag.RDWR))
        _attach(g, name, f, "file", Role.IMAGE, perm=R | W | S, shared=R | U)
        t.update((name, f))
    elif what == "ro-writer":
        n = draw(st.sampled_from(sorted(g.nodes)))
        key = f"bb:w{len(g.backends)}"
        g.add_backend(Backend(key, ParentKind.ROOT, perm=R | W, shared=R | W | U))
        _attach(g, key, n, "root", FP, ParentKind.ROOT, R | W, R | W | U)
        t.update((key, n))
    elif what == "perm-flip":
        edges = sorted((p, c, e.name) for p, c, e in g.edges())
        p, c, name = draw(st.sampled_from(edges))
        e = g.child_edge(p, name)[1]  # type: ignore[index]
        e.perm = Perm(int(e.perm) ^ draw(st.integers(1, 15)))
        t.update((p, c))
    elif what == "force-share":
        n = draw(st.sampled_from(sorted(g.nodes)))
        g.nodes[n].force_share = True
        t.add(n)
    elif what == "bad-name":
        name = draw(st.sampled_from(["1x", "a b", "x" * 32, "#block1", "é"]))
        if name not in g.nodes:
            g.add_node(BlockNode(name, "null-co"))
            t.add(name)


@st.composite
def broken_graphs(draw: st.DrawFn) -> Case:
    case = draw(valid_graphs())
    kinds = ["cycle", "second-cow", "conflict", "ro-writer", "perm-flip", "force-share", "bad-name"]
    for what in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3)):
        _break(draw, case, what)
    return case


def _same(a: Verdict, b: Verdict) -> None:
    assert a.ok == b.ok
    assert [v.key() for v in a.violations] == [v.key() for v in b.violations]
    assert [v.sentence for v in a.violations] == [v.sentence for v in b.violations]


@given(valid_graphs(), st.sampled_from(["qemu", "safe"]))
def test_valid_graphs_pass_in_both_engines(case: Case, policy: str) -> None:
    z = check(case.graph, policy=policy, before=case.graph)
    s = check(case.graph, policy=policy, before=case.graph, engine="structural")
    assert z.ok, z
    _same(z, s)


@given(broken_graphs())
def test_engines_agree_on_broken_graphs(case: Case) -> None:
    _same(check(case.graph), check(case.graph, engine="structural"))


@given(broken_graphs())
def test_region_check_equals_whole_check(case: Case) -> None:
    whole = check(case.graph, engine="structural")
    assert not case.touched or whole.ok or whole.violations
    for engine in ("z3", "structural"):
        _same(check(case.graph, case.touched, engine=engine), whole)
