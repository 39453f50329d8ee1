"""``txgraph demo`` section 6: the example plan verified on the demo's images."""

from __future__ import annotations

import subprocess
from importlib.resources import as_file, files
from pathlib import Path

from txgraph.plan.format import load_json, load_plan
from txgraph.plan.render import render_text
from txgraph.plan.verify import verify_plan

__all__ = ["demo_section"]


def demo_section(workdir: str) -> int:
    """``txgraph demo`` section 6: verify examples/seed-section3.json on the demo's images.

    Creates the plan's overlay image, dry-runs the example plan on the state
    built from the demo's ``disk0.qcow2``, prints the report; returns 0 if it
    verifies. Nothing is written to the demo's images. The example files are
    package data (``txgraph/plan/examples``; ``examples/`` in the checkout links
    to them), so an installed txgraph runs the same demo.
    """
    overlay = Path(workdir) / "snap0.qcow2"
    if not overlay.exists():
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "disk0.qcow2",
                "-F",
                "qcow2",
                str(overlay),
            ],
            check=True,
            capture_output=True,
        )
    examples = files("txgraph.plan") / "examples"
    with (
        as_file(examples / "seed-section3.json") as plan_file,
        as_file(examples / "seed-section3-state.json") as state_file,
    ):
        plan = load_plan(plan_file, workdir)
        state = load_json(state_file, workdir)
    report = verify_plan(plan, state, policy="safe").to_dict()
    print(render_text(report))
    return 0 if report["ok"] else 1
