"""``txgraph serve`` as a real process: socket removed on exit, bad paths in one line.

QSD's wording for the same paths is the reference (``--chardev socket,path=...``):
``Failed to bind socket to PATH: No such file or directory`` and
``UNIX socket path 'PATH' is too long``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SERVE = [sys.executable, "-m", "txgraph.cli", "serve", "--qmp"]


def _wait_for_greeting(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "txgraph serve never listened"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                assert sock.recv(4096).startswith(b'{"QMP"')
                return
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_removes_the_socket(tmp_path: Path, sig: signal.Signals) -> None:
    path = tmp_path / "qmp.sock"
    proc = subprocess.Popen([*SERVE, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_greeting(path, proc)
        # a connected client must not keep the server from exiting
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert not path.exists()
    assert b"Traceback" not in err


def _run_bad(path: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*SERVE, path], capture_output=True, timeout=60)


def test_missing_directory_is_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "nonexistent" / "x.sock")
    res = _run_bad(path)
    assert res.returncode == 1
    assert res.stderr.decode().splitlines() == [
        f"Error: Failed to bind socket to {path}: No such file or directory"
    ]


def test_over_long_path_is_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / ("a" * 120))
    res = _run_bad(path)
    assert res.returncode == 1
    assert res.stderr.decode().splitlines() == [
        f"Error: UNIX socket path '{path}' is too long (path must be less than 108 bytes)"
    ]
    assert not os.path.exists(path)


def test_a_107_byte_path_works_and_108_is_refused(tmp_path: Path) -> None:
    """QEMU also takes exactly 108 bytes (unterminated); Python's socket module cannot."""
    base = str(tmp_path) + "/"
    path = Path(base + "s" * (107 - len(base)))
    proc = subprocess.Popen([*SERVE, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_greeting(path, proc)
        proc.terminate()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and not path.exists()
    res = _run_bad(str(path) + "x")
    assert res.returncode == 1 and b"is too long" in res.stderr
