"""Transaction-based commands drain everything first, refused or not (QSD 7.2).

``qmp_transaction`` starts with ``bdrv_drain_all``, and ``blockdev-snapshot``,
``blockdev-snapshot-sync`` and ``blockdev-backup`` are one-action transactions
(``blockdev_do_action``). So each of them, even when its action is refused right
away, pauses and resumes every running job: JOB_STATUS_CHANGE paused/running
(standby/ready for a ready mirror) before the reply, and a rate-limited job
woken from its sleep copies its next chunk at once. The events are compared one
for one with QSD's.
"""

from __future__ import annotations

import pytest

from tests.differential.harness import cmd
from tests.differential.jobs.harness import JobScenario, Wait, job_differential
from tests.differential.jobs.test_mirror import ADD_TGT, MIRROR, READY
from tests.differential.jobs.test_mirror import SETUP as MIRROR_SETUP
from tests.differential.jobs.test_stream import ADD_CHAIN, CHAIN_SETUP

pytestmark = pytest.mark.qsd

_STREAM = cmd("block-stream", {"device": "top", "job-id": "j", "speed": 1})
_CANCEL = (
    cmd("block-job-cancel", {"device": "j"}),
    Wait("JOB_STATUS_CHANGE", {"id": "j", "status": "null"}),
)

SCENARIOS = [
    JobScenario(
        "refused-snapshot-sync-drains-a-sleeping-stream",
        (
            ADD_CHAIN,
            _STREAM,
            cmd(
                "blockdev-snapshot-sync",
                {"node-name": "nowhere", "snapshot-file": "{dir}/s.qcow2", "format": "qcow2"},
            ),
            cmd("query-jobs"),
            *_CANCEL,
        ),
        CHAIN_SETUP,
        ("top.qcow2",),
        doc="the node is not found, after the drain: the stream pauses and resumes",
    ),
    JobScenario(
        "refused-snapshot-and-aborted-transaction-drain-too",
        (
            ADD_CHAIN,
            _STREAM,
            cmd("blockdev-snapshot", {"node": "top", "overlay": "nowhere"}),
            cmd("transaction", {"actions": [{"type": "abort", "data": {}}]}),
            cmd("transaction", {"actions": []}),
            *_CANCEL,
        ),
        CHAIN_SETUP,
        ("top.qcow2",),
        doc="a refused blockdev-snapshot, an aborted and an empty transaction: one "
        "pause/resume pair each",
    ),
    JobScenario(
        "refused-backup-drains-a-ready-mirror",
        (
            ADD_CHAIN,
            ADD_TGT,
            cmd("blockdev-mirror", MIRROR),
            READY,
            cmd(
                "blockdev-backup", {"device": "top", "target": "top", "sync": "full", "job-id": "b"}
            ),
            cmd("query-jobs"),
            cmd("job-cancel", {"id": "m"}),
            Wait("JOB_STATUS_CHANGE", {"id": "m", "status": "null"}),
        ),
        MIRROR_SETUP,
        ("top.qcow2", "tgt.qcow2"),
        doc="source and target the same: refused after the drain, which takes the ready "
        "mirror to standby and back",
    ),
]


@pytest.mark.parametrize("job_scenario", [pytest.param(s, id=s.name) for s in SCENARIOS])
def test_transaction_drain_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)
