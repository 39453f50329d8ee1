"""``txgraph replay`` stopped by SIGTERM closes its peers: no qemu-storage-daemon stays behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from txgraph.fuzz.repro import REPRO_FORMAT

pytestmark = pytest.mark.qsd


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose (its parent has not reaped it yet)
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_sigterm_during_a_replay_leaves_no_daemon(tmp_path: Path) -> None:
    repro = tmp_path / "repro.json"
    steps = [{"execute": "query-version"}] * 20000  # long enough to be stopped midway
    repro.write_text(json.dumps({"format": REPRO_FORMAT, "images": [], "steps": steps}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "txgraph.cli", "replay", "--against", "qsd", str(repro)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        daemons: list[int] = []
        while not daemons and time.monotonic() < deadline and proc.poll() is None:
            daemons = _children(proc.pid)
            time.sleep(0.05)
        assert daemons, "the replay never started its qemu-storage-daemon"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in daemons) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in daemons if _alive(p)], "qemu-storage-daemon left running"
        assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
