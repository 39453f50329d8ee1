"""`txgraph plan` as users run it: the --json schema, the text report, exit codes, no writes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.plan.seal import seal_problem

STEP_KEYS = {
    "index",
    "label",
    "step",
    "extension",
    "accepted",
    "ok",
    "reply",
    "error",
    "explanation",
    "diff",
    "verdict",
    "warnings",
    "not-simulated",
}
DIFF_KEYS = {
    "nodes-added",
    "nodes-removed",
    "nodes-changed",
    "edges-added",
    "edges-removed",
    "edges-changed",
}


def _plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgraph.cli", "plan", *args], capture_output=True, text=True
    )


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_json_schema_of_the_example(images: Path) -> None:
    make_images(images)
    before = _digests(images)
    res = _plan(
        str(EXAMPLES / "seed-section3.json"),
        "--graph",
        str(EXAMPLES / "seed-section3-state.json"),
        "--dir",
        str(images),
        "--json",
    )
    assert res.returncode == 0, res.stderr + res.stdout
    report: dict[str, Any] = json.loads(res.stdout)
    assert set(report) == {"format", "txgraph", "ok", "policy", "source", "plan", "steps", "seal"}
    assert report["format"] == "txgraph-plan-report/1" and report["ok"] is True
    assert report["seal"]["algorithm"] == "sha256" and seal_problem(report) is None
    assert report["policy"] == "safe" and report["source"]["kind"] == "commands"
    assert len(report["plan"]) == len(report["steps"]) == 4
    for i, step in enumerate(report["steps"]):
        assert set(step) == STEP_KEYS and step["index"] == i
        assert step["accepted"] and step["ok"] and step["error"] is None
        assert set(step["diff"]) == DIFF_KEYS
        assert step["verdict"]["ok"] is True and step["verdict"]["violations"] == []
    assert [s["extension"] for s in report["steps"]] == [False, False, True, False]
    snap = report["steps"][1]["diff"]
    assert {
        c["node"]: c["changes"]["ro"] for c in snap["nodes-changed"] if "ro" in c["changes"]
    } == {"disk": [False, True], "disk-file": [False, True]}
    assert {
        (e["parent"], e["name"]): e["changes"]["child"]
        for e in snap["edges-changed"]
        if "child" in e["changes"]
    } == {("export:vm0", "root"): ["disk", "snap"]}
    filt = report["steps"][2]["diff"]
    assert [n["node-name"] for n in filt["nodes-added"]] == ["throttle0"]
    reopen = report["steps"][3]
    assert any(
        w["node"] == "snap-file" and w["option"] == "cache.direct" for w in reopen["warnings"]
    )
    # verification never writes to the user's images, nor creates the NBD socket
    assert _digests(images) == before


def test_refused_step_exit_code_and_text(images: Path, tmp_path: Path) -> None:
    make_images(images)
    plan = tmp_path / "bad.json"
    plan.write_text(
        json.dumps(
            [
                {"execute": "blockdev-del", "arguments": {"node-name": "disk"}},
                {
                    "execute": "blockdev-snapshot-sync",
                    "arguments": {
                        "node-name": "disk",
                        "snapshot-file": str(tmp_path / "new.qcow2"),
                        "snapshot-node-name": "new",
                    },
                },
            ]
        )
    )
    res = _plan(
        str(plan), "--graph", str(EXAMPLES / "seed-section3-state.json"), "--dir", str(images)
    )
    assert res.returncode == 1
    assert "QEMU 7.2 would refuse it: GenericError: Node disk is in use" in res.stdout
    assert "not simulated: blockdev-snapshot-sync would create the image" in res.stdout
    assert "the plan would NOT apply cleanly" in res.stdout
    assert not (tmp_path / "new.qcow2").exists()


def test_safe_policy_flags_a_backing_chain_cut_qemu_accepts(images: Path, tmp_path: Path) -> None:
    """S1: QEMU lets a reopen drop the backing of an image that needs it; safe refuses."""
    make_images(images)
    plan = tmp_path / "cut.json"
    plan.write_text(
        json.dumps(
            [
                {
                    "execute": "blockdev-reopen",
                    "arguments": {
                        "options": [
                            {
                                "driver": "qcow2",
                                "node-name": "disk",
                                "file": "disk-file",
                                "backing": None,
                            }
                        ]
                    },
                }
            ]
        )
    )
    args = [
        str(plan),
        "--graph",
        str(EXAMPLES / "seed-section3-state.json"),
        "--dir",
        str(images),
        "--json",
    ]
    qemu = json.loads(_plan(*args, "--policy", "qemu").stdout)
    safe_run = _plan(*args)
    safe = json.loads(safe_run.stdout)
    assert qemu["ok"] is True and qemu["steps"][0]["accepted"]
    assert safe_run.returncode == 1 and safe["steps"][0]["accepted"]
    rules = {v["rule"] for v in safe["steps"][0]["verdict"]["violations"]}
    assert "S1-backing-chain-cut" in rules
