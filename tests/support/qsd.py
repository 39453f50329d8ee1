"""The QEMU peers for tests: the package's QSD/QMP peers plus the test-only helpers.

:mod:`txgraph.peers` ships in the package because ``txgraph bench`` and
``txgraph fuzz --against qsd`` need a QSD peer; what only tests use lives here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from txgraph.peers import QSD, QSD_BINARY

__all__ = ["QSD", "QSD_BINARY", "qemu_img", "qsd_available"]


def qsd_available() -> bool:
    """Whether qemu-storage-daemon is installed (the differential tests need it)."""
    return os.access(QSD_BINARY, os.X_OK)


def qemu_img(*args: str | Path) -> str:
    """Run qemu-img and return its stdout; raise with its stderr on failure."""
    res = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(map(str, args))}: {res.stderr.strip()}")
    return res.stdout
