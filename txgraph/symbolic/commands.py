"""The CLI side of txgraph.symbolic: ``txgraph plan --from STATE --to TARGET``.

Kept here so that :mod:`txgraph.cli` only parses options and calls one function.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["synth_report", "render_synth"]


def synth_report(
    from_file: str,
    to_file: str,
    directory: str | None,
    policy: str,
    max_steps: int,
    transaction: bool = False,
) -> dict[str, Any]:
    """Load both state files (lists of QMP commands, ``{dir}`` substituted) and search;
    ``transaction``: one atomic ``x-txgraph-transaction`` (:mod:`txgraph.symbolic.txsynth`)."""
    from txgraph.plan.format import load_json
    from txgraph.symbolic.txsynth import synthesize_transaction

    start, target = load_json(from_file, directory), load_json(to_file, directory)
    for label, value in (("--from", start), ("--to", target)):
        if not isinstance(value, list):
            raise ValueError(f"{label} must be a JSON list of QMP commands")
    if transaction:
        found = synthesize_transaction(start, target, max_actions=max_steps, policy=policy)
        return {**found.to_dict(), "transaction": True}
    return synth_commands(start, target, max_steps, policy)


def synth_commands(
    start: list[Any], target: list[Any], max_steps: int, policy: str
) -> dict[str, Any]:
    """z3's bounded model check first (:mod:`txgraph.symbolic.bmc`), its sequence confirmed
    on the engine; the BFS (:mod:`txgraph.symbolic.synth`) where z3's encoding does not
    reach (a node changing its driver), where the engine does not confirm z3's sequence, or where z3 finds
    none (its candidate forms are the BFS's minus some, so "none" needs both)."""
    from txgraph.symbolic.bmc import NotEncodable, bmc_synthesize
    from txgraph.symbolic.synth import reaches, synthesize

    try:
        z = bmc_synthesize(start, target, max_steps=max_steps)
    except NotEncodable as exc:
        return {
            **synthesize(start, target, max_steps=max_steps, policy=policy).to_dict(),
            "method": "bfs",
            "z3": f"not encoded: {exc}",
        }
    if z.found and reaches(start, z.steps, target, policy):
        return {
            "found": True,
            "steps": z.steps,
            "states-explored": z.candidates,
            "max-steps": max_steps,
            "blocked-by": [],
            "exhausted": False,
            "method": "z3",
        }
    bfs = synthesize(start, target, max_steps=max_steps, policy=policy).to_dict()
    if z.found:
        return {**bfs, "method": "bfs", "z3": "its sequence is not confirmed by the engine"}
    if bfs["found"]:
        return {**bfs, "method": "bfs", "z3": "no sequence in its encoding"}
    return {
        **bfs,
        "method": "z3+bfs",
        "blocked-by": [*z.blocked, *bfs["blocked-by"]],
        "z3-bound": z.bound,
    }


def render_synth(report: dict[str, Any]) -> str:
    if report["found"] and report.get("transaction"):
        lines = [f"found: one transaction, {report['states-explored']} candidate(s) run"]
        lines += [f"  {i + 1}. {json.dumps(s)}" for i, s in enumerate(report["steps"])]
        return "\n".join(lines)
    if report.get("transaction"):
        lines = [f"impossible: no transaction of at most {report['max-steps']} actions"]
        lines += [f"  refused: {b}" for b in report["blocked-by"]]
        return "\n".join(lines)
    if report["found"] and report.get("method") == "z3":
        lines = [
            f"found by z3 (bounded model check over {report['states-explored']} candidate "
            f"commands, confirmed on the engine): {len(report['steps'])} step(s)"
        ]
        lines += [f"  {i + 1}. {json.dumps(s)}" for i, s in enumerate(report["steps"])]
        return "\n".join(lines)
    if report["found"]:
        lines = [f"found: {len(report['steps'])} step(s), {report['states-explored']} states"]
        if "z3" in report:
            lines[0] += f" (breadth first; z3: {report['z3']})"
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


def verify_symbolic(
    plan_file: str, max_nodes: int, policy: str, workdir: str | None, confirm: bool
) -> dict[str, Any]:
    """``txgraph verify PLAN --symbolic``: search, and with ``confirm`` replay the
    counterexample on a fresh qemu-storage-daemon 7.2 (closed before returning).

    Images go to ``workdir``; without one, to a temporary directory removed at the end.
    """
    import shutil
    import tempfile
    from pathlib import Path

    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="txgraph-symbolic-")
        try:
            return verify_symbolic(plan_file, max_nodes, policy, tmp, confirm)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    from txgraph.plan.format import load_json
    from txgraph.symbolic.params import confirm_on_qsd, load_param_plan
    from txgraph.symbolic.search import search

    wd = Path(workdir)
    plan = load_param_plan(load_json(plan_file, str(wd)))
    result = search(plan, wd, max_nodes=max_nodes, policy=policy)
    report = result.to_dict()
    if result.counterexample is None and result.prediction is not None:
        # the encoding is wrong on this graph: say so instead of "none"
        raise RuntimeError(
            f"z3 predicts a failure ({json.dumps(result.prediction)}) that the engine does "
            "not confirm"
        )
    if confirm and result.counterexample is not None:
        from txgraph.oracle.peers import QSDPeer
        from txgraph.symbolic.guestsmt import RULE
        from txgraph.symbolic.observe import observe_on_qsd

        cex = result.counterexample
        peer = QSDPeer(wd)
        try:
            if RULE in cex.rules:
                # the guest's reads through the export, before and after the step
                seen = observe_on_qsd(plan, cex, peer.execute, wd, policy)
                ok, said = bool(seen["ok"]), json.dumps(seen)
            else:
                ok, said = confirm_on_qsd(plan, cex, peer.execute)
        finally:
            peer.close()
        report["qsd"] = {"prediction-equals-observation": ok, "observed": said}
    return report


def render_symbolic(report: dict[str, Any]) -> str:
    import shlex

    from txgraph.symbolic.params import tool_argv

    cex = report["counterexample"]
    how = (
        f"z3 over {report['encoding'].get('states')} states, "
        f"{report['encoding'].get('instances')} rule instances"
        if report.get("method") == "z3"
        else f"enumeration: {report['candidates']} starting graphs run"
        + (
            f" ({report['encoding']['not-encoded']})"
            if "not-encoded" in report.get("encoding", {})
            else ""
        )
    )
    if cex is None and report.get("prediction") is None:
        return f"none up to {report['max-nodes']} nodes ({how}) in {report['seconds']} s"
    if cex is None:
        return (
            f"z3 predicts {json.dumps(report['prediction'])} but the engine does not confirm it "
            f"({report['seconds']} s)"
        )
    agrees = report.get("engine-agrees")
    lines = [
        f"counterexample ({how}, {report['seconds']} s): {json.dumps(cex['assignment'])}",
        *(
            [f"engine run agrees with z3's prediction: {'yes' if agrees else 'NO'}"]
            if report.get("method") == "z3"
            else []
        ),
        "images:",
        *(f"  {shlex.join(tool_argv(a))}" for a in cex["qemu-img"]),
        "build:",
        *(f"  {json.dumps(c)}" for c in cex["build"]),
        f"failing step {cex['failing-step']}: {json.dumps(cex['command'])}",
        f"  {'QEMU refuses: ' + cex['error'] if cex['error'] else 'accepted but unsafe'}",
        f"  rules: {', '.join(cex['rules']) or '-'}",
    ]
    if "qsd" in report:
        q = report["qsd"]
        verdict = "confirmed" if q["prediction-equals-observation"] else "NOT confirmed"
        lines.append(f"qemu-storage-daemon 7.2: {verdict}: {q['observed']}")
    return "\n".join(lines)
