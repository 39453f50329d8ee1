"""The guest-view rule in the symbolic search: z3 finds the graphs on which a step changes
what an export's guest reads, and qemu-storage-daemon 7.2 shows the guest reading it.

The encoding (txgraph.symbolic.guestsmt) gives each layer of the parameter space a
"holds data" literal (the plan's ``data`` constraint) and each export its read path as a
function of the unknown graph; a step breaks V1 when the set of layers the guest reads
data through differs before and after. The counterexample's images get their data
(one 64 KiB cluster of a pattern per data layer), the engine's run of it must name the
same step and rule, and on QSD the export is read in full through its NBD socket before
and after the step: exactly the ranges the engine named change (to zeroes where it said
zeroes). A correct plan over the same kind of space is "none up to N".
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from txgraph.oracle.peers import QSDPeer
from txgraph.plan.format import load_json
from txgraph.symbolic.observe import changed_runs, observe_on_qsd
from txgraph.symbolic.params import ParamPlan, ParamPlanError, load_param_plan
from txgraph.symbolic.search import search

pytestmark = pytest.mark.qsd
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "symbolic"


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="txg-gv-"))  # unix socket paths are short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _raw(name: str, workdir: Path) -> Any:
    return load_json(EXAMPLES / f"{name}.json", str(workdir))


def _plan(name: str, workdir: Path) -> ParamPlan:
    return load_param_plan(_raw(name, workdir))


def _observe(plan: ParamPlan, workdir: Path) -> dict[str, Any]:
    result = search(plan, workdir, max_nodes=8)
    assert result.method == "z3" and result.agrees, result.to_dict()
    assert result.counterexample is not None
    peer = QSDPeer(workdir)
    try:
        return observe_on_qsd(plan, result.counterexample, peer.execute, workdir)
    finally:
        peer.close()


def test_moving_a_backing_past_a_layer_with_data_is_found_and_observed(workdir: Path) -> None:
    """Only the graphs whose skipped layer X-b1 holds data break the view: z3's smallest
    one has data in X-b1 alone, and the guest reads zeroes there afterwards on QSD."""
    plan = _plan("skip-layer", workdir)
    result = search(plan, workdir, max_nodes=8)
    assert result.method == "z3" and result.agrees, result.to_dict()
    assert result.encoding["guest-view-instances"] == 1
    cex = result.counterexample
    assert cex is not None and cex.error is None  # QEMU accepts it
    assert cex.rules == ["V1-guest-view"]
    assert cex.assignment["X"]["data"] == [False, True, False]
    seen = _observe(plan, workdir)
    assert seen["ok"], seen
    assert seen["exports"]["X-exp"]["observed"] == [[65536, 65536]]


def test_an_empty_node_in_place_of_a_chain_with_data_is_found_and_observed(
    workdir: Path,
) -> None:
    plan = _plan("empty-overlay-swap", workdir)
    result = search(plan, workdir, max_nodes=8)
    cex = result.counterexample
    assert result.agrees and cex is not None and cex.step == 1
    assert cex.rules == ["V1-guest-view"] and cex.assignment["X"]["data"] == [True]
    seen = _observe(plan, workdir)
    assert seen["ok"], seen
    assert seen["exports"]["Y-exp"]["observed"] == [[0, 65536]]


def test_a_node_with_data_of_its_own_breaks_the_view_on_every_graph(workdir: Path) -> None:
    """The plan's own image holds data (measured on the scratch runtime, not a parameter):
    the smallest graph, with no data anywhere in X, already breaks V1, and on QSD the guest
    reads ov's cluster at 512 KiB afterwards."""
    plan = _plan("data-overlay-insert", workdir)
    result = search(plan, workdir, max_nodes=8)
    cex = result.counterexample
    assert result.agrees and cex is not None and cex.step == 1
    assert cex.assignment["X"] == {"depth": 1, "writers": 0, "export": "none", "data": [False]}
    seen = _observe(plan, workdir)
    assert seen["ok"], seen
    assert seen["exports"]["Y-exp"]["observed"] == [[512 << 10, 64 << 10]]


def test_on_chains_without_data_the_same_plans_keep_the_view(workdir: Path) -> None:
    """With ``data: none`` no layer holds data: no graph of the space breaks V1."""
    for name in ("skip-layer", "empty-overlay-swap"):
        raw = _raw(name, workdir)
        raw["variables"]["X"]["data"] = "none"
        result = search(load_param_plan(raw), workdir, max_nodes=8)
        assert result.method == "z3" and result.counterexample is None, (name, result.to_dict())
        assert result.prediction is None and result.encoding["guest-view-instances"] >= 1


def test_a_declared_change_is_not_a_counterexample(workdir: Path) -> None:
    raw = _raw("skip-layer", workdir)
    raw["steps"][0]["intent"] = "changes-guest-data"
    result = search(load_param_plan(raw), workdir, max_nodes=8)
    assert result.counterexample is None and result.prediction is None
    assert result.encoding["guest-view-instances"] == 0


def test_the_qemu_policy_accepts_what_qemu_accepts(workdir: Path) -> None:
    result = search(_plan("skip-layer", workdir), workdir, max_nodes=8, policy="qemu")
    assert result.counterexample is None and result.prediction is None


def test_the_seed_plan_keeps_every_guest_view_up_to_8_nodes(workdir: Path) -> None:
    """The snapshot onto an empty overlay, the filter and the cache reopen change the
    export's read path at every step, never the data it reads."""
    result = search(_plan("seed-section3-data", workdir), workdir, max_nodes=8)
    assert result.method == "z3" and result.counterexample is None
    assert result.prediction is None
    assert result.encoding["guest-view-instances"] >= 2


def test_changed_runs_compares_in_4k_grains() -> None:
    a = bytes(16384)
    b = a[:4096] + b"\x01" * 8192 + a[12288:]
    assert changed_runs(a, b) == [(4096, 8192)]
    assert changed_runs(a, a) == []


def test_data_constraints_are_checked() -> None:
    with pytest.raises(ParamPlanError, match="data must be among"):
        load_param_plan({"variables": {"X": {"driver": "qcow2", "data": "some"}}, "steps": []})
    with pytest.raises(ParamPlanError, match="a filter holds none"):
        load_param_plan(
            {
                "variables": {
                    "X": {"driver": "qcow2"},
                    "Y": {"driver": "throttle", "file": "X", "data": "any"},
                },
                "steps": [],
            }
        )
    with pytest.raises(ParamPlanError, match="at most 16 layers"):
        load_param_plan(
            {
                "variables": {"X": {"driver": "qcow2", "backing-depth": 17, "data": "any"}},
                "steps": [],
            }
        )
