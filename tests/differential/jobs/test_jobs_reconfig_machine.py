"""Block jobs in the mixed reconfiguration machine, against qemu-storage-daemon 7.2.

:class:`JobReconfigMachine` is the random reconfiguration machine of
tests/differential/test_random_reconfig.py (adds, deletions, reopens, snapshots,
transactions, quorum changes, throttle groups, malformed requests) plus rules
that start block-stream, block-commit, blockdev-mirror and blockdev-backup on
whatever nodes the sequence has built, and send every ``job-*`` verb to them.
Each step still goes to a QSD and to txgraph and the replies, named nodes and
graph (with job vertices, filters, perms) must agree, so the reconfiguration
rules now also run against graphs that jobs have frozen, blocked and filtered.

Timing is made deterministic without sleeps: jobs start with ``speed: 0`` and
``auto-finalize: false`` on small images, and after every step that may move a
job the machine polls ``query-jobs`` on both peers (with a deadline) until the
job has *settled* -- ``pending`` (its graph change waits for job-finalize),
``ready`` or ``standby`` (a mirror or active commit), ``concluded``, or gone.
Those states only change by a command, so every later step meets the same job
on both peers; ``query-jobs`` is compared at each settle point (without the
progress members, which say where a copy loop happened to be).
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from tests.differential.harness import SetupAction, cmd, qemu_io
from tests.differential.jobs.harness import canon_jobs
from tests.differential.test_random_reconfig import SETUP, ReconfigMachine, _ref
from txgraph.oracle.canon import canon_reply, substitute

pytestmark = pytest.mark.qsd

JOB_IDS = ["j0", "j1"]
#: statuses only a command moves a job out of
SETTLED = frozenset({"pending", "ready", "standby", "concluded", "null"})
SETTLE_DEADLINE = 60.0
VERBS = ["job-finalize", "job-dismiss", "job-complete", "job-cancel", "job-pause", "job-resume"]


class JobReconfigMachine(ReconfigMachine):
    """The mixed machine with jobs: starts, verbs and settle points."""

    # data in the chain's base and in a standalone image, so jobs have something to copy
    SETUP_ACTIONS: ClassVar[list[SetupAction]] = [
        *SETUP,
        qemu_io("-c 'write -P 0x5a 0 256k' {dir}/b0.qcow2"),
        qemu_io("-c 'write -P 0x6b 512k 128k' {dir}/i0.qcow2"),
    ]
    WRITES = True

    def _jobs(self, index: int) -> list[dict[str, Any]]:
        reply = self.peers[index].execute(cmd("query-jobs"))
        return list(reply.get("return") or [])

    def _settle(self, job: str) -> None:
        """Poll both peers until ``job`` has settled, then compare their query-jobs."""
        for index, peer in enumerate(self.peers):
            deadline = time.monotonic() + SETTLE_DEADLINE
            while True:
                status = next(
                    (j["status"] for j in self._jobs(index) if j.get("id") == job), "null"
                )
                if status in SETTLED:
                    break
                if time.monotonic() > deadline:
                    self._fail(f"job {job} did not settle on {peer}: still {status}", [])
                time.sleep(0.01)
        jobs = [canon_jobs(self._jobs(i)) for i in range(len(self.peers))]
        if jobs[0] != jobs[1]:
            self._fail(
                "query-jobs differs at a settle point:", [f"qsd: {jobs[0]}", f"txgraph: {jobs[1]}"]
            )
        # refresh the machine's view of QSD's state (the job may have changed the graph)
        self._step(cmd("x-debug-query-block-graph"))

    def _step_settled(self, message: dict[str, Any], job: str) -> None:
        """Send a command that may set ``job`` moving; compare the reply at once and the
        state only once the job has settled (while it copies, the images grow)."""
        before_engine = self._engine_state()
        self.history.append(json.dumps(message))
        replies = []
        for i, (peer, d) in enumerate(zip(self.peers, self.dirs)):
            sent = substitute(message, str(d), self.autos[i])
            replies.append(canon_reply(sent, peer.execute(sent), str(d)))
        if replies[0] != replies[1]:
            self._fail(
                "QSD (left) and txgraph (right) reply differently:", [str(r) for r in replies]
            )
        if "error" not in replies[0]:
            self._settle(job)
            return
        after = self._engine_state()
        if before_engine is not None and after != before_engine:
            self._fail("txgraph refused the last step but its state changed:", [str(replies[1])])
        self._step(cmd("x-debug-query-block-graph"))

    def _start(self, execute: str, args: dict[str, Any], job: str) -> None:
        self._step_settled(cmd(execute, {**args, "job-id": job, "auto-finalize": False}), job)

    @rule(
        device=ReconfigMachine.nodes,
        job=st.sampled_from(JOB_IDS),
        base=st.one_of(st.none(), ReconfigMachine.nodes),
    )
    def stream(self, device: str, job: str, base: str | None) -> None:
        args: dict[str, Any] = {"device": _ref(device)}
        if base is not None:
            args["base-node"] = _ref(base)
        self._start("block-stream", args, job)

    @rule(
        device=ReconfigMachine.nodes,
        job=st.sampled_from(JOB_IDS),
        top=st.one_of(st.none(), ReconfigMachine.nodes),
    )
    def commit(self, device: str, job: str, top: str | None) -> None:
        args: dict[str, Any] = {"device": _ref(device)}
        if top is not None:
            args["top-node"] = _ref(top)
        self._start("block-commit", args, job)

    @rule(
        device=ReconfigMachine.nodes,
        dest=ReconfigMachine.nodes,
        job=st.sampled_from(JOB_IDS),
        sync=st.sampled_from(["full", "top", "none"]),
    )
    def mirror(self, device: str, dest: str, job: str, sync: str) -> None:
        # (``target`` is hypothesis' keyword for a rule's output bundle)
        args = {"device": _ref(device), "target": _ref(dest), "sync": sync}
        self._start("blockdev-mirror", args, job)

    @rule(
        device=ReconfigMachine.nodes,
        dest=ReconfigMachine.nodes,
        job=st.sampled_from(JOB_IDS),
        sync=st.sampled_from(["full", "top"]),
    )
    def backup(self, device: str, dest: str, job: str, sync: str) -> None:
        # (sync=none never ends by itself: it would never settle)
        args = {"device": _ref(device), "target": _ref(dest), "sync": sync}
        self._start("blockdev-backup", args, job)

    @rule(verb=st.sampled_from(VERBS), job=st.sampled_from([*JOB_IDS, "nosuch"]))
    def job_verb(self, verb: str, job: str) -> None:
        self._step_settled(cmd(verb, {"id": job}), job)


TestJobReconfig = JobReconfigMachine.TestCase
TestJobReconfig.settings = settings(
    TestJobReconfig.settings,
    max_examples=min(8, TestJobReconfig.settings.max_examples or 8),
)
