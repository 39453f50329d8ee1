"""Shrinking a diverging sequence to a minimal reproducer.

First the fewest steps (Zeller's delta debugging, ``ddmin``: drop ever smaller
chunks while the same divergence — same signature — still happens), then the
smallest arguments (a node added replaced by just the named child it defined
inline, a filter by a ``raw`` node, a node by a plain ``null-co`` node of the same
name, one member of a list less, optional members dropped one at a time; a node
added only to be another's child folded into that node's ``blockdev-add``); again while
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
        current, best = _folded(current, best, still, over)
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
    """Smaller arguments, step by step: each kind of variant (:data:`_VARIANTS`) is tried
    until none of its candidates still diverges; what a simpler step no longer needs may
    then go in the next round of :func:`_fewest`."""
    for i in range(len(current)):
        for variants in _VARIANTS:
            progress = True
            while progress and not over():
                progress = False
                for candidate in variants(current, i):
                    if over():
                        break
                    found = still(candidate)
                    if found is not None:
                        current, best, progress = candidate, found, True
                        break
    return current, best


Steps = list[dict[str, Any]]


def _add_args(steps: Steps, i: int) -> dict[str, Any] | None:
    step = steps[i]
    args = step.get("arguments")
    if step.get("execute") != "blockdev-add" or not isinstance(args, dict):
        return None
    return args


def _lifted(steps: Steps, i: int) -> list[Steps]:
    """The node replaced by just a named child it defined inline (only the child mattered)."""
    args = _add_args(steps, i)
    out = []
    for key in ("file", "backing"):
        child = (args or {}).get(key)
        if isinstance(child, dict) and isinstance(child.get("node-name"), str):
            candidate = copy.deepcopy(steps)
            candidate[i] = {"execute": "blockdev-add", "arguments": copy.deepcopy(child)}
            out.append(candidate)
    return out


def _plainer(steps: Steps, i: int) -> list[Steps]:
    """A filter node (throttle, copy-on-read) as a ``raw`` node over the same child, in its
    ``blockdev-add`` and in every later reopen of it (its throttle group may then go)."""
    args = _add_args(steps, i)
    if not args or args.get("driver") not in ("throttle", "copy-on-read") or "file" not in args:
        return []
    name = args.get("node-name")
    candidate = copy.deepcopy(steps)
    entries = [candidate[i]["arguments"]]
    for later in candidate[i + 1 :]:
        if later.get("execute") == "blockdev-reopen":
            opts = (later.get("arguments") or {}).get("options") or []
            entries += [o for o in opts if isinstance(o, dict) and o.get("node-name") == name]
    for entry in entries:
        entry["driver"] = "raw"
        entry.pop("throttle-group", None)
    return [candidate]


def _null(steps: Steps, i: int) -> list[Steps]:
    """A node added becomes a plain ``null-co`` node of the same name (reading zeroes:
    without ``read-zeroes`` QEMU's reads return uninitialised memory, no oracle)."""
    args = _add_args(steps, i)
    if not args or args.get("driver") == "null-co" or not isinstance(args.get("node-name"), str):
        return []
    candidate = copy.deepcopy(steps)
    candidate[i]["arguments"] = {
        "driver": "null-co",
        "node-name": args["node-name"],
        "read-zeroes": True,
    }
    return [candidate]


def _fewer_members(steps: Steps, i: int) -> list[Steps]:
    """One member less of a list argument (a quorum's children, a transaction's actions);
    a vote threshold above the children left comes down with them."""
    args = steps[i].get("arguments")
    out = []
    for key in ("children", "actions"):
        members = (args or {}).get(key) if isinstance(args, dict) else None
        if not isinstance(members, list) or len(members) < 2:
            continue
        for j in range(len(members)):
            candidate = copy.deepcopy(steps)
            cargs = candidate[i]["arguments"]
            del cargs[key][j]
            threshold = cargs.get("vote-threshold")
            if key == "children" and isinstance(threshold, int) and threshold > len(cargs[key]):
                cargs["vote-threshold"] = len(cargs[key])
            out.append(candidate)
    return out


def _fewer_options(steps: Steps, i: int) -> list[Steps]:
    """An optional member dropped (QEMU fills in its default), of the arguments or of a
    reopen's entries."""
    args = steps[i].get("arguments")
    out = []
    for key in _OPTIONAL:
        if isinstance(args, dict) and key in args:
            candidate = copy.deepcopy(steps)
            del candidate[i]["arguments"][key]
            out.append(candidate)
    entries = args.get("options") if isinstance(args, dict) else None
    if steps[i].get("execute") == "blockdev-reopen" and isinstance(entries, list):
        for n, entry in enumerate(entries):
            for key in _OPTIONAL:
                if isinstance(entry, dict) and key in entry:
                    candidate = copy.deepcopy(steps)
                    del candidate[i]["arguments"]["options"][n][key]
                    out.append(candidate)
    return out


_VARIANTS: tuple[Callable[[Steps, int], list[Steps]], ...] = (
    _lifted,
    _plainer,
    _null,
    _fewer_members,
    _fewer_options,
)


def _folded(
    current: list[dict[str, Any]], best: RunResult, still: Still, over: Callable[[], bool]
) -> tuple[list[dict[str, Any]], RunResult]:
    """One step less by folding: a node added only to be some node's ``file`` or
    ``backing`` child, defined inline in that node's ``blockdev-add`` instead."""
    changed = True
    while changed and not over():
        changed = False
        for i in range(len(current)):
            args = _add_args(current, i)
            for key in ("file", "backing"):
                ref = (args or {}).get(key)
                j = next(
                    (
                        j
                        for j in range(i)
                        if isinstance(ref, str)
                        and (_add_args(current, j) or {}).get("node-name") == ref
                    ),
                    None,
                )
                if j is None or over():
                    continue
                candidate = copy.deepcopy(current)
                candidate[i]["arguments"][key] = copy.deepcopy(current[j]["arguments"])
                del candidate[j]
                found = still(candidate)
                if found is not None:
                    current, best, changed = candidate, found, True
                    break
            if changed:
                break
    return current, best
