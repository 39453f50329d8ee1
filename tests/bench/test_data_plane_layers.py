"""``tools/data_plane_layers.py`` runs end to end and reports every layer of the path.

No timing is asserted (the tool reports costs; they are not pass/fail): only that each
side ran on real images built by qemu-img and qemu-io, and that bad counts are refused
in one line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "data_plane_layers.py"
SIDES = ("loop", "lseek", "guarded copy", "preadv", "file driver", "L2 lookup", "qcow2 driver")
#: each side's step names the side it builds on
BASES = {
    "lseek": "loop",
    "guarded copy": "lseek",
    "file driver": "guarded copy",
    "L2 lookup": "guarded copy",
    "qcow2 driver": "L2 lookup",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=240
    )


def test_every_layer_is_reported() -> None:
    done = _run("--size-mib", "8", "--reads", "500", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("one random 4 KiB read, 8 MiB image")
    rows = {line[2:16].strip(): line[16:].split() for line in lines[1:]}
    assert set(rows) == set(SIDES)
    for name, cells in rows.items():
        lo, med = float(cells[0]), float(cells[1])
        assert 0 < lo <= med, (name, cells)
        if name in BASES:
            assert cells[2] == f"({BASES[name].split()[0]}", (name, cells)
        else:
            assert len(cells) == 2, (name, cells)


def test_bad_counts_are_refused_in_one_line() -> None:
    done = _run("--size-mib", "7")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "data_plane_layers: --size-mib must be even and >= 2, counts >= 1"
    ]
