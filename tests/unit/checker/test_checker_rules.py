"""Each rule fires on a hand-built broken graph, with the right subjects and sentence,
in both engines, and stays quiet on valid graphs."""

from __future__ import annotations

import json

import pytest
from checker_graphs import FP, GB, R, S, U, W, chain

from txgraph.checker import RULES, Verdict, check
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Edge, ParentKind
from txgraph.model.perm_bits import Perm, Role


@pytest.fixture(params=["z3", "structural"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def only(v: Verdict, rule: str) -> list:
    return [x for x in v.violations if x.rule == rule]


def test_catalogue_has_every_rule_with_policies() -> None:
    for rid in (
        "G1-acyclic",
        "G2-role-cardinality",
        "G3-filter-shape",
        "G4-edge-name-unique",
        "G5-required-children",
        "N1-namespace",
        "N2-name-valid",
        "P1-edge-perm-formula",
        "P3-perm-conflict",
        "P4-read-only-writer",
        "FS1-force-share-ro",
        "F1-frozen-link",
        "S1-backing-chain-cut",
        "S2-orphaned-writer",
    ):
        assert rid in RULES and RULES[rid].title and RULES[rid].template
    assert RULES["S1-backing-chain-cut"].policies == {"safe"}
    assert RULES["P3-perm-conflict"].policies == {"qemu", "safe"}


@pytest.mark.parametrize("policy", ["qemu", "safe"])
def test_valid_chain_passes_whole_and_touched(engine: str, policy: str) -> None:
    b = chain()
    assert check(b.g, policy=policy, engine=engine).ok
    assert check(b.g, ["top", "top-file"], policy=policy, engine=engine).ok
    assert check(b.g, ["bb:0"], policy=policy, engine=engine, before=b.g).ok


def test_g1_cycle_reported_with_its_edges(engine: str) -> None:
    b = chain()
    b.edge("base-file", "top", "backing", Role.COW)
    for touched in (None, ["base-file"]):
        v = check(b.g, touched, engine=engine)
        [g1] = only(v, "G1-acyclic")
        assert g1.nodes == ("base", "base-file", "mid", "top")
        assert ("base-file", "backing", "top") in g1.edges
        assert ("top", "backing", "mid") in g1.edges


def test_g2_two_cow_children(engine: str) -> None:
    b = chain()
    b.image("other", rw=False)
    b.edge("top", "other", "backing2", Role.COW)
    b.refresh()
    [v] = only(check(b.g, ["top"], engine=engine), "G2-role-cardinality")
    assert v.nodes == ("top",)
    assert v.edges == (("top", "backing", "mid"), ("top", "backing2", "other"))
    assert "2 COW children" in v.sentence


def test_g2_filtered_excludes_data(engine: str) -> None:
    b = GB()
    b.node("f", "file")
    b.node("thr", "throttle")
    b.edge("thr", "f", "file", FP | Role.DATA)
    b.refresh()
    [v] = only(check(b.g, engine=engine), "G2-role-cardinality")
    assert v.edges == (("thr", "file", "f"),) and "FILTERED excludes" in v.sentence


def test_g3_filter_shapes(engine: str) -> None:
    b = GB()
    b.node("f", "file")
    b.node("g", "file")
    b.node("thr", "throttle")
    b.edge("thr", "f", "file", Role.DATA)  # not FILTERED|PRIMARY
    b.edge("f", "g", "backing", Role.COW)  # protocol without backing support
    b.node("q", "qcow2")
    b.node("h", "file")
    b.edge("q", "h", "file", FP)  # qcow2 with a FILTERED child
    b.refresh()
    v = check(b.g, engine=engine)
    got = {(x.nodes, x.sentence.split(" (")[0]) for x in only(v, "G3-filter-shape")}
    assert (("thr",), "Node 'thr'") in got
    assert any(
        n == ("f", "g") and "does not support backing" in s
        for n, s in ((x.nodes, x.sentence) for x in v.violations)
    )
    assert any(
        x.nodes == ("h", "q") and "cannot have a FILTERED child" in x.sentence for x in v.violations
    )


def test_g4_duplicate_child_name(engine: str) -> None:
    b = chain()
    b.node("other-file", "file")
    # BlockGraph.attach refuses this, so go below it: the checker must still catch it.
    b.g.g.add_edge("top", "other-file", key="file", obj=Edge("file", Role.IMAGE))
    [v] = only(check(b.g, ["top"], engine=engine), "G4-edge-name-unique")
    assert v.edges == (("top", "file", "other-file"), ("top", "file", "top-file"))
    assert "two children named 'file'" in v.sentence


def test_g5_required_children(engine: str) -> None:
    b = GB()
    b.node("q", "qcow2")
    b.node("quo", "quorum")
    v = check(b.g, engine=engine)
    assert {x.nodes for x in only(v, "G5-required-children")} == {("q",), ("quo",)}
    assert any("has no 'file' child" in x.sentence for x in v.violations)


def test_n1_device_name_collides_with_node(engine: str) -> None:
    b = chain(export=False)
    b.backend("bb:dev", "top", R, R | W | U, name="mid", description="block device 'mid'")
    b.refresh()
    [v] = only(check(b.g, ["bb:dev"], engine=engine), "N1-namespace")
    assert v.nodes == ("mid",) and v.sentence == "node-name=mid is conflicting with a device id"
    # an export's id lives in its own namespace
    c = chain(export=False)
    c.backend("bb:exp", "top", R, R | W | U, name="mid")
    c.refresh()
    assert check(c.g, engine=engine).ok


@pytest.mark.parametrize(
    "name,ok",
    [
        ("good.name-1_x", True),
        ("#block123", True),
        ("1bad", False),
        ("a" * 32, False),
        ("a b", False),
        ("#block1", False),
        ("n|o", False),
    ],
)
def test_n2_names(engine: str, name: str, ok: bool) -> None:
    b = GB()
    b.node(name, "null-co")
    v = check(b.g, engine=engine)
    assert v.ok is ok
    if not ok:
        [x] = v.violations
        assert x.rule == "N2-name-valid" and x.nodes == (name,)


def test_p1_wrong_edge_perm(engine: str) -> None:
    b = chain()
    b.g.child_edge("top", "file")[1].shared = R | W | U  # type: ignore[index]
    [v] = only(check(b.g, ["top"], engine=engine), "P1-edge-perm-formula")
    assert v.edges == (("top", "file", "top-file"),)
    assert v.sentence == "Edge 'top/file' has permissions RWS/RWU but its parent requires RWS/RU."


def test_p1_force_share_child_shares_all(engine: str) -> None:
    b = GB()
    b.node("f", "file", rw=False, force_share=True)
    b.node("q", "qcow2", rw=False)
    b.edge("q", "f", "file", Role.IMAGE)
    b.refresh()
    assert b.g.child_edge("q", "file")[1].shared == R | W | U | S  # type: ignore[index]
    assert check(b.g, engine=engine).ok
    b.g.child_edge("q", "file")[1].shared = R | U  # type: ignore[index]
    assert only(check(b.g, engine=engine), "P1-edge-perm-formula")


def test_p3_second_format_node_on_used_file(engine: str) -> None:
    b = chain()
    b.node("dup", "qcow2")
    e = b.edge("dup", "top-file", "file", Role.IMAGE)
    e.perm, e.shared = R | W | S, R | U  # what child_perm gives a rw qcow2 without users
    v = check(b.g, ["dup", "top-file"], engine=engine)
    got = only(v, "P3-perm-conflict")
    assert len(got) == 2
    assert (
        "Permission conflict on node 'top-file': permissions 'write, resize' are both "
        "required by node 'dup' (uses node 'top-file' as 'file' child) and unshared by node "
        "'top' (uses node 'top-file' as 'file' child)."
    ) in {x.sentence for x in got}
    assert all(x.edges == (("dup", "file", "top-file"), ("top", "file", "top-file")) for x in got)


def test_p4_writer_on_read_only_node(engine: str) -> None:
    b = chain(export=False)
    b.backend("bb:1", "mid", R | W, R | W | U)
    [v] = only(check(b.g, ["bb:1"], engine=engine), "P4-read-only-writer")
    assert v.nodes == ("mid",) and "'write'" in v.sentence


def test_fs1_force_share_on_rw_node(engine: str) -> None:
    b = GB()
    b.node("f", "file", rw=True, force_share=True)
    [v] = check(b.g, engine=engine).violations
    assert v.rule == "FS1-force-share-ro" and "read-only images" in v.sentence


def _frozen_pair() -> tuple[BlockGraph, GB]:
    before = chain()
    before.g.child_edge("top", "backing")[1].frozen = True  # type: ignore[index]
    after = chain()
    after.g.child_edge("top", "backing")[1].frozen = True  # type: ignore[index]
    return before.g, after


def test_f1_frozen_link_retargeted_or_removed(engine: str) -> None:
    before, after = _frozen_pair()
    assert check(after.g, ["top"], before=before, engine=engine).ok
    after.g.detach("top", "backing")
    after.edge("top", "base", "backing", Role.COW, frozen=True)
    after.refresh()
    [v] = only(check(after.g, ["top"], before=before, engine=engine), "F1-frozen-link")
    assert v.edges == (("top", "backing", "mid"),) and "now points to 'base'" in v.sentence
    before2, after2 = _frozen_pair()
    after2.g.detach("top", "backing")
    [v] = only(check(after2.g, ["top"], before=before2, engine=engine), "F1-frozen-link")
    assert "link removed" in v.sentence


def test_s1_s2_cut_chain_only_under_safe(engine: str) -> None:
    before = chain().g
    after = chain()
    after.g.detach("top", "backing")
    after.refresh()
    assert check(after.g, ["top", "mid"], before=before, engine=engine).ok  # QEMU allows it
    v = check(after.g, ["top", "mid"], before=before, policy="safe", engine=engine)
    assert v.rules() == {"S1-backing-chain-cut", "S2-orphaned-writer"}
    [s1] = only(v, "S1-backing-chain-cut")
    assert s1.nodes == ("mid", "top") and "'mid.qcow2'" in s1.sentence
    [s2] = only(v, "S2-orphaned-writer")
    assert s2.edges == (("bb:0", "root", "top"),) and s2.policy == "safe"


def test_unknown_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from txgraph.checker import smt

    monkeypatch.setattr(smt, "RLIMIT", 1)
    monkeypatch.setattr(smt, "_SHARED", [])  # a fresh session, built with the tiny limit
    try:
        v = check(chain().g)
    finally:
        smt._SHARED.clear()
    assert not v.ok and v.violations[0].rule == "Z1-solver-unknown"


def test_region_delta_ranks_survive_many_inserts() -> None:
    """Filters inserted again and again between two nodes exhaust the rank gap; the
    false alarm must be confirmed away by networkx and never reported."""
    b = chain()
    g = b.g
    assert check(g).ok
    below = "top"
    for i in range(20):
        name = f"thr{i}"
        b.node(name, "throttle")
        g.detach("bb:0", "root")
        b.edge("bb:0", name, "root", FP, ParentKind.ROOT, perm=R | W, shared=R | W | U)
        b.edge(name, below, "file", FP)
        b.g.backends["bb:0"].perm, b.g.backends["bb:0"].shared = R | W, R | W | U
        b.refresh()
        v = check(g, {name, below, "bb:0"})
        assert v.ok, v
        g.generation += 1
        below = name
    b.edge("top-file", "thr19", "backing", Role.COW)
    v = check(g, {"top-file", "thr19"})
    assert "G1-acyclic" in v.rules()


def test_verdict_json_round_trip() -> None:
    b = chain()
    b.g.child_edge("top", "file")[1].perm = Perm.NONE  # type: ignore[index]
    v = check(b.g)
    data = json.loads(v.to_json())
    assert data["ok"] is False and data["violations"][0]["rule"] == "P1-edge-perm-formula"
    assert data["violations"][0]["edges"] == [["top", "file", "top-file"]]


def test_engines_agree_on_every_unit_graph() -> None:
    b = chain()
    b.edge("base-file", "top", "backing", Role.COW)
    b.node("dup", "qcow2")
    b.edge("dup", "top-file", "file", Role.IMAGE, perm=R | W | S, shared=R | U)
    z, s = check(b.g), check(b.g, engine="structural")
    assert [x.key() for x in z.violations] == [x.key() for x in s.violations]
    assert [x.sentence for x in z.violations] == [x.sentence for x in s.violations]


def test_rank_false_alarm_is_confirmed_away() -> None:
    """Fixed ranks are only sufficient: squeeze them so no integer fits between the
    neighbours of a touched node; networkx finds no cycle, the checker renumbers."""
    from txgraph.checker import ranks

    b = chain()
    assert check(b.g).ok
    state = ranks._STATES[b.g]
    state.ranks["top"] = state.ranks["base"] = 7
    assert check(b.g, {"mid"}).ok
    assert state.ranks["top"] != 7  # renumbered from the graph
    b.edge("base-file", "mid", "backing", Role.COW)
    assert "G1-acyclic" in check(b.g, {"base-file", "mid"}).rules()
