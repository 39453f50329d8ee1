"""Guest I/O steps: reads and writes through an NBD export, by QEMU's own ``qemu-io``.

A sequence step ``{"execute": "guest-io", "arguments": {"export": ID, "commands":
[...]}}`` is not a QMP command: the runner does not send it to the peers but runs
``qemu-io -f raw -c CMD... nbd+unix:///ID?socket=DIR/nbd.sock`` against each
peer's NBD server (the socket the ``exports`` family starts), one after the
other. What a guest can observe — qemu-io's exit status and its result lines
(``wrote 4096/4096 bytes at offset 0``, ``Pattern verification failed at
offset ...``, ``write failed: Operation not permitted``) with the timing lines
dropped and the directory as ``{dir}`` — is the step's reply, compared between
QSD and txgraph like any other reply. Reads verify a pattern (``read -P``), so
contents are compared too: a byte that differs shows as a verification failure
on one side only.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

__all__ = ["GUEST_IO", "QEMU_IO_TIMING", "guest_io_reply", "qemu_io_argv", "draw_commands"]

#: the pseudo-command of a guest I/O step
GUEST_IO = "guest-io"

#: every qemu-io run has a deadline (a few kilobytes take milliseconds; the rest is for a
#: loaded machine): a txgraph NBD server that does not answer is a ``hang`` finding
_TIMEOUT = 30.0
#: qemu-io's timing line after each request (``64 KiB, 1 ops; 00.00 sec (...)``; past
#: a second ``0:00:04.00 (...)``, without "sec"): never compared
QEMU_IO_TIMING = re.compile(r"^\s*[\d.]+ (bytes|[KMGTPE]iB), \d+ ops; [\d:.]+( sec)? \(.*\)\s*$")

_OFFSETS = (0, 512, 4096, 65536, 1048576 - 4096, 1048576)
_LENGTHS = ("512", "4k", "64k")
_PATTERNS = ("0x5a", "0xa5", "0")


def draw_commands(rng: Any) -> list[str]:
    """One to three qemu-io commands: pattern writes, zero writes, discards, verified reads."""
    out = []
    for _ in range(rng.choice((1, 2, 3))):
        op = rng.choice(("write", "write", "zero", "discard", "read", "read", "flush"))
        where = f"{rng.choice(_OFFSETS)} {rng.choice(_LENGTHS)}"
        if op == "write":
            out.append(f"write -P {rng.choice(_PATTERNS[:2])} {where}")
        elif op == "zero":
            out.append(f"write -z {where}")
        elif op == "discard":
            out.append(f"discard {where}")
        elif op == "read":
            out.append(f"read -P {rng.choice(_PATTERNS)} {where}")
        else:
            out.append("flush")
    return out


def qemu_io_argv(socket_path: str, export: str, commands: list[str]) -> list[str]:
    """``qemu-io -f raw -c CMD... nbd+unix:///EXPORT?socket=PATH`` (QEMU's NBD URI)."""
    argv = ["qemu-io", "-f", "raw"]
    for command in commands:
        argv += ["-c", command]
    return [*argv, f"nbd+unix:///{export}?socket={socket_path}"]


def guest_io_reply(workdir: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run one guest I/O step against the NBD server in ``workdir``; a reply-shaped result."""
    argv = qemu_io_argv(
        os.path.join(workdir, "nbd.sock"),
        str(arguments.get("export")),
        [str(c) for c in arguments.get("commands", [])],
    )
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"return": {"rc": -1, "output": ["qemu-io timed out"]}}
    real = os.path.realpath(workdir)
    lines = []
    for line in (res.stdout + res.stderr).splitlines():
        if not line.strip() or QEMU_IO_TIMING.match(line):
            continue
        lines.append(line.replace(workdir, "{dir}").replace(real, "{dir}").rstrip())
    return {"return": {"rc": res.returncode, "output": lines}}
