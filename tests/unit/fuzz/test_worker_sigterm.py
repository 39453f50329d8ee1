"""A fuzz worker's SIGTERM that lands inside a callback which cannot raise.

The run that found it: a loaded ``make test`` where the SIGTERM reached a worker while
a ``WeakKeyDictionary`` callback ran. Python printed the SystemExit as "Exception
ignored ... Traceback" and dropped it. Here the signal is sent from inside a weakref
callback, so its handler always runs there. The worker must still stop with 143,
and print nothing.
"""

from __future__ import annotations

import signal
import subprocess
import sys

_WORKER = """
import gc, os, signal, sys, time, weakref
from txgraph.fuzz import install_worker_signals

install_worker_signals()

class Thing:
    pass

def in_callback(_ref):
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before this callback returns
    for _ in range(1000):
        pass

try:
    thing = Thing()
    ref = weakref.ref(thing, in_callback)
    del thing  # the callback runs here
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the re-sent SIGTERM ends this loop
        time.sleep(0.01)
    code = 0
except SystemExit as stop:
    code = stop.code
sys.stdout.flush()
os._exit(code)
"""


def test_a_sigterm_inside_a_weakref_callback_still_stops_the_worker_quietly() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert proc.stderr == ""


def test_unraisable_errors_still_print_before_a_sigterm() -> None:
    """Only a stopping worker is quiet: before, a lost exception is reported as usual."""
    script = (
        "from txgraph.fuzz import install_worker_signals\n"
        "install_worker_signals()\n"
        "class Bad:\n"
        "    def __del__(self):\n"
        "        raise KeyError('in __del__')\n"
        "Bad()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "KeyError" in proc.stderr
