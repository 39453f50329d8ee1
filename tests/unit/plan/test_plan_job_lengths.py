"""A plan's dry run sees the lengths a job changes, as qemu-storage-daemon 7.2 does.

A commit into a base shorter than its top grows the base first (``commit_run``,
``mirror_run`` for an active commit); a mirror between nodes of different
lengths fails when it starts. The dry run copies nothing and writes no image,
so it records the growth; the steps after it (a backup from the grown base into
a target of the new length, the base's ``virtual-size`` in a query) must be
predicted as QSD then answers them. Each plan is also run on QSD itself and the
two are compared step by step.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from txgraph.oracle.peers import QSDPeer
from txgraph.plan.format import parse_plan
from txgraph.plan.verify import verify_plan

pytestmark = pytest.mark.qsd


def _images(d: Path) -> None:
    for args in (
        ["create", "-q", "-f", "qcow2", d / "base.qcow2", "1M"],
        ["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", d / "mid.qcow2", "4M"],
        ["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", d / "top.qcow2"],
        ["create", "-q", "-f", "qcow2", d / "tgt.qcow2", "4M"],
        ["create", "-q", "-f", "qcow2", d / "small.qcow2", "1M"],
    ):
        subprocess.run(["qemu-img", *map(str, args)], check=True, timeout=60)


def _node(name: str, d: Path, **extra: Any) -> dict[str, Any]:
    file = {"driver": "file", "filename": str(d / f"{name}.qcow2"), "node-name": f"{name}-f"}
    return {"driver": "qcow2", "node-name": name, "file": file, **extra}


def _steps(d: Path, commit: dict[str, Any], wait: str) -> list[dict[str, Any]]:
    chain = _node("top", d, backing=_node("mid", d, backing=_node("base", d)))
    return [
        {"execute": "blockdev-add", "arguments": chain},
        {"execute": "blockdev-add", "arguments": _node("tgt", d)},
        {"execute": "blockdev-add", "arguments": _node("small", d)},
        {"execute": "block-commit", "arguments": commit},
        *(
            [{"wait": "ready", "job": "c"}, {"execute": "job-complete", "arguments": {"id": "c"}}]
            if wait == "ready"
            else []
        ),
        {"wait": "null", "job": "c"},
        {
            "execute": "blockdev-backup",
            "arguments": {"device": "base", "target": "tgt", "sync": "full", "job-id": "b"},
        },
        {"wait": "null", "job": "b"},
        {
            "execute": "blockdev-mirror",
            "arguments": {
                "device": "top",
                "target": "small",
                "sync": "full",
                "job-id": "m",
                "auto-dismiss": False,
            },
        },
        {"wait": "concluded", "job": "m"},
        {"execute": "query-jobs"},
        {"execute": "job-dismiss", "arguments": {"id": "m"}},
    ]


def _base_size(nodes: list[dict[str, Any]]) -> int:
    return next(int(n["image"]["virtual-size"]) for n in nodes if n["node-name"] == "base")


def _jobs(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """query-jobs without where the job thread was (progress)."""
    return [
        {k: v for k, v in job.items() if k not in ("current-progress", "total-progress")}
        for job in reply["return"]
    ]


def _on_qsd(d: Path, steps: list[dict[str, Any]]) -> tuple[list[bool], list[dict[str, Any]], int]:
    peer = QSDPeer(d)
    accepted: list[bool] = []
    jobs: list[dict[str, Any]] = []
    try:
        for step in steps:
            if "wait" in step:
                event = peer.wait_event(
                    "JOB_STATUS_CHANGE", {"id": step["job"], "status": step["wait"]}, 60
                )
                accepted.append(event is not None)
            else:
                reply = peer.execute(step)
                accepted.append("return" in reply)
                if step["execute"] == "query-jobs":
                    jobs = _jobs(reply)
        nodes = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        return accepted, jobs, _base_size(nodes["return"])
    finally:
        peer.close()


@pytest.mark.parametrize(
    ("commit", "wait"),
    [
        pytest.param(
            {"device": "top", "job-id": "c", "top-node": "mid", "base-node": "base"},
            "null",
            id="intermediate-commit",
        ),
        pytest.param(
            {"device": "top", "job-id": "c", "base-node": "base"}, "ready", id="active-commit"
        ),
    ],
)
def test_dry_run_sees_the_grown_base(tmp_path: Path, commit: dict[str, Any], wait: str) -> None:
    dry, live = tmp_path / "dry", tmp_path / "qsd"
    for d in (dry, live):
        d.mkdir()
        _images(d)
    steps = _steps(dry, commit, wait)
    report = verify_plan(parse_plan({"steps": steps}), policy="qemu")
    predicted = [r.accepted for r in report.steps]
    query = verify_plan(
        parse_plan(
            {"steps": [*steps, {"execute": "query-named-block-nodes", "arguments": {"flat": True}}]}
        ),
        policy="qemu",
    ).steps[-1]
    accepted, qsd_jobs, qsd_base = _on_qsd(live, _steps(live, commit, wait))
    assert predicted == accepted, [(r.step.to_json(), r.reply) for r in report.steps]
    assert all(accepted)
    assert _base_size(query.reply["return"]) == qsd_base == 4 << 20
    # the backup from the grown base ran; the mirror into the 1 MiB node failed at its start
    jobs = _jobs(report.steps[-2].reply)
    assert jobs == qsd_jobs
    assert jobs[0]["error"] == "Source and target image have different sizes"
