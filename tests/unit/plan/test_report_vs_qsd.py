"""Each step's predicted outcome must be what qemu-storage-daemon 7.2 really does.

The starting graph is built on QSD; the plan is verified on a dry run (from
the captured queries, and from the state commands), then the very same steps
run on QSD, and accept/refuse and QEMU's error text must match step by step.
The plans mix accepted steps and refusals of several kinds (busy node,
duplicate name, permission conflict, in-process image lock conflict, an
aborted transaction group, an overlay that already has a backing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.qsd import QSD
from tests.unit.plan.plankit import EXAMPLES, make_images, qsd_message
from txgraph.plan.format import Step, load_json, load_plan, parse_steps
from txgraph.plan.importer import GraphImport
from txgraph.plan.verify import verify_plan


def _refusals(d: str) -> list[dict[str, Any]]:
    return [
        {"execute": "blockdev-del", "arguments": {"node-name": "disk"}},
        {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "disk"}},
        # a second writer on the exported image: in-process image lock conflict
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "qcow2",
                "node-name": "twin",
                "file": {"driver": "file", "filename": f"{d}/disk0.qcow2"},
            },
        },
        # a second format node on the same protocol node: permission conflict
        {
            "execute": "blockdev-add",
            "arguments": {"driver": "qcow2", "node-name": "twin2", "file": "disk-file"},
        },
        {
            "transaction": [
                {"type": "blockdev-snapshot", "data": {"node": "disk", "overlay": "snap"}},
                {"type": "abort", "data": {}},
            ]
        },
        {"execute": "blockdev-snapshot", "arguments": {"node": "disk", "overlay": "snap"}},
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "qcow2",
                "node-name": "o2",
                "file": {"driver": "file", "node-name": "o2f", "filename": f"{d}/o2.qcow2"},
            },
        },
        # o2's header names disk0.qcow2, so it already has a backing: refused
        {"execute": "blockdev-snapshot", "arguments": {"node": "snap", "overlay": "o2"}},
        {"execute": "blockdev-del", "arguments": {"node-name": "o2"}},
        {
            "execute": "blockdev-reopen",
            "arguments": {
                "options": [
                    {
                        "driver": "qcow2",
                        "node-name": "snap",
                        "file": "snap-file",
                        "backing": "disk",
                        "read-only": True,
                    }
                ]
            },
        },
    ]


def _plans(d: Path) -> dict[str, list[Step]]:
    example = [
        s
        for s in load_plan(EXAMPLES / "seed-section3.json", str(d)).steps
        if not s.execute.startswith("x-")
    ]
    refusals = parse_steps(
        [
            *_refusals(str(d))[:4],
            {
                "execute": "blockdev-add",
                "arguments": {
                    "driver": "qcow2",
                    "node-name": "snap",
                    "backing": None,
                    "file": {
                        "driver": "file",
                        "node-name": "snap-file",
                        "filename": f"{d}/snap0.qcow2",
                    },
                },
            },
            *_refusals(str(d))[4:],
        ]
    )
    return {"example": example, "refusals": refusals}


def _outcomes_on_qsd(qsd: QSD, steps: list[Step]) -> list[tuple[bool, str | None]]:
    out = []
    for step in steps:
        msg = qsd_message(step)
        reply = qsd.execute(msg["execute"], msg.get("arguments"))
        out.append(("return" in reply, reply.get("error", {}).get("desc")))
    return out


@pytest.mark.parametrize("plan_name", ["example", "refusals"])
@pytest.mark.parametrize("state_kind", ["import", "commands"])
def test_predicted_outcomes_match_qsd(
    qsd: QSD, images: Path, plan_name: str, state_kind: str
) -> None:
    make_images(images)
    import subprocess

    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "disk0.qcow2",
            "-F",
            "qcow2",
            str(images / "o2.qcow2"),
        ],
        check=True,
    )
    state = load_json(EXAMPLES / "seed-section3-state.json", str(images))
    # the dry run must not use QSD's NBD socket path
    for msg in state:
        assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg
    start: Any = state
    if state_kind == "import":
        start = GraphImport(
            qsd.cmd("x-debug-query-block-graph"),
            qsd.cmd("query-named-block-nodes", {"flat": True}),
            qsd.cmd("query-block-exports"),
        )
    else:
        start = [m for m in state if m["execute"] != "nbd-server-start"]
        start.insert(
            0,
            {
                "execute": "nbd-server-start",
                "arguments": {"addr": {"type": "unix", "data": {"path": str(images / "dry.sock")}}},
            },
        )
    steps = _plans(images)[plan_name]
    report = verify_plan(steps, start, policy="qemu")
    predicted = [(r.accepted, r.reply.get("error", {}).get("desc")) for r in report.steps]
    actual = _outcomes_on_qsd(qsd, steps)
    assert predicted == actual
    assert report.ok == all(ok for ok, _ in actual)
    if plan_name == "refusals":
        assert [ok for ok, _ in actual].count(False) >= 6  # the plan does exercise refusals
    assert not (images / "dry.sock").exists()  # the dry run never listened
