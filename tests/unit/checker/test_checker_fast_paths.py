"""The checker's fast paths give exactly what the slower forms they replaced give.

- the region's edge lists read networkx's adjacency dicts directly: the same edges,
  in the same (sorted) order, as networkx's edge views, on random multigraphs;
- the rank bookkeeping's own topological order respects every edge among the
  region's nodes and reports a cycle exactly when networkx does;
- the z3 session's direct C-API calls (push, parse, check under ``go``, pop) decide
  as ``z3.Solver``'s wrappers do, and leave no scope behind;
- the cached N2 formula is the uncached one, and its form over per-character macros
  is the same term once z3 expands them;
- deciding the untracked conjunction first gives the tracked form's verdicts;
- one check's memo of edge lists enumerates the same rule instances.
"""

from __future__ import annotations

import random
import re
import threading
from typing import Any

import networkx as nx
import z3
from hypothesis import given
from hypothesis import strategies as st

import txgraph.checker.instances as instances
import txgraph.checker.smt as smt
from tests.property.test_checker_crosscheck import Case, broken_graphs, valid_graphs
from txgraph.checker import Verdict, check
from txgraph.checker.before import as_before
from txgraph.checker.encode import MACRO_TEXT, NAME_PRELUDE, name_formula, name_formula_shared
from txgraph.checker.region import Region, cumulative, in_edges, out_edges
from txgraph.checker.rules import rules_for
from txgraph.checker.smt import _Session, _topological
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Backend, BlockNode, Edge, ParentKind
from txgraph.model.perm_bits import Perm, Role

NAMES = [f"n{i}" for i in range(6)]
EDGE_NAMES = ["file", "backing", "children.0"]


@st.composite
def multigraphs(draw: st.DrawFn) -> tuple[BlockGraph, set[str]]:
    g = BlockGraph()
    count = draw(st.integers(1, len(NAMES)))
    for name in NAMES[:count]:
        g.add_node(BlockNode(name, "qcow2"))
    g.add_backend(Backend("bb", ParentKind.ROOT, "bb", "an unnamed block device"))
    vertices = [*NAMES[:count], "bb"]
    edges = draw(
        st.lists(
            st.tuples(
                st.sampled_from(vertices),
                st.sampled_from(NAMES[:count]),
                st.sampled_from(EDGE_NAMES),
                st.integers(0, 15),
                st.integers(0, 15),
            ),
            max_size=14,
        )
    )
    for parent, child, key, perm, shared in edges:
        kind = ParentKind.ROOT if parent == "bb" else ParentKind.NODE
        e = Edge(key, Role.IMAGE, kind, Perm(perm), Perm(shared), seq=g.next_seq())
        g.g.add_edge(parent, child, key=key, obj=e)
    touched = set(draw(st.lists(st.sampled_from(vertices), max_size=4)))
    return g, touched


def _views_in(g: BlockGraph, child: str) -> list[tuple[tuple[str, str, str], Edge]]:
    out = [((p, k, child), d["obj"]) for p, _c, k, d in g.g.in_edges(child, keys=True, data=True)]
    return sorted(out, key=lambda x: x[0])


def _views_out(g: BlockGraph, parent: str) -> list[tuple[tuple[str, str, str], Edge]]:
    out = [
        ((parent, k, c), d["obj"]) for _p, c, k, d in g.g.out_edges(parent, keys=True, data=True)
    ]
    return sorted(out, key=lambda x: x[0])


@given(multigraphs())
def test_region_edges_equal_networkx_views(case: tuple[BlockGraph, set[str]]) -> None:
    g, touched = case
    for n in g.g.nodes:
        assert in_edges(g, n) == _views_in(g, n)
        assert out_edges(g, n) == _views_out(g, n)
    for n in g.nodes:
        perm, shared = Perm.NONE, Perm(15)
        for _p, _c, d in g.g.in_edges(n, data=True):
            perm |= d["obj"].perm
            shared &= d["obj"].shared
        assert cumulative(g, n) == (perm, shared)
    for region in (Region.of(g, touched), Region.of(g, None)):
        owners = sorted(region.nodes | region.backends) if not region.whole else sorted(g.g.nodes)
        want = {ref: e for o in owners for ref, e in _views_out(g, o)}
        if not region.whole:
            want.update({ref: e for c in region.nodes for ref, e in _views_in(g, c)})
        assert region.edges_in_scope() == sorted(want.items(), key=lambda x: x[0])
        below = set(region.nodes)
        for p in region.nodes | region.backends:
            below.update(g.g.successors(p))
        assert region.below == below


@given(multigraphs())
def test_topological_order_is_networkx_s_verdict(case: tuple[BlockGraph, set[str]]) -> None:
    g, touched = case
    nodes = {n for n in touched if n in g.nodes} or set(g.nodes)
    order = _topological(g, nodes)
    sub = g.g.subgraph(nodes)
    if not nx.is_directed_acyclic_graph(sub):
        assert order is None
        return
    assert order is not None and sorted(order) == sorted(nodes)
    position = {n: i for i, n in enumerate(order)}
    for p, c in sub.edges():
        assert position[p] < position[c]


def test_direct_solver_calls_decide_as_the_wrappers() -> None:
    session = _Session()
    reference = z3.Solver()
    reference.from_string("(declare-const |go| Bool)")
    go = z3.Bool("go")
    for i, formula in enumerate(["true", "false", "(= #x3 (bvand #x7 #x3))", "(> 1 2)"]):
        text = f"(declare-const |t{i}| Bool)\n(assert (=> |t{i}| {formula}))\n(assert (=> |go| |t{i}|))"
        session.push()
        try:
            session.parse(text)
            got = session.check_go()
        finally:
            session.pop()
        reference.push()
        reference.from_string(text)
        want = reference.check(go)
        reference.pop()
        assert got == want
        assert session.solver.num_scopes() == 0
        assert len(session.solver.assertions()) == 0
    # and a contradiction is unsat, a tautology sat (the comparison above is not vacuous)
    session.push()
    session.parse("(assert (=> |go| false))")
    assert session.check_go() == z3.unsat
    session.pop()
    assert session.check_go() == z3.sat


@given(st.text(max_size=40))
def test_cached_name_formula_is_the_formula(name: str) -> None:
    assert name_formula(name) == name_formula.__wrapped__(name)


_NAME_CHARS = st.sampled_from("#blockq0123456789_.-AZaz") | st.characters()


@given(
    st.one_of(st.text(_NAME_CHARS, max_size=40), st.from_regex(r"#block[0-9]{0,6}", fullmatch=True))
)
def test_shared_name_formula_is_the_name_formula(name: str) -> None:
    """Expanded, the macro form is the inline formula term for term (z3 builds the same
    term for both: its terms are hash-consed), so it decides N2 the same; and it decides
    the name the way the regular expression of N2 does (the comparison is not vacuous)."""
    formula, macros = name_formula_shared(name)
    assert formula == name_formula_shared.__wrapped__(name)[0]
    assert len(set(macros)) == len(macros)
    text = NAME_PRELUDE + "\n".join(MACRO_TEXT[sym] for sym in macros)
    inline, shared = z3.parse_smt2_string(
        f"{text}\n(assert {name_formula(name)})\n(assert {formula})"
    )
    assert inline.eq(shared)
    solver = z3.Solver()
    solver.add(shared)
    auto = re.fullmatch(r"#block[0-9]{3,}", name) is not None
    plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name) is not None and len(name) <= 31
    assert (solver.check() == z3.sat) == (auto or plain)


def test_char_macros_from_many_threads_each_have_their_text() -> None:
    """Threads making the same new per-character macros at once: every symbol a formula
    uses has its define-fun, and it is the one a single thread would have made."""
    base = 0x20000 + random.Random().randrange(0, 0x30000)  # code points no test used yet
    names = ["".join(chr(base + (i * 7 + j) % 23) for j in range(9)) for i in range(40)]
    seen: list[tuple[str, ...]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work() -> None:
        try:
            start.wait(timeout=30)
            for name in names:
                _formula, macros = name_formula_shared.__wrapped__(name)
                for sym in macros:
                    assert MACRO_TEXT[sym].startswith(f"(define-fun {sym} () Bool (")
                seen.append(macros)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert len(seen) == 8 * len(names)
    for name in names:
        _formula, macros = name_formula_shared(name)
        text = NAME_PRELUDE + "\n".join(MACRO_TEXT[sym] for sym in macros)
        inline, shared = z3.parse_smt2_string(
            f"{text}\n(assert {name_formula(name)})\n(assert {_formula})"
        )
        assert inline.eq(shared)


def _verdict_keys(v: Verdict) -> tuple[bool, list[Any], list[str]]:
    return v.ok, [x.key() for x in v.violations], [x.sentence for x in v.violations]


@given(st.one_of(valid_graphs(), broken_graphs()), st.sampled_from(["qemu", "safe"]))
def test_conjunction_first_decides_as_the_tracked_form(case: Case, policy: str) -> None:
    """z3 on the untracked conjunction first (falling back to the tracked form when it
    is not sat) gives the verdicts, rules, subjects and sentences of the tracked form
    alone, for whole-graph and region checks, on valid and broken graphs."""
    got: dict[bool, list[tuple[bool, list[Any], list[str]]]] = {}
    for fast in (True, False):
        smt.FAST_CONJUNCTION = fast
        try:
            got[fast] = [
                _verdict_keys(check(case.graph, policy=policy, before=case.graph)),
                _verdict_keys(check(case.graph, case.touched, policy=policy)),
            ]
        finally:
            smt.FAST_CONJUNCTION = True
    assert got[True] == got[False]
    # both forms agree with the structural engine too (so neither is vacuous)
    assert got[True][0] == _verdict_keys(
        check(case.graph, policy=policy, before=case.graph, engine="structural")
    )


def test_conjunction_path_reports_a_broken_rule() -> None:
    """A failing conjunction falls back to the tracked form, whose core names the rule."""
    g = BlockGraph()
    g.add_node(BlockNode("9bad", "null-co"))
    verdict = check(g, {"9bad"})
    assert not verdict.ok
    assert [v.rule for v in verdict.violations] == ["N2-name-valid"]


class _Uncached(instances._EdgeLists):
    """The edge lists built afresh on every lookup (what the checker did before)."""

    def __getitem__(self, node: str) -> list[Any]:
        fresh: list[Any] = self.lister(self.graph, node)
        return fresh


@given(st.one_of(valid_graphs(), broken_graphs()))
def test_memoised_edge_lists_enumerate_the_same_instances(case: Case) -> None:
    """One check's memo of edge lists and P1 contexts changes no instance: same
    rules, kinds, literal names and data, in the same order, region and whole."""
    for touched in (case.touched, None):
        region = Region.of(case.graph, touched)
        rules = rules_for("safe")
        before = as_before(case.graph)
        memo = list(instances.enumerate_instances(region, rules, before))
        real = instances._EdgeLists
        instances._EdgeLists = _Uncached  # type: ignore[misc]
        try:
            fresh = list(instances.enumerate_instances(region, rules, before))
        finally:
            instances._EdgeLists = real  # type: ignore[misc]
        assert memo == fresh
        assert memo or not region.nodes  # every region node has its N2 instance at least
