"""The mutation check of txgraph fuzz (tools/fuzz_mutants.py), opt-in: a campaign per mutant.

``TXGRAPH_FUZZ_MUTANTS=1`` runs every mutant (``TXGRAPH_FUZZ_MUTANT_SECONDS`` each, default
60, with 2 workers) and requires each to be caught within that budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.qsd,
    pytest.mark.slow,
    pytest.mark.timeout(11 * 1000),
    pytest.mark.skipif(
        os.environ.get("TXGRAPH_FUZZ_MUTANTS") != "1",
        reason="long run (a campaign per mutant): set TXGRAPH_FUZZ_MUTANTS=1",
    ),
]

ROOT = Path(__file__).resolve().parents[3]


def test_every_mutant_is_caught(tmp_path: Path) -> None:
    seconds = os.environ.get("TXGRAPH_FUZZ_MUTANT_SECONDS", "60")
    rows_file = tmp_path / "rows.json"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "fuzz_mutants.py"),
            "--seconds",
            seconds,
            "--jobs",
            "2",
            "--json",
            str(rows_file),
        ],
        capture_output=True,
        text=True,
        timeout=12 * (float(seconds) + 900),
    )
    assert res.returncode == 0, res.stderr
    rows = json.loads(rows_file.read_text())
    assert len(rows) == 10
    missed = [r["mutant"] for r in rows if r["caught_after_s"] is None]
    assert not missed, res.stdout
