"""A guest-view counterexample observed on qemu-storage-daemon: what the guest reads through NBD.

z3 predicts that a step changes what an export's guest reads (V1-guest-view,
:mod:`txgraph.symbolic.guestsmt`); the engine's run of the decoded graph names the
ranges and layers (the checker's :func:`txgraph.checker.guest_view.view_changes` on the
images' real allocation). :func:`observe_on_qsd` then replays the counterexample on
a qemu-storage-daemon 7.2 and reads every affected export in full through its NBD
socket (``qemu-img convert`` from ``nbd+unix://``, the client a guest's would be)
before and after the failing step: the step must be accepted (QEMU does not refuse a
guest-view change), and the byte ranges whose contents differ must be exactly the
ranges the engine named, reading zeroes where it said zeroes. Prediction =
observation, or the report says where they differ.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from txgraph.checker.guest_view import RULE
from txgraph.plan.format import parse_steps
from txgraph.plan.verify import run_step, scratch_engine
from txgraph.symbolic.params import Command, Counterexample, ParamPlan

__all__ = ["engine_view_changes", "read_export", "changed_runs", "observe_on_qsd"]

_EXPORT_BB = "bb:export:"
#: the granularity the comparison reports at (every image of the space is 1 MiB)
_GRAIN = 4096


def engine_view_changes(plan: ParamPlan, cex: Counterexample, policy: str) -> list[dict[str, Any]]:
    """The engine's V1 violations of the failing step (root, ranges) on ``cex``'s graph."""
    engine, _ = scratch_engine(cex.build)
    session = engine.context.session
    steps = parse_steps(plan.steps)
    for i, step in enumerate(steps[: cex.step + 1]):
        res = run_step(engine, session, i, step, policy)
        if i == cex.step:
            found = (res.verdict or {}).get("violations", [])
            return [v for v in found if v.get("rule") == RULE]
    return []


def _exports(cmds: list[Command]) -> tuple[str | None, dict[str, str]]:
    """The NBD server's socket and export id -> export name, from the commands."""
    sock: str | None = None
    names: dict[str, str] = {}
    for c in cmds:
        args = c.get("arguments", {})
        if c.get("execute") == "nbd-server-start":
            sock = str(args["addr"]["data"]["path"])
        elif c.get("execute") == "block-export-add":
            names[str(args["id"])] = str(args.get("name", args["node-name"]))
    return sock, names


def read_export(sock: str, name: str, workdir: Path) -> bytes:
    """Every byte a guest reads through the NBD export ``name`` (qemu-img as the client)."""
    with tempfile.NamedTemporaryFile(dir=workdir, suffix=".raw") as out:
        subprocess.run(
            [
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "raw",
                f"nbd+unix:///{name}?socket={sock}",
                out.name,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return Path(out.name).read_bytes()


def changed_runs(a: bytes, b: bytes) -> list[tuple[int, int]]:
    """The byte ranges (multiples of 4 KiB) whose contents differ, merged."""
    out: list[tuple[int, int]] = []
    for off in range(0, max(len(a), len(b)), _GRAIN):
        if a[off : off + _GRAIN] != b[off : off + _GRAIN]:
            if out and out[-1][0] + out[-1][1] == off:
                out[-1] = (out[-1][0], out[-1][1] + _GRAIN)
            else:
                out.append((off, _GRAIN))
    return out


def _merged(ranges: list[dict[str, Any]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for r in sorted(ranges, key=lambda r: int(r["offset"])):
        off, n = int(r["offset"]), int(r["length"])
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


def observe_on_qsd(
    plan: ParamPlan,
    cex: Counterexample,
    execute: Callable[[Command], dict[str, Any]],
    workdir: Path,
    policy: str = "safe",
) -> dict[str, Any]:
    """Replay ``cex`` through ``execute`` (a QSD peer's) and read the affected exports
    before and after the failing step (see the module doc). ``ok``: prediction =
    observation."""
    predicted = engine_view_changes(plan, cex, policy)
    sock, names = _exports(cex.build + plan.steps[: cex.step + 1])
    report: dict[str, Any] = {"ok": False, "exports": {}}
    if not predicted or sock is None:
        report["why"] = "the engine names no guest-view change to observe"
        return report
    for cmd in cex.build + plan.steps[: cex.step]:
        reply = execute(cmd)
        if "return" not in reply:
            report["why"] = f"{cmd.get('execute')}: {reply}"
            return report
    roots = {str(v["root"]).removeprefix(_EXPORT_BB): v for v in predicted}
    before = {x: read_export(sock, names[x], workdir) for x in roots}
    reply = execute(plan.steps[cex.step])
    if "return" not in reply:
        report["why"] = f"QEMU refused the step: {reply}"
        return report
    ok = True
    for x, v in roots.items():
        after = read_export(sock, names[x], workdir)
        seen = changed_runs(before[x], after)
        want = _merged(v["ranges"])
        zeroes = all(
            after[int(r["offset"]) : int(r["offset"]) + int(r["length"])] == bytes(int(r["length"]))
            for r in v["ranges"]
            if r["after"] is None
        )
        same = seen == want and zeroes and v["ranges-total"] == len(v["ranges"])
        ok = ok and same
        report["exports"][x] = {
            "predicted": [list(r) for r in want],
            "observed": [list(r) for r in seen],
            "zeroes-where-predicted": zeroes,
            "bytes-read": len(after),
        }
    report["ok"] = ok
    return report
