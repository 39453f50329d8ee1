"""When a job's end comes before its command's reply (txgraph alone, deterministic).

In QEMU a non-coroutine QMP command runs in a bottom half, and the ``job_exit``
bottom half a job schedules when its coroutine returns without ever yielding runs
before the reply. So a stream with nothing to stream is ``null`` (auto-dismiss) or
``concluded`` when ``block-stream`` returns, while a job that reached a sleep
(``job_sleep_ns`` yields even for 0 ns) is still running. The big lock is held
across the command here, so a job thread could not finish it behind the test's back;
the differential pin is tests/differential/jobs/test_fuzz_findings.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.jobengine.conftest import Client, chain_args
from txgraph.ops.session import Session


def _statuses(client: Client, job: str) -> list[str]:
    return [
        e["data"]["status"]
        for e in client.events
        if e["event"] == "JOB_STATUS_CHANGE" and e["data"]["id"] == job
    ]


def test_a_stream_with_nothing_to_stream_ends_before_its_reply(chain: Path) -> None:
    session = Session()
    client = Client(session)
    try:
        assert client("blockdev-add", chain_args(chain)) == {}
        with session.lock:  # no job thread can take the big lock until we let go
            assert client("block-stream", {"device": "base", "job-id": "j", "speed": 1}) == {}
            assert _statuses(client, "j")[-3:] == ["pending", "concluded", "null"]
            assert client("query-jobs") == []
            names = {n["name"] for n in client("x-debug-query-block-graph")["nodes"]}
            assert names == {"top", "top-f", "mid", "mid-f", "base", "base-f"}
    finally:
        session.close()


def test_auto_dismiss_off_leaves_it_concluded_at_the_reply(chain: Path) -> None:
    session = Session()
    client = Client(session)
    try:
        assert client("blockdev-add", chain_args(chain)) == {}
        with session.lock:
            args = {"device": "base", "job-id": "j", "speed": 1, "auto-dismiss": False}
            assert client("block-stream", args) == {}
            (job,) = client("query-jobs")
            assert job["status"] == "concluded" and job["total-progress"] == 0
        assert client("job-dismiss", {"id": "j"}) == {}
    finally:
        session.close()


def test_a_stream_that_copies_is_still_running_at_its_reply(chain: Path) -> None:
    session = Session()
    client = Client(session)
    try:
        assert client("blockdev-add", chain_args(chain)) == {}
        with session.lock:
            assert client("block-stream", {"device": "top", "job-id": "j", "speed": 1}) == {}
            (job,) = client("query-jobs")
            assert job["status"] == "running"
        assert client("job-cancel", {"id": "j"}) == {}
    finally:
        session.close()
