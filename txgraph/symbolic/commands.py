"""The CLI side of txgraph.symbolic: ``txgraph plan --from STATE --to TARGET``.

Kept here so that :mod:`txgraph.cli` only parses options and calls one function.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["synth_report", "render_synth"]


def synth_report(
    from_file: str, to_file: str, directory: str | None, policy: str, max_steps: int
) -> dict[str, Any]:
    """Load both state files (lists of QMP commands, ``{dir}`` substituted) and search."""
    from txgraph.plan.format import load_json
    from txgraph.symbolic.synth import synthesize

    start, target = load_json(from_file, directory), load_json(to_file, directory)
    for label, value in (("--from", start), ("--to", target)):
        if not isinstance(value, list):
            raise ValueError(f"{label} must be a JSON list of QMP commands")
    return synthesize(start, target, max_steps=max_steps, policy=policy).to_dict()


def render_synth(report: dict[str, Any]) -> str:
    if report["found"]:
        lines = [f"found: {len(report['steps'])} step(s), {report['states-explored']} states"]
        lines += [f"  {i + 1}. {json.dumps(s)}" for i, s in enumerate(report["steps"])]
        return "\n".join(lines)
    bound = (
        "no sequence of any length over the candidate QEMU 7.2 commands"
        if report["exhausted"]
        else f"no sequence of at most {report['max-steps']} steps"
    )
    lines = [f"impossible: {bound} ({report['states-explored']} states)"]
    lines += [f"  blocked: {b}" for b in report["blocked-by"]]
    return "\n".join(lines)
