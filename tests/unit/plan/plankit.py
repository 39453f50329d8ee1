"""Shared helpers of the plan tests: the example images and running steps on QSD."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from txgraph.plan.format import Step

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def make_images(d: Path) -> Path:
    """The images the example state and plan use (the demo creates the same ones)."""

    def img(*args: str) -> None:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args], check=True)

    img(str(d / "base0.qcow2"), "64M")
    img("-b", "base0.qcow2", "-F", "qcow2", str(d / "disk0.qcow2"))
    img("-b", "disk0.qcow2", "-F", "qcow2", str(d / "snap0.qcow2"))
    return d


def qsd_message(step: Step) -> dict[str, Any]:
    """The same step as QSD runs it: a group is QEMU's own ``transaction``."""
    if step.actions is not None:
        return {"execute": "transaction", "arguments": {"actions": step.actions}}
    return step.message()
