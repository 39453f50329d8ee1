"""Job lifecycle on txgraph alone: all-or-nothing start and completion, and verbs under stress.

The differential suite (tests/differential/jobs) compares against QSD; these
tests cover what QSD cannot be asked: a fault at every step of a job's start
and of its completion, and many clients driving many jobs at once.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.atomicity import assert_all_steps_atomic
from tests.unit.jobengine.conftest import Client, chain_args, make_chain
from txgraph.jobs.status import TRANSITIONS, JobStatus
from txgraph.jobs.stream import block_stream
from txgraph.ops.blockdev import blockdev_add
from txgraph.ops.query import block_graph
from txgraph.ops.session import Session
from txgraph.qmp.engine import INTERNAL_ERROR


def _wait(cond: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_stream_start_is_all_or_nothing_at_every_step(chain: Path) -> None:
    """A fault at any primitive or prepare step of block-stream leaves graph, data plane,
    descriptors, locks and the job list as they were (no job, no filter)."""

    def setup(session: Session) -> None:
        blockdev_add(session, chain_args(chain))

    def op(session: Session) -> None:
        block_stream(session, {"device": "top", "job-id": "j", "speed": 1})

    steps = assert_all_steps_atomic(setup, op)
    assert steps > 10


def test_a_failing_completion_undoes_itself_and_fails_the_job(chain: Path) -> None:
    """A fault inside the job's final graph change (stream_prepare) aborts that change:
    the job reports the failure, the chain is back as before the job, the filter gone."""
    session = Session()
    client = Client(session)
    try:
        assert client("blockdev-add", chain_args(chain)) == {}
        graph_before = _shape(session)
        with session.lock:  # the job cannot complete before the fault is armed
            assert client("block-stream", {"device": "top", "job-id": "j"}) == {}
            session.fail_next_at = 3
        _wait(
            lambda: any(
                e["event"] == "JOB_STATUS_CHANGE" and e["data"]["status"] == "null"
                for e in client.events
            ),
            "the job to end",
        )
        completed = [e for e in client.events if e["event"] == "BLOCK_JOB_COMPLETED"]
        assert len(completed) == 1 and "error" in completed[0]["data"]
        statuses = [e["data"]["status"] for e in client.events if e["event"] == "JOB_STATUS_CHANGE"]
        assert statuses == [
            "created",
            "running",
            "waiting",
            "pending",
            "aborting",
            "concluded",
            "null",
        ]
        with session.lock:  # the job's last graph change (its release) follows 'null'
            assert _shape(session) == graph_before
        assert client("query-jobs") == []
    finally:
        session.close()


def _shape(session: Session) -> Any:
    g = block_graph(session)
    names = {n["id"]: n["name"] for n in g["nodes"]}
    return sorted(
        (
            names[e["parent"]],
            e["name"],
            names[e["child"]],
            tuple(e["perm"]),
            tuple(e["shared-perm"]),
        )
        for e in g["edges"]
    )


def test_many_clients_many_jobs(tmp_path: Path) -> None:
    """Four threads pause, resume, re-speed and query three rate-limited streams at random;
    every job's status sequence is a path of JobSTT from created to null, no command
    answers with an internal error, and nothing hangs."""
    session = Session()
    client = Client(session)
    jobs = [f"j{i}" for i in range(3)]
    try:
        for i, job in enumerate(jobs):
            d = tmp_path / str(i)
            d.mkdir()
            make_chain(d)
            args = chain_args(d)
            _rename(args, f"c{i}-")
            assert client("blockdev-add", args) == {}
            assert client("block-stream", {"device": f"c{i}-top", "job-id": job, "speed": 1}) == {}
        replies: list[Any] = []

        def worker(seed: int) -> None:
            rnd = random.Random(seed)
            for _ in range(60):
                job = rnd.choice(jobs)
                verb = rnd.choice(
                    [
                        "job-pause",
                        "job-resume",
                        "block-job-set-speed",
                        "query-jobs",
                        "query-block-jobs",
                        "block-job-pause",
                        "block-job-resume",
                    ]
                )
                if verb == "block-job-set-speed":
                    replies.append(client(verb, {"device": job, "speed": rnd.choice([1, 2, 0])}))
                elif verb.startswith("query"):
                    replies.append(client(verb))
                elif verb.startswith("block-job"):
                    replies.append(client(verb, {"device": job}))
                else:
                    replies.append(client(verb, {"id": job}))

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a client hung"
        for job in jobs:
            client("job-cancel", {"id": job})
        _wait(lambda: all(_statuses(client, j)[-1:] == ["null"] for j in jobs), "every job to end")
        assert not [
            r
            for r in replies
            if isinstance(r, dict) and "error" in r and r["error"]["desc"] == INTERNAL_ERROR
        ]
        for job in jobs:
            seq = [JobStatus(s) for s in _statuses(client, job)]
            assert seq[0] is JobStatus.CREATED
            for old, new in itertools.pairwise(seq):
                assert new in TRANSITIONS[old] and new != old, (job, seq)
    finally:
        session.close()


def _statuses(client: Client, job: str) -> list[str]:
    return [
        e["data"]["status"]
        for e in list(client.events)
        if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job
    ]


def _rename(args: dict[str, Any], prefix: str) -> None:
    """Give every node of a chain description a prefix (several chains in one session)."""
    for key, value in list(args.items()):
        if key == "node-name":
            args[key] = prefix + value
        elif isinstance(value, dict):
            _rename(value, prefix)


@pytest.mark.parametrize("fault_at", [1, 4, 9])
@pytest.mark.parametrize("kind", ["mirror", "active-commit", "commit"])
def test_a_failing_end_of_each_job_undoes_itself(tmp_path: Path, kind: str, fault_at: int) -> None:
    """A fault inside the job's final graph change (the mirror's pivot, the commit's
    drop of the intermediates) aborts that change; the job then takes its abort path,
    reports the failure, and the graph is back as before the job (filter gone, no
    pivot, nothing left of the job)."""
    import subprocess

    make_chain(tmp_path)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "tgt.qcow2"), "4M"], check=True
    )
    session = Session()
    client = Client(session)
    try:
        assert client("blockdev-add", chain_args(tmp_path)) == {}
        assert (
            client(
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": "tgt",
                    "file": {"driver": "file", "filename": str(tmp_path / "tgt.qcow2")},
                },
            )
            == {}
        )
        before = _shape(session)
        start = {
            "mirror": (
                "blockdev-mirror",
                {"device": "top", "job-id": "j", "target": "tgt", "sync": "full"},
            ),
            "active-commit": ("block-commit", {"device": "top", "job-id": "j"}),
            "commit": ("block-commit", {"device": "top", "job-id": "j", "top-node": "mid"}),
        }[kind]
        if kind == "commit":
            with session.lock:
                assert client(*start) == {}
                session.fail_next_at = fault_at
        else:
            assert client(*start) == {}
            _wait(lambda: any(e["event"] == "BLOCK_JOB_READY" for e in client.events), "READY")
            with session.lock:
                assert client("job-complete", {"id": "j"}) == {}
                session.fail_next_at = fault_at
        _wait(lambda: _statuses(client, "j")[-1:] == ["null"], "the job to end")
        completed = [e for e in client.events if e["event"] == "BLOCK_JOB_COMPLETED"]
        assert len(completed) == 1 and "error" in completed[0]["data"], client.events
        with session.lock:  # the job's last graph change (its release) follows 'null'
            after = _shape(session)
        if kind == "active-commit":
            # commit_active_start made the base writable; QEMU 7.2 leaves it so on abort
            assert [e for e in after if e[0] != "base"] == [e for e in before if e[0] != "base"]
            assert session.graph.nodes["base"].writable
        else:
            assert after == before
        assert client("query-jobs") == []
    finally:
        session.close()
