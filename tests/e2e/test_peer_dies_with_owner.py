"""A qemu-storage-daemon peer never outlives the process that started it.

A process killed outright runs no cleanup; the peer is started under ``setpriv
--pdeathsig KILL`` so the kernel takes it along (``txgraph/peers.py``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.qsd

_OWNER = """
import sys, time
from txgraph.peers import QSD
q = QSD()
print(q.proc.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 of a container may leave zombies unreaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def test_a_killed_owner_takes_its_qsd_along() -> None:
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        qsd_pid = int(owner.stdout.readline())
        assert _running(qsd_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        deadline = time.monotonic() + 30
        while _running(qsd_pid):
            assert time.monotonic() < deadline, "qemu-storage-daemon outlived its owner"
            time.sleep(0.05)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(30)
