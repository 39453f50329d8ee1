"""``txgraph replay``: run a reproducer again and report step by step."""

from __future__ import annotations

import json
from typing import Any

from txgraph.fuzz.run import RunResult, run_sequence

__all__ = ["replay", "render_replay"]

_MODES = {"both": "qsd", "txgraph": "model", "qsd": "qsd-only"}


def replay(repro: dict[str, Any], against: str = "both") -> RunResult:
    """Run the reproducer's steps on fresh peers (``both``: QSD and txgraph, compared)."""
    steps = repro["steps"]
    return run_sequence(
        lambda i, _res: steps[i] if i < len(steps) else None, _MODES[against], max_steps=len(steps)
    )


def _outcome(reply: dict[str, Any]) -> str:
    if "error" in reply:
        err = reply["error"]
        return f"error {err.get('class')}: {err.get('desc')}"
    return "ok " + json.dumps(reply.get("return"))[:160]


def render_replay(result: RunResult) -> str:
    """One block per step: the command and each peer's canonical reply; then the verdict."""
    lines: list[str] = []
    for i, (step, replies) in enumerate(zip(result.steps, result.replies)):
        lines.append(f"step {i}: {json.dumps(step)}")
        for peer, reply in replies.items():
            lines.append(f"  {peer:8} {_outcome(reply)}")
    d = result.divergence
    if d is None:
        lines.append(f"no divergence in {len(result.steps)} step(s)")
    else:
        lines.append(f"DIVERGENCE ({d.kind}) at step {d.step}: {d.command}")
        lines.extend(f"  {line}" for line in d.lines)
    return "\n".join(lines)
