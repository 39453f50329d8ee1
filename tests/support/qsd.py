"""A real qemu-storage-daemon 7.2 as a test peer, driven over its QMP socket.

Deliberately tiny and synchronous: it speaks the wire protocol by hand (one
JSON object per line from QSD, CRLF-terminated) so the tests do not depend on
txgraph's own QMP code to talk to the oracle.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["QSD", "QSD_BINARY", "qsd_available"]

QSD_BINARY = shutil.which("qemu-storage-daemon") or "/usr/bin/qemu-storage-daemon"


def qsd_available() -> bool:
    return os.access(QSD_BINARY, os.X_OK)


class QSD:
    """One qemu-storage-daemon process with a negotiated QMP connection.

    ``execute`` returns the raw reply dict (``{"return": ...}`` or
    ``{"error": ...}``); events that arrive meanwhile are kept in ``events``.
    """

    def __init__(self, extra_args: list[str] | None = None, workdir: str | None = None) -> None:
        self._tmp = tempfile.mkdtemp(prefix="qsd-")
        self.socket_path = os.path.join(self._tmp, "qmp.sock")
        self.events: list[dict[str, Any]] = []
        args = [QSD_BINARY, "--chardev", f"socket,id=qmp0,path={self.socket_path},server=on,wait=off",
                "--monitor", "chardev=qmp0", *(extra_args or [])]
        self.proc = subprocess.Popen(args, cwd=workdir or self._tmp, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"qemu-storage-daemon did not start: {out}")
            time.sleep(0.01)
        # The socket file appears just before QSD listens on it: retry briefly.
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(self.socket_path)
                break
            except ConnectionRefusedError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self._file = self.sock.makefile("rwb")
        self.greeting = self._read()
        reply = self.execute("qmp_capabilities")
        assert reply == {"return": {}}, reply

    def _read(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise RuntimeError("qemu-storage-daemon closed the connection")
        return json.loads(line)

    def send_raw(self, text: str | bytes) -> dict[str, Any]:
        """Send bytes verbatim and return the next non-event message."""
        self._file.write(text.encode() if isinstance(text, str) else text)
        self._file.flush()
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"execute": command, **extra}
        if arguments is not None:
            msg["arguments"] = arguments
        return self.send_raw(json.dumps(msg))

    def cmd(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Execute and return the ``return`` value; raise on an error reply."""
        reply = self.execute(command, arguments)
        if "error" in reply:
            raise RuntimeError(f"{command} failed: {reply['error']['desc']}")
        return reply["return"]

    def close(self) -> None:
        try:
            self._file.close()
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> QSD:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def qemu_img(*args: str | Path) -> str:
    """Run qemu-img and return its stdout; raise with its stderr on failure."""
    res = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(map(str, args))}: {res.stderr.strip()}")
    return res.stdout
