"""A hypothesis state machine that mixes block jobs with graph reconfiguration (txgraph alone).

Two three-layer chains and two spare targets on real images; rules start
stream, commit (intermediate and active), mirror and backup jobs, drive them
with every verb, and change the graph under them (reopen cutting a backing
link, blockdev-del, filter insertion). After every step:

* no reply is an internal error, and each job's JOB_STATUS_CHANGE sequence
  so far is a path of QEMU's JobSTT;
* the whole graph satisfies every rule of the checker (``qemu`` policy), with
  the z3 and the structural engines agreeing;
* every job the manager lists has its vertex in the graph, and every job
  vertex belongs to a listed job or to one that is concluded.

At the end every job is cancelled and the session closes without hanging.
The differential job suite (tests/differential/jobs) compares the same
commands with QSD; this machine looks for states no scenario thought of.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.unit.jobengine.conftest import Client, chain_args, make_chain
from txgraph.checker import check
from txgraph.jobs.status import TRANSITIONS, JobStatus
from txgraph.ops.session import Session
from txgraph.qmp.engine import INTERNAL_ERROR

JOB_IDS = ("j1", "j2", "j3")
CHAINS = ("a", "b")


def _prefixed(args: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == "node-name":
            out[key] = prefix + str(value)
        elif isinstance(value, dict):
            out[key] = _prefixed(value, prefix)
        else:
            out[key] = value
    return out


class JobsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="txgraph-jobs-machine-"))
        self.session = Session()
        self.client = Client(self.session)
        for chain in CHAINS:
            d = self.dir / chain
            d.mkdir()
            make_chain(d)
            assert self.client("blockdev-add", _prefixed(chain_args(d), f"{chain}-")) == {}
            target = d / "tgt.qcow2"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(target), "4M"], check=True
            )
            assert (
                self.client(
                    "blockdev-add",
                    {
                        "driver": "qcow2",
                        "node-name": f"{chain}-tgt",
                        "file": {"driver": "file", "filename": str(target)},
                    },
                )
                == {}
            )
        self.replies: list[Any] = []

    def _do(self, execute: str, arguments: dict[str, Any] | None = None) -> Any:
        reply = self.client(execute, arguments)
        self.replies.append(reply)
        assert not (
            isinstance(reply, dict)
            and "error" in reply
            and reply["error"].get("desc") == INTERNAL_ERROR
        ), (execute, arguments)
        return reply

    # -- starting jobs -----------------------------------------------------------------------
    @rule(
        job=st.sampled_from(JOB_IDS),
        chain=st.sampled_from(CHAINS),
        top=st.sampled_from(["top", "mid"]),
        base=st.sampled_from([None, "base", "mid"]),
        speed=st.sampled_from([0, 1, 65536]),
    )
    def stream(self, job: str, chain: str, top: str, base: str | None, speed: int) -> None:
        args: dict[str, Any] = {"device": f"{chain}-{top}", "job-id": job, "speed": speed}
        if base is not None:
            args["base-node"] = f"{chain}-{base}"
        self._do("block-stream", args)

    @rule(
        job=st.sampled_from(JOB_IDS),
        chain=st.sampled_from(CHAINS),
        top=st.sampled_from([None, "mid", "top"]),
        speed=st.sampled_from([0, 1]),
    )
    def commit(self, job: str, chain: str, top: str | None, speed: int) -> None:
        args: dict[str, Any] = {"device": f"{chain}-top", "job-id": job, "speed": speed}
        if top is not None:
            args["top-node"] = f"{chain}-{top}"
        self._do("block-commit", args)

    @rule(
        job=st.sampled_from(JOB_IDS),
        chain=st.sampled_from(CHAINS),
        sync=st.sampled_from(["full", "top", "none"]),
        mode=st.sampled_from(["background", "write-blocking"]),
        speed=st.sampled_from([0, 1]),
    )
    def mirror(self, job: str, chain: str, sync: str, mode: str, speed: int) -> None:
        self._do(
            "blockdev-mirror",
            {
                "device": f"{chain}-top",
                "job-id": job,
                "target": f"{chain}-tgt",
                "sync": sync,
                "copy-mode": mode,
                "speed": speed,
            },
        )

    @rule(
        job=st.sampled_from(JOB_IDS),
        chain=st.sampled_from(CHAINS),
        sync=st.sampled_from(["full", "top", "none"]),
        speed=st.sampled_from([0, 1]),
    )
    def backup(self, job: str, chain: str, sync: str, speed: int) -> None:
        self._do(
            "blockdev-backup",
            {
                "device": f"{chain}-top",
                "job-id": job,
                "target": f"{chain}-tgt",
                "sync": sync,
                "speed": speed,
            },
        )

    # -- verbs -------------------------------------------------------------------------------
    @rule(
        job=st.sampled_from(JOB_IDS),
        verb=st.sampled_from(
            ["job-pause", "job-resume", "job-cancel", "job-complete", "job-finalize", "job-dismiss"]
        ),
    )
    def job_verb(self, job: str, verb: str) -> None:
        self._do(verb, {"id": job})

    @rule(job=st.sampled_from(JOB_IDS), force=st.booleans())
    def block_job_cancel(self, job: str, force: bool) -> None:
        self._do("block-job-cancel", {"device": job, "force": force})

    @rule(job=st.sampled_from(JOB_IDS), speed=st.sampled_from([0, 1, -1]))
    def set_speed(self, job: str, speed: int) -> None:
        self._do("block-job-set-speed", {"device": job, "speed": speed})

    # -- the graph under the jobs ------------------------------------------------------------
    @rule(chain=st.sampled_from(CHAINS), node=st.sampled_from(["top", "mid"]))
    def cut_backing(self, chain: str, node: str) -> None:
        self._do(
            "blockdev-reopen",
            {
                "options": [
                    {
                        "driver": "qcow2",
                        "node-name": f"{chain}-{node}",
                        "file": f"{chain}-{node}-f",
                        "backing": None,
                        "read-only": node != "top",
                    }
                ]
            },
        )

    @rule(chain=st.sampled_from(CHAINS), node=st.sampled_from(["top", "mid", "base", "tgt"]))
    def delete(self, chain: str, node: str) -> None:
        self._do("blockdev-del", {"node-name": f"{chain}-{node}"})

    @rule(chain=st.sampled_from(CHAINS))
    def settle(self, chain: str) -> None:
        """Let running jobs make progress (jobs without a limit finish in this time)."""
        time.sleep(0.05)

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def statuses_follow_jobstt(self) -> None:
        seqs: dict[str, list[JobStatus]] = {}
        for event in list(self.client.events):
            if event["event"] == "JOB_STATUS_CHANGE":
                seqs.setdefault(event["data"]["id"], []).append(JobStatus(event["data"]["status"]))
        for job, seq in seqs.items():
            prev = JobStatus.UNDEFINED
            for status in seq:
                if prev is JobStatus.NULL:
                    prev = JobStatus.UNDEFINED  # the ID was used again
                assert status in TRANSITIONS[prev] and status != prev, (job, seq)
                prev = status

    @invariant()
    def graph_satisfies_every_rule(self) -> None:
        with self.session.lock:
            verdict = check(self.session.graph, None, policy="qemu")
        assert verdict.ok, verdict.to_dict()

    @invariant()
    def job_vertices_belong_to_jobs(self) -> None:
        with self.session.lock:
            manager = self.session.jobs
            listed = {j.id for j in manager.jobs} if manager is not None else set()
            vertices = {
                b.name for b in self.session.graph.backends.values() if b.kind.value == "job"
            }
        assert vertices <= listed, (vertices, listed)

    def teardown(self) -> None:
        try:
            for job in JOB_IDS:
                self.client("job-cancel", {"id": job})
            deadline = time.monotonic() + 30
            while self.session.jobs is not None and any(
                j.status not in (JobStatus.CONCLUDED, JobStatus.NULL)
                for j in self.session.jobs.jobs
            ):
                assert time.monotonic() < deadline, "a cancelled job did not end"
                time.sleep(0.02)
        finally:
            self.session.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestJobsMachine = JobsMachine.TestCase
# Each example builds two chains of real images and runs real job threads: a quarter of
# the profile's examples (10 under ci, 250 nightly) keeps the default suite at seconds.
TestJobsMachine.settings = settings(
    max_examples=max(5, settings.default.max_examples // 4),
    stateful_step_count=settings.default.stateful_step_count,
)
