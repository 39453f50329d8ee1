"""Shrinking a diverging sequence to a minimal reproducer.

First the fewest steps (Zeller's delta debugging, ``ddmin``: drop ever smaller
chunks while the same divergence — same signature — still happens), then the
smallest arguments (a node added replaced by a plain ``null-co`` node of the same
name, optional members of each remaining step dropped one at a time); again while
a round made the sequence smaller (a simpler node can make what built it droppable). Every candidate is run on fresh peers, so the result is a sequence that
reproduces on its own.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

from txgraph.fuzz.run import RunResult, run_sequence

__all__ = ["shrink"]

#: members a step keeps its meaning without (QEMU fills in its defaults)
_OPTIONAL = (
    "read-only",
    "cache",
    "detect-zeroes",
    "discard",
    "size",
    "offset",
    "vote-threshold",
    "mode",
    "writable",
    "snapshot-node-name",
    "limits",
    "throttle-group",
    "read-pattern",
    "blkverify",
    "rewrite-corrupted",
    "speed",
    "auto-finalize",
    "auto-dismiss",
)


def _fixed(steps: list[dict[str, Any]]) -> Callable[[int, Any], dict[str, Any] | None]:
    return lambda i, _res: steps[i] if i < len(steps) else None


def shrink(
    steps: list[dict[str, Any]],
    signature: str,
    against: str,
    budget: int = 200,
    deadline: float | None = None,
) -> tuple[list[dict[str, Any]], RunResult]:
    """The smallest sequence found (within ``budget`` runs, and before ``deadline`` on the
    monotonic clock) diverging with ``signature``."""
    runs = 0

    def over() -> bool:
        return runs >= budget or (deadline is not None and time.monotonic() >= deadline)

    try:
        best = run_sequence(_fixed(steps), against)
    except (OSError, RuntimeError, subprocess.SubprocessError):
        best = RunResult(steps=list(steps))

    def still(candidate: list[dict[str, Any]]) -> RunResult | None:
        nonlocal runs
        runs += 1
        try:
            result = run_sequence(_fixed(candidate), against)
        except (OSError, RuntimeError, subprocess.SubprocessError):
            return None  # a peer that would not start says nothing about the candidate
        ok = result.divergence is not None and result.divergence.signature == signature
        return result if ok else None

    current = list(steps)
    if best.divergence is not None:  # everything after the divergence is never reached
        current = current[: best.divergence.step + 1]
    while not over():
        before = len(current), json.dumps(current, sort_keys=True)
        current, best = _fewest(current, best, still, over)
        current, best = _smallest(current, best, still, over)
        if (len(current), json.dumps(current, sort_keys=True)) == before:
            break  # a simpler node may have made steps droppable: another round if so
    return current, best


Still = Callable[[list[dict[str, Any]]], RunResult | None]


def _fewest(
    current: list[dict[str, Any]], best: RunResult, still: Still, over: Callable[[], bool]
) -> tuple[list[dict[str, Any]], RunResult]:
    """Zeller's ddmin over the steps."""
    n = 2
    while len(current) >= 2 and not over():
        chunk = max(1, len(current) // n)
        reduced = False
        for start in range(0, len(current), chunk):
            if over():
                break
            candidate = current[:start] + current[start + chunk :]
            found = still(candidate) if candidate else None
            if found is not None:
                current, best = candidate, found
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(n * 2, len(current))
    return current, best


def _smallest(
    current: list[dict[str, Any]], best: RunResult, still: Still, over: Callable[[], bool]
) -> tuple[list[dict[str, Any]], RunResult]:
    """Smaller arguments: a node added becomes a plain ``null-co`` node of the same name
    (what it was built of may then go in the next round), optional members go."""
    for i in range(len(current)):
        step = current[i]
        args = step.get("arguments")
        if (
            not over()
            and step.get("execute") == "blockdev-add"
            and isinstance(args, dict)
            and args.get("driver") != "null-co"
            and isinstance(args.get("node-name"), str)
        ):
            candidate = copy.deepcopy(current)
            candidate[i]["arguments"] = {"driver": "null-co", "node-name": args["node-name"]}
            found = still(candidate)
            if found is not None:
                current, best = candidate, found
        for key in _OPTIONAL:
            if over():
                break
            args = current[i].get("arguments")
            if not isinstance(args, dict) or key not in args:
                continue
            candidate = copy.deepcopy(current)
            del candidate[i]["arguments"][key]
            found = still(candidate)
            if found is not None:
                current, best = candidate, found
    return current, best
