"""Shared helpers for the NBD interop tests: a Runtime + NbdServer over a raw image."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from txgraph.io.nbd.server import NbdServer
from txgraph.io.runtime import Runtime


@dataclass
class Served:
    runtime: Runtime
    server: NbdServer
    sock: str
    image: Path

    def uri(self, export: str = "disk") -> str:
        return f"nbd+unix:///{export}?socket={self.sock}"

    @property
    def addr(self) -> dict[str, str]:
        return {"type": "unix", "path": self.sock}


@contextmanager
def serve_raw(
    workdir: Path, data: bytes, *, writable: bool = True, description: str | None = None
) -> Iterator[Served]:
    """Export ``data`` (as a raw file over the file driver) as ``disk``."""
    image = workdir / "disk.raw"
    image.write_bytes(data)
    rt = Runtime()
    rt.open_node("disk-file", "file", {"filename": str(image)}, {}, not writable)
    rt.open_node("disk-fmt", "raw", {}, {"file": "disk-file"}, not writable)
    server = NbdServer(rt)
    sock = str(workdir / "nbd.sock")
    server.start({"type": "unix", "path": sock})
    server.add_export("disk", "disk-fmt", writable, description)
    try:
        yield Served(rt, server, sock, image)
    finally:
        if server.running:
            server.stop()
        rt.close_all()


def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a QEMU tool; on failure show its stderr."""
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({res.returncode}): {res.stderr}{res.stdout}"
        )
    return res


def pattern_data(size: int, seed: int = 1) -> bytes:
    """Deterministic non-trivial content (not all one byte, not random noise)."""
    block = bytes((i * 31 + seed) & 0xFF for i in range(4096))
    return (block * (size // 4096 + 1))[:size]


__all__ = ["Served", "serve_raw", "run", "pattern_data", "os"]
