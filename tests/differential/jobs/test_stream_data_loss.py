"""QEMU 7.2's stream data-loss sequence, and the QSD crash on a detached filter.

Data loss: while ``block-stream top base-node=base`` runs, ``blockdev-reopen`` of
mid with ``backing: null`` is accepted (only top->mid is frozen; QEMU has no op
blocker for reopen). At the end the stream points top's backing at whatever
is below mid now — nothing — so the guest reads zeros where base held data.
Under the ``qemu`` policy txgraph does exactly that, byte for byte as QSD;
under ``safe`` the reopen is refused (J1-job-chain-cut) and no data is lost.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import _run_setup, cmd
from tests.differential.jobs.harness import JobScenario, Nodes, Wait, job_differential
from tests.differential.jobs.test_stream import ADD_CHAIN, CHAIN_SETUP, IMAGES
from txgraph.ops.session import Session
from txgraph.oracle.peers import QSDPeer
from txgraph.qmp.command_table import CommandContext
from txgraph.qmp.engine import Engine

pytestmark = pytest.mark.qsd

CUT_MID = cmd(
    "blockdev-reopen",
    {
        "options": [
            {
                "driver": "qcow2",
                "node-name": "mid",
                "file": "mid-f",
                "backing": None,
                "read-only": True,
            }
        ]
    },
)
START = cmd("block-stream", {"device": "top", "job-id": "j", "speed": 1, "base-node": "base"})

DATA_LOSS = JobScenario(
    "stream-base-chain-cut",
    (
        ADD_CHAIN,
        START,
        cmd("job-pause", {"id": "j"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        CUT_MID,
        cmd("block-job-set-speed", {"device": "j", "speed": 0}),
        cmd("job-resume", {"id": "j"}),
        Wait("BLOCK_JOB_COMPLETED", {"device": "j"}),
        Wait("JOB_STATUS_CHANGE", {"status": "null"}),
        Nodes(),
    ),
    CHAIN_SETUP,
    IMAGES,
)


def _reads(path: Path, pattern: int, offset: int, length: int) -> bool:
    res = subprocess.run(
        ["qemu-io", "-r", "-U", "-c", f"read -P {pattern} {offset} {length}", str(path)],
        capture_output=True,
        text=True,
    )
    return res.returncode == 0 and "Pattern verification failed" not in res.stdout


def test_qemu_policy_loses_the_same_data_as_qsd() -> None:
    assert not job_differential(DATA_LOSS)


def test_qsd_really_loses_base_data(tmp_path: Path) -> None:
    """The oracle itself: after the sequence, top reads zeros where only base had data."""
    _run_setup(CHAIN_SETUP, tmp_path)
    peer = QSDPeer(tmp_path)
    try:
        for step in DATA_LOSS.steps:
            if isinstance(step, Wait):
                assert peer.wait_event(step.event, step.match, 60) is not None
            elif isinstance(step, dict):
                reply = peer.execute(step)
                assert "error" not in reply, reply
    finally:
        peer.close()
    assert _reads(tmp_path / "top.qcow2", 0, 0, 1 << 20)  # base's 0xaa is gone
    assert _reads(tmp_path / "top.qcow2", 0xCC, 1 << 20, 1 << 20)  # mid's data was streamed


def _client(tmp_path: Path, policy: str) -> tuple[Engine, list[dict[str, Any]]]:
    _run_setup(CHAIN_SETUP, tmp_path)
    engine = Engine(CommandContext(Session(policy=policy)))
    events: list[dict[str, Any]] = []
    engine.add_event_listener(events.append)
    return engine, events


def test_safe_policy_refuses_the_cut_and_keeps_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine, events = _client(tmp_path, "safe")
    try:
        for step in (ADD_CHAIN, START, cmd("job-pause", {"id": "j"})):
            assert "return" in engine.execute(step)
        graph = engine.execute(cmd("x-debug-query-block-graph"))
        reply = engine.execute(CUT_MID)
        assert reply["error"]["class"] == "GenericError"
        assert reply["error"]["desc"].startswith(
            "stream job 'j' still needs the link 'mid' -> 'base' ('backing'; removed)"
        )
        explanation = reply["error"]["__io.txgraph_explanation"]
        assert explanation["rule"] == "J1-job-chain-cut"
        assert engine.execute(cmd("x-debug-query-block-graph")) == graph  # nothing changed
        engine.execute(cmd("block-job-set-speed", {"device": "j", "speed": 0}))
        engine.execute(cmd("job-resume", {"id": "j"}))
        deadline = time.monotonic() + 60
        while not any(e["event"] == "BLOCK_JOB_COMPLETED" for e in events):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        engine.context.session.close()
    assert _reads(tmp_path / "top.qcow2", 0xAA, 0, 1 << 20)  # base's data still reachable
    assert _reads(tmp_path / "top.qcow2", 0xCC, 1 << 20, 1 << 20)


def test_qsd_crash_detached_cor(tmp_path: Path) -> None:
    """QSD 7.2 dies on query-named-block-nodes while a concluded stream (auto-dismiss off)
    still holds its dropped copy-on-read filter (fixed upstream in 10.2, 9dbfd4e28d);
    txgraph refuses the query the way QEMU refuses a node without a size, keeps serving,
    and answers it again once the job is dismissed. Kept out of every other
    scenario's path."""
    _run_setup(CHAIN_SETUP, tmp_path)
    steps = (
        ADD_CHAIN,
        cmd("block-stream", {"device": "top", "job-id": "j", "auto-dismiss": False}),
    )
    qsd = QSDPeer(tmp_path)
    try:
        for step in steps:
            assert "return" in qsd.execute(step)
        assert qsd.wait_event("JOB_STATUS_CHANGE", {"status": "concluded"}, 60) is not None
        reply = qsd.execute(cmd("query-named-block-nodes"))
    finally:
        qsd.close()
    if "return" in reply:
        pytest.fail(
            "QSD 7.2 answered query-named-block-nodes with a detached filter: the "
            "pinned crash is gone (a newer QEMU?)"
        )
    assert reply["error"]["class"] == "PeerDied"

    other = tmp_path / "tx"
    other.mkdir()
    engine, events = _client(other, "qemu")
    try:
        cwd = os.getcwd()
        os.chdir(other)
        try:
            for step in steps:
                assert "return" in engine.execute(step)
            deadline = time.monotonic() + 60
            while not any(
                e["event"] == "JOB_STATUS_CHANGE" and e["data"]["status"] == "concluded"
                for e in events
            ):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            reply = engine.execute(cmd("query-named-block-nodes"))
            # QEMU's generic path for a node without a size (bdrv_query_image_info)
            assert reply["error"]["desc"] == "Can't get image size '': No medium found"
            assert engine.execute(cmd("job-dismiss", {"id": "j"})) == {"return": {}}
            nodes = engine.execute(cmd("query-named-block-nodes"))["return"]
            assert not any(n["drv"] == "copy-on-read" for n in nodes)
        finally:
            os.chdir(cwd)
    finally:
        engine.context.session.close()
