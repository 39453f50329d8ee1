"""``txgraph demo`` runs from the package alone, as an installed copy does.

Section 6 of the demo used to read ``examples/`` next to the package, which an
installed txgraph does not have. The package is copied without the checkout
around it and the demo run from that copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "txgraph"


def test_the_demo_runs_from_a_copy_of_the_package_without_the_checkout(tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "txgraph", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import txgraph; print(txgraph.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert where.stdout.strip() == str(site / "txgraph" / "__init__.py"), where.stderr
    res = subprocess.run(
        [sys.executable, "-m", "txgraph.cli", "demo", "--plain", "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "== 6. A reconfiguration plan" in res.stdout
    assert "result: every step would be accepted and the checker agrees" in res.stdout
