"""QEMU 7.2's data-loss sequences for mirror and active commit (stream's: test_stream_data_loss).

* **mirror** (``sync: top``, the target on mid): only the source is held and only
  top -> mid is its concern, so a ``blockdev-reopen`` of mid with ``backing: null``
  while the mirror is READY is accepted; after the pivot the guest sits on the target,
  on mid, on nothing — base's data is gone.
* **active commit into mid** (``block-commit top base-node=mid``): the chain from the
  job's filter down to mid is frozen, the link mid -> base is not; cutting it while
  the commit runs leaves the committed image without base below it.

Under ``qemu`` txgraph loses exactly what QSD loses (same replies, events, images);
under ``safe`` the cut is refused with a rule and a sentence, and nothing is lost.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import _run_setup, cmd
from tests.differential.jobs.harness import (
    JobScenario,
    Nodes,
    Run,
    Wait,
    job_differential,
    substitute_dir,
)
from tests.differential.jobs.test_mirror import EXPORT, SETUP, guest
from tests.differential.jobs.test_stream import ADD_CHAIN
from tests.differential.jobs.test_stream_data_loss import CUT_MID
from txgraph.ops.session import Session
from txgraph.qmp.command_table import CommandContext
from txgraph.qmp.engine import Engine

pytestmark = pytest.mark.qsd


def _reads(image: str, *commands: str) -> Run:
    argv: list[str] = ["qemu-io", "-r", "-U", f"{{dir}}/{image}"]
    for c in commands:
        argv += ["-c", c]
    return Run(tuple(argv))


CUT_MID_RW = cmd(
    "blockdev-reopen",
    {
        "options": [
            {
                "driver": "qcow2",
                "node-name": "mid",
                "file": "mid-f",
                "backing": None,
                "read-only": False,
            }
        ]
    },
)
ADD_TGT_TOP = cmd(
    "blockdev-add",
    {
        "driver": "qcow2",
        "node-name": "tgt-top",
        "backing": "mid",
        "file": {"driver": "file", "filename": "tgt-top.qcow2", "node-name": "tgt-top-f"},
    },
)

#: sync=top: the target takes top's data and, after the pivot, sits on mid, base below
MIRROR = JobScenario(
    "mirror-top-chain-cut",
    (
        ADD_CHAIN,
        ADD_TGT_TOP,
        *EXPORT,
        cmd(
            "blockdev-mirror", {"device": "top", "job-id": "m", "target": "tgt-top", "sync": "top"}
        ),
        Wait("BLOCK_JOB_READY", {"device": "m"}),
        CUT_MID,
        cmd("job-complete", {"id": "m"}),
        Wait("JOB_STATUS_CHANGE", {"status": "null"}),
        Nodes(),
        guest("read -P 0 0 1M", "read -P 0xcc 1M 1M"),  # base's 0xaa is gone for the guest
    ),
    SETUP,
    ("tgt-top.qcow2", "mid.qcow2"),
)

#: into mid: the committed image is mid, and base below it is cut away
ACTIVE_COMMIT = JobScenario(
    "active-commit-base-chain-cut",
    (
        ADD_CHAIN,
        *EXPORT,
        cmd("block-commit", {"device": "top", "job-id": "c", "base-node": "mid"}),
        Wait("BLOCK_JOB_READY", {"device": "c"}),
        CUT_MID_RW,
        cmd("job-complete", {"id": "c"}),
        Wait("JOB_STATUS_CHANGE", {"status": "null"}),
        Nodes(),
        guest("read -P 0 0 1M", "read -P 0xdd 3M 64k"),  # base's 0xaa is gone for the guest
    ),
    SETUP,
    ("mid.qcow2",),
)


@pytest.mark.parametrize("scenario", [MIRROR, ACTIVE_COMMIT], ids=lambda s: s.name)
def test_qemu_policy_loses_the_same_data_as_qsd(scenario: JobScenario) -> None:
    assert not job_differential(scenario)


@pytest.mark.parametrize("scenario", [MIRROR, ACTIVE_COMMIT], ids=lambda s: s.name)
def test_safe_policy_refuses_the_cut(scenario: JobScenario, tmp_path: Path) -> None:
    _run_setup(SETUP, tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    engine = Engine(CommandContext(Session(policy="safe")))
    try:
        events: list[dict[str, Any]] = []
        engine.add_event_listener(events.append)
        steps = [s for s in scenario.steps if isinstance(s, dict)]
        cut = next(i for i, s in enumerate(steps) if s["execute"] == "blockdev-reopen")
        for step in steps[:cut]:
            assert "return" in engine.execute(substitute_dir(step, str(tmp_path))), step
        deadline = time.monotonic() + 60
        while not any(e["event"] == "BLOCK_JOB_READY" for e in events):
            assert time.monotonic() < deadline, "no READY"
            time.sleep(0.01)
        before = engine.execute(cmd("x-debug-query-block-graph"))
        reply: dict[str, Any] = engine.execute(steps[cut])
        assert reply["error"]["class"] == "GenericError"
        rule = reply["error"]["__io.txgraph_explanation"]["rule"]
        assert rule in ("J1-job-chain-cut", "S1-backing-chain-cut"), reply
        assert "base" in reply["error"]["desc"]
        assert engine.execute(cmd("x-debug-query-block-graph")) == before  # nothing changed
    finally:
        engine.context.session.close()
        os.chdir(cwd)
    assert subprocess.run(["qemu-img", "check", "-q", str(tmp_path / "mid.qcow2")]).returncode == 0


@pytest.mark.parametrize("scenario", [MIRROR, ACTIVE_COMMIT], ids=lambda s: s.name)
def test_qsd_really_loses_base_data(scenario: JobScenario) -> None:
    """The oracle itself: after the pivot the guest reads zeros where only base held data
    (the image files still name base: the loss is the live guest view until a restart)."""
    import shutil

    from tests.differential.jobs.harness import QSDPeer, run_job_scenario

    trace = run_job_scenario(scenario, QSDPeer)
    try:
        status, lines = trace.records[-1][1]  # the guest's reads after the pivot
        assert status == 0 and not [ln for ln in lines if "verification failed" in ln], lines
    finally:
        shutil.rmtree(trace.workdir, ignore_errors=True)
