"""``txgraph serve --pidfile``: a SIGTERM sent the moment the PID file appears ends it cleanly.

QSD writes its PID file only once everything runs, signal handling included, so
a supervisor that signals as soon as the file is there always gets a clean exit
(status 0, PID file removed). txgraph once wrote the file before installing its
handlers: such a SIGTERM killed it (status -15, PID file left behind), which a
loaded machine turned into a flaky test_cli_exit_status_and_stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_sigterm_right_after_the_pidfile_appears_exits_cleanly(tmp_path: Path) -> None:
    outcomes = []
    for round_ in range(3):
        pidfile = tmp_path / f"pid{round_}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "txgraph.cli",
                "serve",
                "--pidfile",
                str(pidfile),
                "--blockdev",
                "driver=null-co,node-name=n",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if pidfile.exists() and pidfile.read_text().endswith("\n"):
                    break
                time.sleep(0.001)  # signal as early as a supervisor could
            assert proc.poll() is None, proc.communicate()
            os.kill(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            outcomes.append((proc.returncode, out, err, pidfile.exists()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert outcomes == [(0, "", "", False)] * 3
