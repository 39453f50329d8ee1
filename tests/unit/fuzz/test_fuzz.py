"""txgraph fuzz as a product: finding, shrinking and reproducing, and short campaigns.

The QEMU 7.2 crash the reconfiguration state machine found (one node as both
``file`` and ``backing`` of a qcow2, then a raw parent's ``file`` re-pointed at
it) is the known bug every part is checked on: hidden in a longer sequence it
must be detected as a crash with QEMU's assertion text, shrunk to the steps
that matter, written as reproducers, and each reproducer must reproduce it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from txgraph.fuzz import CampaignConfig, families_for, run_campaign
from txgraph.fuzz.replay import render_replay, replay
from txgraph.fuzz.repro import load_reproducer, write_reproducers
from txgraph.fuzz.run import run_sequence
from txgraph.fuzz.shrink import shrink

pytestmark = pytest.mark.qsd

ASSERTION = "parent_quiesce_counter > 0"


def _add(args: dict[str, Any]) -> dict[str, Any]:
    return {"execute": "blockdev-add", "arguments": args}


def _reopen(entry: dict[str, Any]) -> dict[str, Any]:
    return {"execute": "blockdev-reopen", "arguments": {"options": [entry]}}


CRASH = [
    _add({"driver": "null-co", "node-name": "n0"}),
    _add(
        {
            "driver": "qcow2",
            "node-name": "top",
            "read-only": False,
            "file": {"driver": "file", "node-name": "tf", "filename": "{dir}/b1.qcow2"},
        }
    ),
    _add({"driver": "null-co", "node-name": "n1", "size": 512}),
    _add({"driver": "raw", "node-name": "dev", "file": "top"}),
    {"execute": "blockdev-del", "arguments": {"node-name": "n1"}},
    _reopen({"driver": "qcow2", "node-name": "top", "file": "tf", "backing": "tf"}),
    {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
    _reopen({"driver": "raw", "node-name": "dev", "file": "tf"}),
    _add({"driver": "null-co", "node-name": "n2"}),
]


def _fixed(steps: list[dict[str, Any]]) -> Any:
    return lambda i, _res: steps[i] if i < len(steps) else None


def test_crash_found_shrunk_and_reproduced(tmp_path: Path) -> None:
    found = run_sequence(_fixed(CRASH), "qsd")
    d = found.divergence
    # a known QEMU bug (txgraph.fuzz.known): its own kind and signature, not a divergence
    assert d is not None and d.kind == "qsd-crash" and d.step == 7
    assert d.known == "drained-end-no-poll" and d.signature == "qemu-drained-end-no-poll"
    assert ASSERTION in "\n".join(d.lines)
    steps, shrunk = shrink(found.steps, d.signature, "qsd")
    assert shrunk.divergence is not None and shrunk.divergence.signature == d.signature
    # the noise is gone; what is left is the bug: the raw node over its qcow2 (folded
    # into one blockdev-add), the qcow2's file made its backing too, the raw re-pointed
    assert [s["execute"] for s in steps] == ["blockdev-add", "blockdev-reopen", "blockdev-reopen"]
    assert steps[0]["arguments"]["file"]["node-name"] == "top"
    assert "read-only" not in json.dumps(steps[0])  # smallest arguments too
    path = write_reproducers(tmp_path, steps, shrunk.divergence, "qsd")
    repro = load_reproducer(path)
    assert repro["kind"] == "qsd-crash" and repro["steps"] == steps
    # txgraph replay: QSD crashes, txgraph alone keeps its invariants
    again = replay(repro, "both")
    assert again.divergence is not None and again.divergence.kind == "qsd-crash"
    assert "DIVERGENCE (qsd-crash) at step 2" in render_replay(again)
    assert replay(repro, "txgraph").divergence is None
    # the shell script reproduces it with qemu-storage-daemon alone
    sig = d.signature
    res = subprocess.run(
        ["sh", str(tmp_path / f"repro-{sig}.sh")], capture_output=True, text=True, timeout=120
    )
    assert ASSERTION in res.stdout + res.stderr
    # the regression test it wrote fails while the bug is there
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / f"test_repro_{sig}.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert res.returncode == 1 and ASSERTION in res.stdout


@pytest.mark.parametrize("against", ["model", "qsd"])
def test_short_campaign(tmp_path: Path, against: str) -> None:
    # jobs apart: their waits make shrinking a find slow (test_job_life_cycles covers them)
    families = [f for f in families_for(against, None) if f != "jobs"]
    config = CampaignConfig(against, 3.0, 7, tmp_path, families)
    seen: list[dict[str, Any]] = []
    report = run_campaign(config, jobs=1, progress=seen.append)
    assert report["steps"] > 0 and report["sequences"] > 0 and report["behaviours"] > 5
    # How far 3 s get depends on the machine's load, and campaigns do find real
    # divergences within seconds (the differential suites guard behaviour); what this
    # smoke test demands is that each one found is shrunk into its three reproducers.
    for sig, d in report["divergences"].items():
        assert d["repro"] == f"repro-{sig}.json", d
        for name in (f"repro-{sig}.json", f"repro-{sig}.sh", f"test_repro_{sig}.py"):
            assert (tmp_path / name).is_file(), name
    assert "worker_failures" not in report
    assert json.loads((tmp_path / "report.json").read_text())["steps"] == report["steps"]
    assert "txgraph fuzz: against" in (tmp_path / "report.html").read_text()
    assert list((tmp_path / "corpus").glob("*.json"))  # new behaviour was kept
    assert seen  # the progress display was fed


def test_same_seed_same_sequences(tmp_path: Path) -> None:
    from txgraph.fuzz.campaign import Worker

    def first_sequence(out: Path) -> list[dict[str, Any]]:
        worker = Worker(CampaignConfig("model", 1.0, 3, out, families_for("model", None)), 0)
        worker._start = 0.0
        return run_sequence(worker._source(), "model").steps

    assert first_sequence(tmp_path / "a") == first_sequence(tmp_path / "b")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgraph.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_errors(tmp_path: Path) -> None:
    res = _cli("fuzz", "--ops", "nope", "--out", str(tmp_path))
    assert res.returncode == 2 and "unknown operation family nope" in res.stderr
    res = _cli("fuzz", "--against", "qsd", "--ops", "x", "--out", str(tmp_path))
    assert res.returncode == 2 and "cannot run against qsd" in res.stderr
    bad = tmp_path / "r.json"
    bad.write_text("{}")
    res = _cli("replay", str(bad))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert (
        res.stderr.strip() == f"Error: {bad}: not a txgraph fuzz reproducer (txgraph-fuzz-repro/1)"
    )


@pytest.mark.parametrize("against", ["model", "qsd"])
def test_sigterm_stops_the_campaign_and_its_workers(tmp_path: Path, against: str) -> None:
    """Every worker, and every qemu-storage-daemon a worker had running, is gone after a
    SIGTERM (a terminated worker unwinds and closes its peers)."""
    import os
    import signal
    import time

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "txgraph.cli",
            "fuzz",
            "--against",
            against,
            "--time",
            "120",
            "--jobs",
            "2",
            "--out",
            str(tmp_path),
            # no guest I/O: txgraph's NBD server logs a client that hung up mid-reply
            *(["--ops", "add,del,reopen,snapshot"] if against == "qsd" else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("worker-*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)  # the workers have started once they report
    assert list(tmp_path.glob("worker-*.json")), "no worker started"

    def kids(pid: int) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    children = kids(proc.pid)
    if against == "qsd":  # wait until a worker has a daemon up, then take them all
        deadline = time.monotonic() + 60
        while not any(kids(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        daemons = [g for c in children for g in kids(c)]
        assert daemons, "no worker had a qemu-storage-daemon running"
        children += daemons
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert b"Traceback" not in proc.stderr.read()
    for pid in children:  # every worker (and the resource tracker) is gone too
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"process {pid} outlived the campaign")


def test_guest_io_steps_compare_contents_through_exports() -> None:
    """A guest-io step runs qemu-io on each peer's NBD export; reads verify a pattern, so
    the bytes are compared, not only the replies (a wrong pattern fails alike on both)."""
    from txgraph.fuzz.guest import GUEST_IO

    def io(*commands: str) -> dict[str, Any]:
        return {"execute": GUEST_IO, "arguments": {"export": "top", "commands": list(commands)}}

    steps = [
        _add(
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "filename": "{dir}/b1.qcow2"},
            }
        ),
        {
            "execute": "nbd-server-start",
            "arguments": {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}},
        },
        {
            "execute": "block-export-add",
            "arguments": {"type": "nbd", "id": "e0", "node-name": "top", "writable": True},
        },
        io("write -P 0x5a 4096 64k", "write -z 8192 4k"),
        io("read -P 0x5a 4096 4k", "read -P 0 8192 4k", "read -P 0xa5 65536 4k"),
        {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
    ]
    result = run_sequence(_fixed(steps), "qsd")
    assert result.divergence is None, result.divergence
    for peer in ("qsd", "txgraph"):
        out = result.replies[4][peer]["return"]
        assert out["output"][:2] == [
            "read 4096/4096 bytes at offset 4096",
            "read 4096/4096 bytes at offset 8192",
        ]
        assert "Pattern verification failed at offset 65536, 4096 bytes" in out["output"]
    assert "guest-io:write+write-z|rc=0||" in result.behaviours
