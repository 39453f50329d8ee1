"""block-stream and the generic job verbs, differentially against qemu-storage-daemon 7.2.

Every scenario runs on a real QSD and on txgraph in directories of their own;
replies, the graph at chosen points, the whole event sequence and the images
(allocation, backing string, content) must agree (tests/differential/jobs/harness.py).
Rate-limited jobs (``speed: 1``) sit in their first sleep after one chunk, so
the graph and the verbs are compared while the job is known to be running.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import cmd, qemu_img, qemu_io
from tests.differential.jobs.harness import Graph, JobScenario, Nodes, Wait, job_differential

pytestmark = pytest.mark.qsd

#: base (0xaa at 0-1M, 0xbb at 2M-2.5M) <- mid (0xcc at 1M-2M) <- top (0xdd at 3M-3M+64k)
CHAIN_SETUP = (
    qemu_img("create -q -f qcow2 {dir}/base.qcow2 4M"),
    qemu_io("-c 'write -P 0xaa 0 1M' -c 'write -P 0xbb 2M 512k' {dir}/base.qcow2"),
    qemu_img("create -q -f qcow2 -b base.qcow2 -F qcow2 {dir}/mid.qcow2"),
    qemu_io("-c 'write -P 0xcc 1M 1M' {dir}/mid.qcow2"),
    qemu_img("create -q -f qcow2 -b mid.qcow2 -F qcow2 {dir}/top.qcow2"),
    qemu_io("-c 'write -P 0xdd 3M 64k' {dir}/top.qcow2"),
)
IMAGES = ("top.qcow2", "mid.qcow2", "base.qcow2")


def _file(name: str) -> dict[str, Any]:
    return {"driver": "file", "filename": f"{name}.qcow2", "node-name": f"{name}-f"}


ADD_CHAIN = cmd(
    "blockdev-add",
    {
        "driver": "qcow2",
        "node-name": "top",
        "file": _file("top"),
        "backing": {
            "driver": "qcow2",
            "node-name": "mid",
            "file": _file("mid"),
            "backing": {"driver": "qcow2", "node-name": "base", "file": _file("base")},
        },
    },
)


def _done(job: str, event: str = "BLOCK_JOB_COMPLETED") -> tuple[Wait, Wait]:
    return Wait(event, {"device": job}), Wait("JOB_STATUS_CHANGE", {"id": job, "status": "null"})


def scenario(name: str, *steps: Any, doc: str = "") -> JobScenario:
    return JobScenario(name, (ADD_CHAIN, *steps), CHAIN_SETUP, IMAGES, doc)


SCENARIOS = [
    scenario(
        "stream-whole-chain",
        cmd("block-stream", {"device": "top", "job-id": "j"}),
        *_done("j"),
        Graph(),
        Nodes(),
        cmd("query-jobs"),
        doc="everything below the top is copied in; the top loses its backing",
    ),
    scenario(
        "stream-to-base-node",
        cmd("block-stream", {"device": "top", "job-id": "j", "base-node": "base"}),
        *_done("j"),
        Graph(),
        Nodes(),
        doc="mid's data moves into the top, which then backs onto base",
    ),
    scenario(
        "stream-base-by-filename",
        cmd(
            "block-stream",
            {"device": "top", "job-id": "j", "base": "base.qcow2", "backing-file": "base.qcow2"},
        ),
        *_done("j"),
        Nodes(),
    ),
    scenario(
        "stream-bottom",
        cmd("block-stream", {"device": "top", "job-id": "j", "bottom": "mid"}),
        *_done("j"),
        Graph(),
        Nodes(),
    ),
    scenario(
        "stream-read-only-layer",
        cmd("block-stream", {"device": "mid", "job-id": "j"}),
        *_done("j"),
        Graph(),
        Nodes(),
        doc="mid is reopened read-write for the job and read-only after it",
    ),
    scenario(
        "stream-graph-while-running",
        # The first chunk is copied at once, so the pause always lands after it
        # (with a base-node, QSD may pause before its first copy or after it).
        cmd(
            "block-stream", {"device": "top", "job-id": "j", "speed": 1, "filter-node-name": "cor"}
        ),
        cmd("job-pause", {"id": "j"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        Graph(),
        Nodes(),
        cmd("query-jobs"),
        cmd("query-block-jobs"),
        cmd("blockdev-del", {"node-name": "mid"}),
        cmd("blockdev-del", {"node-name": "top"}),
        cmd("blockdev-del", {"node-name": "cor"}),
        cmd(
            "blockdev-reopen",
            {
                "options": [
                    {"driver": "qcow2", "node-name": "top", "file": "top-f", "backing": "base"}
                ]
            },
        ),
        cmd("block-stream", {"device": "top", "job-id": "k"}),
        cmd("block-stream", {"device": "cor", "job-id": "k"}),
        cmd("block-stream", {"device": "top", "job-id": "j"}),
        cmd("job-cancel", {"id": "j"}),
        *_done("j", "BLOCK_JOB_CANCELLED"),
        Graph(),
        doc="op blockers, frozen links and the job's own nodes while it runs",
    ),
    scenario(
        "stream-verbs",
        cmd("block-stream", {"device": "top", "job-id": "j", "speed": 1}),
        cmd("job-pause", {"id": "j"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        cmd("query-jobs"),
        cmd("query-block-jobs"),
        cmd("job-pause", {"id": "j"}),
        cmd("block-job-cancel", {"device": "j"}),
        cmd("job-complete", {"id": "j"}),
        cmd("block-job-complete", {"device": "j"}),
        cmd("job-finalize", {"id": "j"}),
        cmd("job-dismiss", {"id": "j"}),
        cmd("block-job-set-speed", {"device": "j", "speed": -1}),
        cmd("block-job-set-speed", {"device": "nope", "speed": 1}),
        cmd("job-resume", {"id": "j"}),
        cmd("job-resume", {"id": "j"}),
        cmd("block-job-pause", {"device": "j"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        cmd("block-job-resume", {"device": "j"}),
        cmd("job-pause", {"id": "nope"}),
        cmd("block-job-pause", {"device": "nope"}),
        cmd("block-job-cancel", {"device": "j", "force": True}),
        *_done("j", "BLOCK_JOB_CANCELLED"),
        cmd("query-jobs"),
        cmd("job-cancel", {"id": "j"}),
        cmd("block-job-cancel", {"device": "j"}),
        doc="the verb table, user pause, and the two families' errors",
    ),
    scenario(
        "stream-auto-finalize-off",
        cmd("block-stream", {"device": "top", "job-id": "j", "auto-finalize": False}),
        Wait("BLOCK_JOB_PENDING", {"id": "j"}),
        cmd("query-jobs"),
        Graph(),
        cmd("job-dismiss", {"id": "j"}),
        cmd("job-pause", {"id": "j"}),
        cmd("block-job-finalize", {"id": "j"}),
        *_done("j"),
        cmd("query-jobs"),
        Nodes(),
    ),
    scenario(
        "stream-auto-dismiss-off",
        cmd("block-stream", {"device": "top", "job-id": "j", "auto-dismiss": False}),
        Wait("JOB_STATUS_CHANGE", {"id": "j", "status": "concluded"}),
        cmd("query-jobs"),
        cmd("query-block-jobs"),
        Graph(),
        cmd("job-cancel", {"id": "j"}),
        cmd("job-dismiss", {"id": "j"}),
        Wait("JOB_STATUS_CHANGE", {"id": "j", "status": "null"}),
        cmd("query-jobs"),
        Graph(),
        doc="a concluded job still holds its detached filter (no query of named "
        "nodes there: QSD 7.2 crashes on it, see test_qsd_crash_detached_cor)",
    ),
    scenario(
        "stream-cancel-paused-then-restart",
        cmd("block-stream", {"device": "top", "job-id": "j", "speed": 1}),
        cmd("job-cancel", {"id": "j"}),
        *_done("j", "BLOCK_JOB_CANCELLED"),
        cmd("block-stream", {"device": "top", "job-id": "j", "base-node": "base"}),
        *_done("j"),
        Graph(),
        Nodes(),
        doc="after a cancel the ID is free again",
    ),
    scenario(
        "stream-argument-errors",
        cmd("block-stream", {"device": "top"}),
        cmd("block-stream", {"device": "top", "job-id": "1j"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "speed": -1}),
        cmd("block-stream", {"device": "nope", "job-id": "j"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "base": "nope"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "base": "x", "base-node": "base"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "base": "x", "bottom": "mid"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "bottom": "mid", "base-node": "base"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "base-node": "top"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "base-node": "top-f"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "base-node": "nope"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "bottom": "base-f"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "bottom": "nope"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "backing-file": "x"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "filter-node-name": "top"}),
        cmd("block-stream", {"device": "top", "job-id": "j", "filter-node-name": "1x"}),
        cmd("block-stream", {"device": "base", "job-id": "j"}),
        *_done("j"),
        cmd("query-jobs"),
        Graph(),
        doc="QEMU's checks in QEMU's order; a refused stream leaves nothing behind",
    ),
]


@pytest.mark.parametrize("job_scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_stream_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)
