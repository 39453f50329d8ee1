"""The human-readable plan report (``txgraph plan`` without ``--json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_text", "source_line", "step_lines", "result_sentence"]


def _perm(names: list[str]) -> str:
    return ",".join(names) or "-"


def _edge(e: dict[str, Any]) -> str:
    return (
        f"{e['parent']} --{e['name']}--> {e['child']} "
        f"(perm {_perm(e['perm'])} / shared {_perm(e['shared-perm'])})"
    )


def _value(v: Any) -> str:
    return ",".join(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else repr(v)


def _diff_lines(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for n in d["nodes-added"]:
        ro = "ro" if n["ro"] else "rw"
        out.append(f"  + node {n['node-name']} [{n['drv']}, {ro}] {n['file']}")
    for n in d["nodes-removed"]:
        out.append(f"  - node {n['node-name']} [{n['drv']}]")
    for c in d["nodes-changed"]:
        changes = "; ".join(
            f"{k}: {_value(a)} -> {_value(b)}" for k, (a, b) in c["changes"].items()
        )
        out.append(f"  ~ node {c['node']}: {changes}")
    for e in d["edges-added"]:
        out.append(f"  + edge {_edge(e)}")
    for e in d["edges-removed"]:
        out.append(f"  - edge {_edge(e)}")
    for c in d["edges-changed"]:
        changes = "; ".join(
            f"{k}: {_value(a)} -> {_value(b)}" for k, (a, b) in c["changes"].items()
        )
        out.append(f"  ~ edge {c['parent']}/{c['name']}: {changes}")
    return out or ["  (graph unchanged)"]


def render_text(report: dict[str, Any]) -> str:
    """One block per step: QEMU's answer, the graph diff, the checker, the warnings."""
    lines = [source_line(report)]
    for s in report["steps"]:
        mark = "OK  " if s["ok"] else "FAIL"
        lines.append(f"\n[{mark}] step {s['index'] + 1}: {s['label']}")
        lines.extend(step_lines(s, report["policy"]))
    missing = len(report["plan"]) - len(report["steps"])
    if missing > 0:
        lines.append(f"\n{missing} step(s) not reached")
    lines.append("\nresult: " + result_sentence(report))
    return "\n".join(lines)


def source_line(report: dict[str, Any]) -> str:
    """The report's first line: how many steps, the policy, and the starting graph."""
    src = report["source"]
    return (
        f"plan: {len(report['plan'])} step(s), policy {report['policy']}, "
        f"starting graph: {src.get('kind')}"
        + (
            f" (generation {src['generation']}, digest {str(src['digest'])[:16]})"
            if src.get("generation") is not None
            else ""
        )
    )


def result_sentence(report: dict[str, Any]) -> str:
    return (
        "every step would be accepted and the checker agrees"
        if report["ok"]
        else "the plan would NOT apply cleanly"
    )


def step_lines(s: dict[str, Any], policy: str) -> list[str]:
    """What one step would do: the predicted reply, the diff, the checker, the warnings."""
    lines: list[str] = []
    if s["extension"]:
        lines.append("  (txgraph extension: QEMU 7.2 itself does not have this command)")
    if s["accepted"]:
        who = "txgraph" if s["extension"] else "QEMU 7.2"
        lines.append(
            f"  {who} would accept it; reply: "
            f"{s['reply'] if s['reply'] not in (None, {}) else '{}'}"
        )
    elif s["not-simulated"]:
        lines.append(f"  not simulated: {s['not-simulated']}")
    else:
        who = "txgraph" if s["extension"] else "QEMU 7.2"
        lines.append(f"  {who} would refuse it: {s['error']['class']}: {s['error']['desc']}")
        exp = s.get("explanation") or {}
        if exp.get("rule"):
            lines.append(f"  rule: {exp['rule']}  subjects: {', '.join(exp.get('subjects', []))}")
    if s["diff"] is not None:
        lines.append(" graph diff:")
        lines.extend(_diff_lines(s["diff"]))
    verdict = s.get("verdict")
    if verdict is not None:
        state = "agrees" if verdict["ok"] else "refuses"
        lines.append(
            f" checker ({policy if s['accepted'] else 'qemu'} policy, {verdict['engine']}): {state}"
        )
        for v in verdict["violations"]:
            lines.append(f"  [{v['rule']}] {v['sentence']}")
        for v in verdict.get("declared", []):  # "intent": "changes-guest-data"
            lines.append(f"  declared [{v['rule']}] {v['sentence']}")
    for w in s["warnings"]:
        lines.append(f" warning: {w.get('sentence', w)}")
    return lines
