"""A peer that fails to start never outlives its caller (txgraph/peers.py).

A full-suite run once left a qemu-storage-daemon behind: its greeting did not
come within the reply timeout, ``QMPProcess.__init__`` raised TimeoutError and
nobody killed the process (the callers only reaped ConnectionRefusedError).
Here a real process that listens on the socket but never speaks QMP stands in
for a hung daemon, and one that greets but refuses the negotiation for a
broken one.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from txgraph.peers import QMPProcess

SILENT = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
conn, _ = s.accept()
time.sleep(600)
"""

REFUSING = """
import socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
conn, _ = s.accept()
conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\\r\\n')
conn.recv(4096)
conn.sendall(b'{"error": {"class": "GenericError", "desc": "no"}}\\r\\n')
conn.recv(4096)
"""


class _Impatient(QMPProcess):
    label = "stand-in"
    reply_timeout = 1.0


def _start(program: str) -> tuple[Path, BaseException]:
    tmp = tempfile.mkdtemp(prefix="peer-test-")
    path = os.path.join(tmp, "qmp.sock")
    peer = _Impatient.__new__(_Impatient)
    with pytest.raises(Exception) as err:
        peer.__init__([sys.executable, "-c", program, path], path, tmp, None)  # type: ignore[misc]
    assert peer.proc.poll() is not None, "the half-started peer is still running"
    assert peer.proc.stdout is None or peer.proc.stdout.closed
    return Path(tmp), err.value


def test_a_peer_that_never_greets_is_killed_and_its_directory_removed() -> None:
    tmp, err = _start(SILENT)
    assert isinstance(err, TimeoutError)
    assert not tmp.exists()


def test_a_peer_that_refuses_the_negotiation_is_killed() -> None:
    tmp, err = _start(REFUSING)
    assert isinstance(err, RuntimeError) and "refused qmp_capabilities" in str(err)
    assert not tmp.exists()
