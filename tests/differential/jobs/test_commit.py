"""block-commit of an intermediate layer, differentially against qemu-storage-daemon 7.2.

The chain here has mid's data at the very start, so a rate-limited commit has
copied exactly its first chunk when it first sleeps (QSD then pauses after it,
deterministically), and the graph is compared while the job holds it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import cmd, qemu_img, qemu_io
from tests.differential.jobs.harness import Graph, JobScenario, Nodes, Wait, job_differential
from tests.differential.jobs.test_stream import ADD_CHAIN, IMAGES

pytestmark = pytest.mark.qsd

#: base (0xaa at 0-1M) <- mid (0xcc at 0-1M and 2M-3M) <- top (0xdd at 3M-3M+64k)
SETUP = (
    qemu_img("create -q -f qcow2 {dir}/base.qcow2 4M"),
    qemu_io("-c 'write -P 0xaa 0 1M' {dir}/base.qcow2"),
    qemu_img("create -q -f qcow2 -b base.qcow2 -F qcow2 {dir}/mid.qcow2"),
    qemu_io("-c 'write -P 0xcc 0 1M' -c 'write -P 0xcc 2M 1M' {dir}/mid.qcow2"),
    qemu_img("create -q -f qcow2 -b mid.qcow2 -F qcow2 {dir}/top.qcow2"),
    qemu_io("-c 'write -P 0xdd 3M 64k' {dir}/top.qcow2"),
)


def _done(job: str, event: str = "BLOCK_JOB_COMPLETED") -> tuple[Wait, Wait]:
    return Wait(event, {"device": job}), Wait("JOB_STATUS_CHANGE", {"id": job, "status": "null"})


def scenario(name: str, *steps: Any, doc: str = "") -> JobScenario:
    return JobScenario(name, (ADD_CHAIN, *steps), SETUP, IMAGES, doc)


COMMIT = {"device": "top", "job-id": "c", "top-node": "mid", "base-node": "base"}

SCENARIOS = [
    scenario(
        "commit-mid-into-base",
        cmd("block-commit", COMMIT),
        *_done("c"),
        Graph(),
        Nodes(),
        doc="mid's data lands in base; top then backs onto base",
    ),
    scenario(
        "commit-by-filenames",
        cmd(
            "block-commit",
            {
                "device": "top",
                "job-id": "c",
                "top": "mid.qcow2",
                "base": "base.qcow2",
                "backing-file": "base.qcow2",
            },
        ),
        *_done("c"),
        Nodes(),
    ),
    scenario(
        "commit-default-base",
        cmd("block-commit", {"device": "top", "job-id": "c", "top-node": "mid"}),
        *_done("c"),
        Nodes(),
    ),
    scenario(
        "commit-graph-while-running",
        cmd("block-commit", {**COMMIT, "speed": 1, "filter-node-name": "ct"}),
        cmd("job-pause", {"id": "c"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        Graph(),
        Nodes(),
        cmd("query-block-jobs"),
        # (reopen of top onto base here aborts QSD 7.2: test_qsd_crash_named_commit_top)
        cmd("blockdev-del", {"node-name": "base"}),
        cmd("blockdev-del", {"node-name": "mid"}),
        cmd("blockdev-del", {"node-name": "ct"}),
        cmd("block-stream", {"device": "top", "job-id": "s"}),
        cmd("block-commit", {**COMMIT, "job-id": "d"}),
        cmd("block-commit", {"device": "mid", "job-id": "d"}),
        cmd("job-cancel", {"id": "c"}),
        *_done("c", "BLOCK_JOB_CANCELLED"),
        Graph(),
        Nodes(),
        doc="what the job's graph refuses, and a cancel that puts it all back",
    ),
    scenario(
        "commit-implicit-filter-rules",
        cmd("block-commit", {**COMMIT, "speed": 1}),
        cmd("job-pause", {"id": "c"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        Graph(),
        cmd(
            "blockdev-reopen",
            {
                "options": [
                    {"driver": "qcow2", "node-name": "top", "file": "top-f", "backing": "base"}
                ]
            },
        ),
        cmd(
            "blockdev-reopen",
            {
                "options": [
                    {"driver": "qcow2", "node-name": "top", "file": "top-f", "backing": "mid"}
                ]
            },
        ),
        cmd("job-resume", {"id": "c"}),
        cmd("block-job-set-speed", {"device": "c", "speed": 0}),
        *_done("c"),
        Nodes(),
    ),
    scenario(
        "commit-auto-finalize-off",
        cmd("block-commit", {**COMMIT, "auto-finalize": False}),
        Wait("BLOCK_JOB_PENDING", {"id": "c"}),
        Graph(),
        cmd("query-jobs"),
        cmd("job-finalize", {"id": "c"}),
        *_done("c"),
        Nodes(),
    ),
    scenario(
        "commit-argument-errors",
        cmd("block-commit", {"device": "nope"}),
        cmd("block-commit", {"device": "mid"}),
        cmd("block-commit", {"device": "top", "top": "a", "top-node": "mid"}),
        cmd("block-commit", {"device": "top", "top-node": "nope"}),
        cmd("block-commit", {"device": "top", "top-node": "top-f"}),
        cmd("block-commit", {"device": "top", "top": "nope.qcow2"}),
        cmd("block-commit", {"device": "top", "top-node": "mid", "base": "a", "base-node": "base"}),
        cmd("block-commit", {"device": "top", "top-node": "mid", "base-node": "top"}),
        cmd("block-commit", {"device": "top", "top-node": "mid", "base": "nope"}),
        cmd("block-commit", {"device": "top", "top-node": "base"}),
        cmd("block-commit", {"device": "top", "top-node": "mid", "base-node": "mid"}),
        cmd("block-commit", {"device": "top", "top-node": "mid"}),
        cmd("block-commit", {"device": "top", "job-id": "1c", "top-node": "mid"}),
        cmd("block-commit", {"device": "top", "job-id": "c", "top-node": "mid", "speed": -1}),
        cmd(
            "block-commit",
            {"device": "top", "job-id": "c", "top-node": "mid", "filter-node-name": "mid"},
        ),
        cmd("block-commit", {"device": "top", "job-id": "c", "backing-file": "x"}),
        cmd("query-jobs"),
        Graph(),
        Nodes(),
        doc="QEMU's checks in QEMU's order; a refused commit leaves nothing behind",
    ),
]


@pytest.mark.parametrize("job_scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_commit_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)


def test_qsd_crash_named_commit_top() -> None:
    """Reopening the overlay onto the base while a commit with a *named* filter runs aborts
    QSD 7.2 (block.c:2838 bdrv_replace_child_noperm: Assertion '!child->frozen'; the
    filter, dropped by the reopen, still holds its frozen link). txgraph refuses the reopen
    (the filter's link is frozen) and the commit goes on to a normal end."""
    reopen = cmd(
        "blockdev-reopen",
        {"options": [{"driver": "qcow2", "node-name": "top", "file": "top-f", "backing": "base"}]},
    )
    sc = scenario(
        "commit-named-filter-reopen",
        cmd("block-commit", {**COMMIT, "speed": 1, "filter-node-name": "ct"}),
        cmd("job-pause", {"id": "c"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        reopen,
    )
    import shutil

    from tests.differential.jobs.harness import EnginePeer, QSDPeer, run_job_scenario

    qsd = run_job_scenario(sc, QSDPeer)
    tx = run_job_scenario(sc, EnginePeer)
    try:
        qsd_reply, tx_reply = qsd.records[-1][1], tx.records[-1][1]
        if qsd_reply.get("error", {}).get("class") != "PeerDied":
            pytest.fail(f"QSD 7.2 no longer aborts here: {qsd_reply}")
        assert "bdrv_replace_child_noperm" in qsd_reply["error"]["desc"]
        assert tx_reply == {
            "error": {
                "class": "GenericError",
                "desc": "Cannot change frozen 'backing' link from 'ct' to 'mid'",
            }
        }
    finally:
        shutil.rmtree(qsd.workdir, ignore_errors=True)
        shutil.rmtree(tx.workdir, ignore_errors=True)
