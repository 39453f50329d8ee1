"""Parameterised plans (txgraph.symbolic.params): counterexamples confirmed on QSD 7.2.

The search builds every starting graph the plan's constraints allow (z3 hands them out
smallest first), dry-runs the plan on each through the real engine, and stops at the
first step that fails. A counterexample is then replayed on a fresh qemu-storage-daemon
7.2: the build and the earlier steps must succeed there and the failing step must fail
with the text txgraph predicted (or, for an unsafe step, be accepted as predicted).
"""

from __future__ import annotations

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
    assignments,
    confirm_on_qsd,
    load_param_plan,
    search,
)

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
    assert cex is not None
    assert cex.assignment["X"]["writers"] == 1  # only the second writer breaks it
    assert cex.step == 2 and cex.rules == ["P3-perm-conflict"]
    assert cex.error is not None and "Permission conflict on node 'X'" in cex.error
    ok, said = _confirm(plan, workdir)
    assert ok, said


def test_a_pure_filter_insertion_has_none(workdir: Path) -> None:
    result = search(_plan("throttle-insert", workdir), workdir, max_nodes=8)
    assert result.counterexample is None
    assert result.candidates == 12 and result.invalid_starts == 0


def test_dropping_a_backing_is_unsafe_but_accepted_by_qsd(workdir: Path) -> None:
    plan = _plan("drop-backing", workdir)
    cex = search(plan, workdir, max_nodes=8).counterexample
    assert cex is not None and cex.error is None
    assert cex.assignment["X"]["depth"] == 2 and "S1-backing-chain-cut" in cex.rules
    ok, said = _confirm(plan, workdir)
    assert ok, said


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
