"""Guest I/O through an NBD export with QEMU's own tools, canonicalised for comparison.

The guest is always a real QEMU program: ``qemu-io`` as the NBD client for reads,
writes, zero writes, discards and flushes (``qemu-io -f raw URI -c ...``), and
``qemu-img convert`` from the export for a checksum of the whole guest view. What
is kept of a ``qemu-io`` run is what a guest can observe: the exit status, the
per-command result lines (``wrote 65536/65536 bytes at offset 0``, ``Pattern
verification failed at offset ...``, ``write failed: Operation not permitted``)
and the open error, with the timing lines (``64 KiB, 1 ops; 00.00 sec (...)``)
dropped and the run's directory replaced by ``{dir}``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass

from txgraph.fuzz.guest import QEMU_IO_TIMING

__all__ = [
    "GuestResult",
    "nbd_uri",
    "run_qemu_io",
    "normalise_qemu_io",
    "export_digest",
    "TOOL_TIMEOUT",
]

#: every tool run has a deadline; a hung NBD server shows as a failure, not a hang
TOOL_TIMEOUT = 60.0


def nbd_uri(socket_path: str, export: str) -> str:
    """The ``nbd+unix`` URI QEMU's NBD client understands (``nbd_parse_uri``)."""
    return f"nbd+unix:///{export}?socket={socket_path}"


def normalise_qemu_io(text: str, workdir: str | None) -> list[str]:
    """qemu-io output minus timing lines, with the run directory as ``{dir}``."""
    out = []
    for line in text.splitlines():
        if not line.strip() or QEMU_IO_TIMING.match(line):
            continue
        if workdir:
            line = line.replace(workdir, "{dir}")
            real = os.path.realpath(workdir)
            if real != workdir:
                line = line.replace(real, "{dir}")
        out.append(line.rstrip())
    return out


@dataclass(frozen=True)
class GuestResult:
    """What a guest observed: exit status and the normalised output lines."""

    rc: int
    lines: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not any("failed" in ln for ln in self.lines)


def run_qemu_io(
    socket_path: str,
    export: str,
    commands: list[str],
    workdir: str | None = None,
    read_only: bool = False,
) -> GuestResult:
    """Run ``qemu-io -f raw URI -c CMD...`` as the NBD client (``-r`` for a read-only open)."""
    argv = ["qemu-io", "-f", "raw", *(["-r"] if read_only else [])]
    for c in commands:
        argv += ["-c", c]
    argv.append(nbd_uri(socket_path, export))
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return GuestResult(-1, ("qemu-io timed out",))
    return GuestResult(res.returncode, tuple(normalise_qemu_io(res.stdout + res.stderr, workdir)))


def export_digest(socket_path: str, export: str, workdir: str | None = None) -> str:
    """``size:sha256`` of the whole guest view, read with ``qemu-img convert`` from the export.

    An export that cannot be read gives ``error: <qemu-img's message>`` (normalised).
    """
    with tempfile.TemporaryDirectory(prefix="txview-") as tmp:
        out = os.path.join(tmp, "view.raw")
        try:
            res = subprocess.run(
                [
                    "qemu-img",
                    "convert",
                    "-f",
                    "raw",
                    "-O",
                    "raw",
                    nbd_uri(socket_path, export),
                    out,
                ],
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return "error: qemu-img convert timed out"
        if res.returncode != 0:
            # qemu-img convert reads in parallel coroutines: the order of errors varies
            return "error: " + " ".join(sorted(normalise_qemu_io(res.stderr, workdir)))
        h = hashlib.sha256()
        with open(out, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return f"{os.path.getsize(out)}:{h.hexdigest()}"
