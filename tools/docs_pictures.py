"""Make the pictures under docs/: the seed's example graph and the section-3 plan report.

Run by ``make docs-pictures``. The example images are made in ``/tmp/txgraph-example``
so that the file names in the pictures stay short and the same from run to run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.plan.plankit import EXAMPLES, make_images  # noqa: E402

IMAGES = Path("/tmp/txgraph-example")


def _txgraph(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "txgraph.cli", *args], check=True, stdout=subprocess.DEVNULL
    )


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(IMAGES, ignore_errors=True)
    IMAGES.mkdir(parents=True)
    make_images(IMAGES)
    state = str(EXAMPLES / "seed-section3-state.json")
    _txgraph(
        "show", state, "--dir", str(IMAGES), "--format", "svg", "--out", str(out / "seed-graph.svg")
    )
    report = out / "section3-plan.html"
    _txgraph(
        "plan",
        str(EXAMPLES / "seed-section3.json"),
        "--graph",
        state,
        "--dir",
        str(IMAGES),
        "--html",
        str(report),
    )
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--window-size=1400,2200",
                f"--screenshot={out / 'section3-plan.png'}",
                report.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    shutil.rmtree(IMAGES, ignore_errors=True)


if __name__ == "__main__":
    main((Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs").resolve())
