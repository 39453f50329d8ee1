"""A fault at every step of a job's cancel path: the job still ends, and ends clean.

QEMU's ``.abort`` and ``.clean`` callbacks cannot fail, so a cancelled job
always takes its filter out, thaws its links and gives back what it reopened.
txgraph runs them as transactions whose primitives can fail; a failed one is
undone and run again (``JobManager._infallible_hook``). For each kind of job
this test cancels it with a fault armed at each primitive and prepare step of
each transaction of the cancel path in turn (abort, clean, the final release),
and checks the end state against a fault-free cancel: same graph with the same
perms and frozen links, no job left, the events of a cancelled job.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit.jobengine.conftest import Client, chain_args, make_chain
from txgraph.ops.query import block_graph
from txgraph.ops.session import Session

#: (start command, wait for READY first) per job kind
STARTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "stream": ("block-stream", {"device": "top", "job-id": "j", "speed": 1}, False),
    "commit": (
        "block-commit",
        {"device": "top", "job-id": "j", "top-node": "mid", "speed": 1},
        False,
    ),
    "active-commit": ("block-commit", {"device": "top", "job-id": "j"}, True),
    "mirror": (
        "blockdev-mirror",
        {"device": "top", "job-id": "j", "target": "tgt", "sync": "full", "speed": 1},
        False,
    ),
    "backup": (
        "blockdev-backup",
        {"device": "top", "job-id": "j", "target": "tgt", "sync": "full", "speed": 1},
        False,
    ),
}

#: a bound on the steps tried per transaction (the cancel paths have far fewer)
MAX_STEPS = 60


def _wait(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _end_state(session: Session) -> Any:
    g = block_graph(session)
    # auto-generated names (#blockNNN) count every open, also the undone ones
    names = {n["id"]: "#" if n["name"].startswith("#") else n["name"] for n in g["nodes"]}
    edges = sorted(
        (
            names[e["parent"]],
            e["name"],
            names[e["child"]],
            tuple(e["perm"]),
            tuple(e["shared-perm"]),
        )
        for e in g["edges"]
    )
    frozen = sorted(
        (p, e.name) for p, _c, e in session.graph.edges() if getattr(e, "frozen", False)
    )
    writable = sorted(
        "#" if n.startswith("#") else n for n, node in session.graph.nodes.items() if node.writable
    )
    return edges, frozen, writable


def _cancelled_run(
    tmp_path: Path, kind: str, *, skip: int = 0, step: int | None = None, prepare: bool = False
) -> tuple[Any, list[str], bool, bool]:
    """Start a job, cancel it with a fault armed; the end state, statuses, fault missed.

    Every run starts from the pristine images: a cancelled stream leaves its
    first chunk in top, so shared images would soon have nothing left to stream.
    """
    run_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    for image in ("base", "mid", "top", "tgt"):
        shutil.copy(tmp_path / f"{image}.qcow2", run_dir / f"{image}.qcow2")
    tmp_path = run_dir
    session = Session()
    client = Client(session)
    try:
        assert client("blockdev-add", chain_args(tmp_path)) == {}
        tgt = {"driver": "file", "filename": str(tmp_path / "tgt.qcow2")}
        assert client("blockdev-add", {"driver": "qcow2", "node-name": "tgt", "file": tgt}) == {}
        execute, args, ready = STARTS[kind]
        assert client(execute, args) == {}
        if ready:
            _wait(lambda: any(e["event"] == "BLOCK_JOB_READY" for e in client.events), "READY")
        with session.lock:  # the job cannot end before the fault is armed
            assert client("job-cancel", {"id": "j"}) == {}
            session.fail_skip_transactions = skip
            if prepare:
                session.fail_next_prepare_at = step
            else:
                session.fail_next_at = step
        _wait(lambda: _statuses(client)[-1:] == ["null"], "the job to end")
        assert client("query-jobs") == []
        ends = [e["event"] for e in client.events if e["event"].startswith("BLOCK_JOB_")]
        assert ends[-1:] == ["BLOCK_JOB_CANCELLED"], client.events
        # still armed: there was no skip+1-th transaction; else it may have been too short
        beyond = session.fail_next_at is not None or session.fail_next_prepare_at is not None
        missed = beyond or (step is not None and session.last_fault_missed)
        return _end_state(session), _statuses(client), missed, beyond
    finally:
        session.close()


def _statuses(client: Client) -> list[str]:
    return [e["data"]["status"] for e in client.events if e["event"] == "JOB_STATUS_CHANGE"]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    make_chain(tmp_path)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "tgt.qcow2"), "4M"], check=True
    )
    return tmp_path


@pytest.mark.parametrize("prepare", [False, True], ids=["primitive", "prepare"])
@pytest.mark.parametrize("kind", sorted(STARTS))
def test_a_fault_anywhere_in_cancel_leaves_the_graph_clean(
    images: Path, kind: str, prepare: bool
) -> None:
    reference, ref_statuses, _, _ = _cancelled_run(images, kind)
    tried = 0
    for skip in range(8):  # abort, clean, release: a handful of transactions at most
        for step in range(1, MAX_STEPS + 1):
            state, statuses, missed, beyond = _cancelled_run(
                images, kind, skip=skip, step=step, prepare=prepare
            )
            assert state == reference, (kind, skip, step)
            assert statuses == ref_statuses, (kind, skip, step)
            if missed:
                break
            tried += 1
        else:
            pytest.fail(f"{kind}: transaction {skip} has more than {MAX_STEPS} steps")
        if beyond:
            break
    else:
        pytest.fail(f"{kind}: the cancel path has more than 8 transactions")
    # the cancel path has at least one transaction with at least one step of this kind
    assert tried >= 1
