"""Plan verification sees the guest view (V1-guest-view), on real images through the CLI.

The newcomer's plan of issue 11 (top reopened onto base, then mid deleted) is
refused under ``safe`` with the range and both layers, accepted when mid holds
no data, accepted under ``qemu``, and accepted when the step declares its
intent; a snapshot plus a throttle filter keeps the view. Every run leaves the
images byte for byte as they were (a dry run never writes).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.plan.guestkit import (
    DEL_MID,
    NEWCOMER,
    REOPEN_CUT,
    REOPEN_SKIP_MID,
    SNAPSHOT_AND_THROTTLE,
    MiB,
    make_chain,
    state,
)
from txgraph.plan.format import PlanError, parse_plan, substitute_dir
from txgraph.plan.seal import seal_problem
from txgraph.plan.verify import verify_plan


def _plan_file(d: Path, steps: list[dict[str, Any]], **extra: Any) -> Path:
    path = d.parent / "plan.json"
    path.write_text(json.dumps({"graph": state(), "steps": steps, **extra}))
    return path


def _run(plan: Path, d: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = subprocess.run(
        [sys.executable, "-m", "txgraph.cli", "plan", str(plan), "--dir", str(d), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_newcomer_plan_is_refused_under_safe_with_ranges_and_layers(images: Path) -> None:
    make_chain(images)
    before = _digests(images)
    rc, report = _run(_plan_file(images, NEWCOMER), images)
    assert rc == 1 and report["ok"] is False
    reopen, delete = report["steps"]
    assert reopen["accepted"] and not reopen["ok"]  # QEMU accepts it; the checker does not
    (v,) = [v for v in reopen["verdict"]["violations"] if v["rule"] == "V1-guest-view"]
    assert v["root"] == "bb:export:vm0"
    assert v["ranges"] == [{"offset": 4 * MiB, "length": 4 * MiB, "before": "mid", "after": "base"}]
    assert v["sentence"] == (
        "Guest reads through export 'vm0' (on 'top') of 4 MiB at 4 MiB would return base's data "
        "instead of mid's."
    )
    # deleting mid afterwards changes nothing more: no guest reads it any longer
    assert delete["accepted"] and delete["ok"]
    assert _digests(images) == before


def test_the_same_plan_with_mid_empty_is_accepted(images: Path) -> None:
    make_chain(images, mid_data=False)
    rc, report = _run(_plan_file(images, NEWCOMER), images)
    assert rc == 0 and report["ok"] is True, report["steps"][0]["verdict"]


def test_qemu_policy_accepts_it_as_qemu_does(images: Path) -> None:
    make_chain(images)
    rc, report = _run(_plan_file(images, NEWCOMER), images, "--policy", "qemu")
    assert rc == 0 and report["ok"] is True
    assert all(s["accepted"] for s in report["steps"])


def test_declared_intent_is_reported_not_refused_and_sealed(images: Path) -> None:
    make_chain(images)
    steps = [{**REOPEN_SKIP_MID, "intent": "changes-guest-data"}, DEL_MID]
    rc, report = _run(_plan_file(images, steps), images)
    assert rc == 0 and report["ok"] is True
    verdict = report["steps"][0]["verdict"]
    assert verdict["ok"] and [d["rule"] for d in verdict["declared"]] == ["V1-guest-view"]
    assert report["plan"][0]["intent"] == "changes-guest-data"
    assert seal_problem(report) is None
    edited = {
        **report,
        "plan": [{k: v for k, v in report["plan"][0].items() if k != "intent"}, report["plan"][1]],
    }
    assert seal_problem(edited) is not None  # the intent is bound by the seal
    # the plan-level intent declares it for every step
    rc, report = _run(_plan_file(images, NEWCOMER, intent="changes-guest-data"), images)
    assert rc == 0 and report["steps"][0]["verdict"]["declared"]


def test_snapshot_and_throttle_filter_are_accepted_under_safe(images: Path) -> None:
    make_chain(images)
    rc, report = _run(_plan_file(images, SNAPSHOT_AND_THROTTLE), images)
    assert rc == 0 and report["ok"] is True, [s["verdict"] for s in report["steps"]]
    assert all(s["verdict"]["violations"] == [] for s in report["steps"])
    assert not any("declared" in s["verdict"] for s in report["steps"])


def test_a_backing_cut_reads_zeroes_and_is_refused(images: Path) -> None:
    make_chain(images)
    plan = parse_plan(substitute_dir({"graph": state(), "steps": [REOPEN_CUT]}, str(images)))
    report = verify_plan(plan).to_dict()
    rules = [v["rule"] for v in report["steps"][0]["verdict"]["violations"]]
    # S1 says it by shape (the header names a backing file), V1 by data
    assert "S1-backing-chain-cut" in rules and "V1-guest-view" in rules
    (v,) = [v for v in report["steps"][0]["verdict"]["violations"] if v["rule"] == "V1-guest-view"]
    assert [(r["offset"], r["length"], r["before"], r["after"]) for r in v["ranges"]] == [
        (MiB, 3 * MiB, "base", None),
        (4 * MiB, 4 * MiB, "mid", None),
        (8 * MiB, 8 * MiB, "base", None),
    ]
    assert "would return zeroes instead of base's data" in v["sentence"]


def test_jobs_keep_the_view_commit_of_mid_into_base(images: Path) -> None:
    make_chain(images)
    steps = [
        {
            "execute": "block-commit",
            "arguments": {"job-id": "c0", "device": "top", "top-node": "mid", "base-node": "base"},
        },
        {"wait": "concluded", "job": "c0"},
    ]
    plan = parse_plan(substitute_dir({"graph": state(), "steps": steps}, str(images)))
    report = verify_plan(plan).to_dict()
    assert report["ok"], [s["verdict"] for s in report["steps"]]
    # the job's end did take mid out of top's chain (what V1 would otherwise judge)
    edges = report["steps"][1]["diff"]["edges-changed"]
    moved = {(e["parent"], e["name"]): e["changes"].get("child") for e in edges}
    assert moved[("top", "backing")][1] == "base"  # from the job's filter above mid


@pytest.mark.parametrize("bad", ["yes", None, 1])
def test_intent_values_are_checked(bad: Any) -> None:
    with pytest.raises(PlanError, match="'intent' must be one of"):
        parse_plan({"steps": [{**DEL_MID, "intent": bad}]})


def test_the_example_is_the_kits_plan_and_is_refused(images: Path) -> None:
    from tests.unit.plan.plankit import EXAMPLES

    example = json.loads((EXAMPLES / "skip-mid.json").read_text())
    assert example["graph"] == state() and example["steps"] == NEWCOMER
    make_chain(images)
    rc, report = _run(EXAMPLES / "skip-mid.json", images)
    assert rc == 1 and report["steps"][0]["verdict"]["violations"][0]["rule"] == "V1-guest-view"
