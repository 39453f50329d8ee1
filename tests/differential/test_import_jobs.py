"""Importing a graph while a block job runs: its frozen links predict QEMU's refusals.

No query shows a frozen link; the importer rebuilds them from the job's
vertex (txgraph.plan.importer._freeze_job_chains). A rate-limited job keeps
running on a real QSD while the graph is captured, then the same commands go
to QSD and to the scratch engine built from the capture, and replies and state
must agree command by command (``compare_records``, as in the oracle).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.qsd import QSD
from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.oracle.canon import canon_reply
from txgraph.oracle.compare import StepRecord, compare_records
from txgraph.plan.client import capture_graph
from txgraph.plan.format import load_json
from txgraph.plan.live import live_state
from txgraph.plan.verify import scratch_engine

pytestmark = pytest.mark.qsd

_SNAP_FILE = {"driver": "file", "node-name": "snap-file", "filename": "{dir}/snap0.qcow2"}


def _reopen(node: str, file: str, backing: Any) -> dict[str, Any]:
    return {
        "execute": "blockdev-reopen",
        "arguments": {
            "options": [{"driver": "qcow2", "node-name": node, "file": file, "backing": backing}]
        },
    }


JOBS = {
    "stream": ("block-stream", {"job-id": "j", "device": "snap", "speed": 1024}),
    "commit": (
        "block-commit",
        {"job-id": "j", "device": "snap", "top-node": "disk", "speed": 1024},
    ),
    "active-commit": ("block-commit", {"job-id": "j", "device": "snap", "speed": 1024}),
}


def _without_file_sizes(state: tuple[Any, Any]) -> tuple[Any, Any]:
    """A running stream job writes into its overlay's file, which grows: that is live
    data, not the graph, so the file nodes' sizes are not compared."""
    nodes, graph = state
    for node in nodes.values():
        if node.get("drv") == "file":
            node.get("image", {}).pop("virtual-size", None)
    return nodes, graph


@pytest.mark.parametrize("job", list(JOBS))
def test_frozen_links_predicted(job: str, images: Path) -> None:
    make_images(images)
    for image, pattern in (("base0.qcow2", 1), ("disk0.qcow2", 2)):
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 8M", str(images / image)],
            check=True,
            capture_output=True,
        )
    with QSD(workdir=str(images)) as qsd:
        for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
            assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg
        qsd.cmd(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "snap",
                "backing": None,
                "file": {**_SNAP_FILE, "filename": str(images / "snap0.qcow2")},
            },
        )
        qsd.cmd("blockdev-snapshot", {"node": "disk", "overlay": "snap"})
        qsd.cmd(*JOBS[job])
        imp = capture_graph(qsd)
        base = next(n["node-name"] for n in imp.named_nodes if n["drv"] == "qcow2" and
                    n["node-name"].startswith("#"))  # fmt: skip
        engine, _source = scratch_engine(imp)
        probes = [
            _reopen("disk", "disk-file", None),
            _reopen("snap", "snap-file", None),
            _reopen("snap", "snap-file", base),
            {"execute": "blockdev-del", "arguments": {"node-name": "snap"}},
        ]
        frozen_refusals = 0
        try:
            for msg in probes:
                predicted = engine.execute(msg)
                observed = qsd.execute(msg["execute"], msg.get("arguments"))
                a = StepRecord(0, msg["execute"], canon_reply(msg, predicted, None),
                               *_without_file_sizes(live_state(engine.execute)))  # fmt: skip
                live = live_state(lambda m: qsd.execute(m["execute"], m.get("arguments")))
                b = StepRecord(0, msg["execute"], canon_reply(msg, observed, None),
                               *_without_file_sizes(live))  # fmt: skip
                diffs = compare_records(a, b)
                assert diffs == [], "\n".join(diffs)
                frozen_refusals += "frozen" in str(observed.get("error", {}).get("desc", ""))
        finally:
            engine.context.session.close()
        assert frozen_refusals >= 1  # the probes do reach a frozen link
