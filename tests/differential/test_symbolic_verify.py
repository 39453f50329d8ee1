"""Parameterised plans: z3 finds the counterexample, the engine and QSD 7.2 confirm it.

The search (txgraph.symbolic.search) encodes the unknown starting graph, the steps and
the checker's rules as one z3 problem (txgraph.symbolic.smtplan) and asks for the
smallest graph on which a step breaks a rule. The model is decoded into QMP commands,
the plan is run on them on the engine (prediction = the engine's failing step and
rules), and then replayed on a fresh qemu-storage-daemon 7.2: the build and the earlier
steps must succeed there and the failing step must fail with the text txgraph predicted
(or, for an unsafe step, be accepted as predicted). The enumeration
(txgraph.symbolic.space.enumerate_search, every assignment run on the engine) is the
cross-check: both must name the same failing assignments on every example plan.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from txgraph.oracle.peers import QSDPeer
from txgraph.plan.format import load_json
from txgraph.symbolic.params import (
    ParamPlan,
    ParamPlanError,
    confirm_on_qsd,
    load_param_plan,
    rule_numbers,
)
from txgraph.symbolic.search import all_predictions, search
from txgraph.symbolic.space import assignments, enumerate_search, failing_assignments

pytestmark = pytest.mark.qsd
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "symbolic"


@pytest.fixture
def workdir() -> Iterator[Path]:
    # unix socket paths are short: not under pytest's tmp_path
    d = Path(tempfile.mkdtemp(prefix="txg-sym-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _plan(name: str, workdir: Path) -> ParamPlan:
    return load_param_plan(load_json(EXAMPLES / f"{name}.json", str(workdir)))


def _confirm(plan: ParamPlan, workdir: Path) -> tuple[bool, str]:
    result = search(plan, workdir, max_nodes=8)
    assert result.counterexample is not None
    peer = QSDPeer(workdir)
    try:
        return confirm_on_qsd(plan, result.counterexample, peer.execute)
    finally:
        peer.close()


def test_filter_insertion_conflicts_with_a_second_writer(workdir: Path) -> None:
    plan = _plan("cbw-insert", workdir)
    result = search(plan, workdir, max_nodes=8)
    cex = result.counterexample
    assert result.method == "z3" and result.agrees, result.to_dict()
    assert result.prediction == {
        "assignment": cex.assignment if cex else None,
        "failing-step": 2,
        "rules": ["P3-perm-conflict"],
    }
    assert cex is not None
    assert cex.assignment["X"]["writers"] == 1  # only the second writer breaks it
    assert cex.step == 2 and cex.rules == ["P3-perm-conflict"]
    assert cex.error is not None and "Permission conflict on node 'X'" in cex.error
    ok, said = _confirm(plan, workdir)
    assert ok, said


def test_a_pure_filter_insertion_has_none(workdir: Path) -> None:
    result = search(_plan("throttle-insert", workdir), workdir, max_nodes=8)
    assert result.method == "z3" and result.prediction is None
    assert result.counterexample is None
    assert result.encoding["states"] == 3 and result.encoding["instances"] > 100


def test_dropping_a_backing_is_unsafe_but_accepted_by_qsd(workdir: Path) -> None:
    plan = _plan("drop-backing", workdir)
    result = search(plan, workdir, max_nodes=8)
    assert result.method == "z3" and result.agrees
    cex = result.counterexample
    assert cex is not None and cex.error is None
    assert cex.assignment["X"]["depth"] == 2 and "S1-backing-chain-cut" in cex.rules
    ok, said = _confirm(plan, workdir)
    assert ok, said


def test_read_only_reopen_breaks_on_a_second_writer(workdir: Path) -> None:
    plan = _plan("reopen-ro", workdir)
    result = search(plan, workdir, max_nodes=8)
    assert result.method == "z3" and result.agrees, result.to_dict()
    cex = result.counterexample
    assert cex is not None and cex.assignment["X"]["writers"] == 1
    assert cex.error == "Read-only block node 'X' cannot support read-write users"
    ok, said = _confirm(plan, workdir)
    assert ok, said


EXAMPLE_PLANS = sorted(p.stem for p in EXAMPLES.glob("*.json"))


@pytest.mark.parametrize("name", EXAMPLE_PLANS)
def test_z3_and_the_enumeration_name_the_same_failing_graphs(name: str, workdir: Path) -> None:
    """Every assignment z3 predicts a failure on (each model blocked in turn) is one the
    engine fails on, with the same step and rules, and no other assignment fails."""
    plan = _plan(name, workdir)
    predicted = sorted(
        (repr(p.assignment), p.step, rule_numbers(p.rules))
        for p in all_predictions(plan, workdir, max_nodes=8)
    )
    observed = sorted(
        (repr(a), step, rule_numbers(rules))
        for a, step, rules in failing_assignments(plan, workdir, max_nodes=8)
    )
    assert predicted == observed


def test_a_step_the_maximal_graph_refuses_falls_back_to_the_enumeration(workdir: Path) -> None:
    """Without ``backing`` a qcow2 reopen is refused on a chain (not a checker rule): the
    encoding cannot know the structure after it, and says so."""
    plan = load_param_plan(
        {
            "variables": {"X": {"driver": "qcow2", "backing-depth": [1, 2]}},
            "steps": [
                {
                    "execute": "blockdev-reopen",
                    "arguments": {
                        "options": [{"driver": "qcow2", "node-name": "X", "file": "X-file"}]
                    },
                }
            ],
        }
    )
    result = search(plan, workdir, max_nodes=8)
    assert result.method == "enumeration"
    assert "backing is missing for 'X'" in result.encoding["not-encoded"]
    cex = result.counterexample
    assert cex is not None and cex.assignment["X"]["depth"] == 2


def test_the_node_bound_limits_the_space(workdir: Path) -> None:
    plan = _plan("throttle-insert", workdir)
    sizes = [2 * a["X"]["depth"] + 1 for a in assignments(plan, 5)]
    assert sizes == sorted(sizes) and max(sizes) == 5 and len(sizes) == 8


def test_malformed_plans_are_refused() -> None:
    with pytest.raises(ParamPlanError, match="driver must be"):
        load_param_plan({"variables": {"X": {"driver": "vmdk"}}, "steps": []})
    with pytest.raises(ParamPlanError, match=r"\[lo, hi\]"):
        load_param_plan(
            {"variables": {"X": {"driver": "qcow2", "backing-depth": [3, 1]}}, "steps": []}
        )
    with pytest.raises(ParamPlanError, match="names no variable"):
        load_param_plan({"variables": {"Y": {"driver": "throttle", "file": "Z"}}, "steps": []})


@pytest.mark.skipif(
    not os.environ.get("TXGRAPH_SYMBOLIC_LONG"),
    reason="long search: TXGRAPH_SYMBOLIC_LONG=1 (minutes; the enumeration runs every graph)",
)
@pytest.mark.parametrize("name", ["throttle-insert", "seed-section3", "cbw-insert"])
def test_large_spaces_agree(name: str, workdir: Path) -> None:
    """Chains of up to 15 layers, up to 6 other writers, 40 nodes: z3 answers in about a
    second, the enumeration runs every graph; both must agree."""
    plan = _plan(name, workdir)
    for var in plan.variables.values():
        if var.driver == "qcow2":
            var.depth, var.writers = (var.depth[0], 15), (var.writers[0], 6)
    z = search(plan, workdir, max_nodes=40)
    e = enumerate_search(plan, workdir, max_nodes=40)
    assert z.method == "z3" and z.agrees
    assert (z.counterexample is None) == (e.counterexample is None)
    if z.counterexample and e.counterexample:
        assert z.counterexample.assignment == e.counterexample.assignment
