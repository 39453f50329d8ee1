"""Plans with block-job steps and wait points, dry-run by ``txgraph plan``.

A dry run simulates each job's data work (nothing is copied or written) but
the job goes through its states and makes its graph changes, so the report
shows what the graph looks like at each wait point; the safe policy refuses
a step that would cut a chain a running job still copies from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.jobengine.conftest import chain_args, make_chain
from txgraph.plan.format import parse_plan
from txgraph.plan.verify import verify_plan


def _plan(d: Path, *steps: dict[str, Any]) -> Any:
    return parse_plan({"steps": [{"execute": "blockdev-add", "arguments": chain_args(d)}, *steps]})


def test_active_commit_with_wait_points(tmp_path: Path) -> None:
    make_chain(tmp_path)
    sizes = {p.name: p.read_bytes() for p in tmp_path.glob("*.qcow2")}
    plan = _plan(
        tmp_path,
        {"execute": "block-commit", "arguments": {"device": "top", "job-id": "c"}},
        {"wait": "ready", "job": "c"},
        {"execute": "job-complete", "arguments": {"id": "c"}},
        {"wait": "null", "job": "c"},
    )
    report = verify_plan(plan)
    assert report.ok, [r.reply for r in report.steps if not r.accepted]
    wait_end = report.steps[4]
    assert wait_end.step.to_json() == {"wait": "null", "job": "c"}
    removed = [n["drv"] for n in wait_end.diff["nodes-removed"]]
    assert removed == ["mirror_top"], wait_end.diff  # the filter left with the pivot
    # a dry run only reads the images
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.qcow2")} == sizes


def test_wait_for_a_point_the_job_never_reaches(tmp_path: Path) -> None:
    make_chain(tmp_path)
    plan = _plan(
        tmp_path,
        {"execute": "block-stream", "arguments": {"device": "top", "job-id": "s"}},
        {"wait": "ready", "job": "s", "timeout": 5},
    )
    report = verify_plan(plan)
    assert not report.ok
    assert report.steps[2].reply["error"]["desc"] == "Job 's' ended without reaching 'ready'"


def test_safe_plan_refuses_cutting_the_chain_a_stream_copies(tmp_path: Path) -> None:
    make_chain(tmp_path)
    plan = _plan(
        tmp_path,
        {
            "execute": "block-stream",
            "arguments": {"device": "top", "job-id": "s", "base-node": "base", "speed": 1},
        },
        {
            "execute": "blockdev-reopen",
            "arguments": {
                "options": [
                    {
                        "driver": "qcow2",
                        "node-name": "mid",
                        "file": "mid-f",
                        "backing": None,
                        "read-only": True,
                    }
                ]
            },
        },
    )
    report = verify_plan(plan, policy="safe")
    step = report.steps[2]
    assert not step.accepted or not (step.verdict or {}).get("ok", True)
    rules = [v["rule"] for v in (step.verdict or {}).get("violations", [])]
    desc = step.reply.get("error", {}).get("desc", "")
    assert "J1-job-chain-cut" in rules or "still needs the link 'mid' -> 'base'" in desc, step.reply
