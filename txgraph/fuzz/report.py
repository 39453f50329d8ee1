"""The campaign report: ``report.json`` and ``report.html`` from the workers' statistics."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

__all__ = ["collect", "write_report"]


def _cpu(workers: list[dict[str, Any]]) -> float:
    return float(sum(w.get("cpu_seconds", 0.0) for w in workers))


def collect(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Add up ``worker-N.json`` files into one report (divergences merged by signature)."""
    workers = []
    for path in sorted(out.glob("worker-*.json")):
        try:
            workers.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    behaviours: set[str] = set()
    divergences: dict[str, dict[str, Any]] = {}
    op_mix: dict[str, int] = {}
    timeline: list[tuple[float, int, int]] = []
    for w in workers:
        behaviours.update(w["behaviours"])
        for name, count in w["op_mix"].items():
            op_mix[name] = op_mix.get(name, 0) + count
        timeline.extend((t, n, w["worker"]) for t, n in w["timeline"])
        for sig, d in w["divergences"].items():
            merged = divergences.setdefault(sig, {**d, "count": 0, "workers": []})
            merged["count"] += d["count"]
            merged["workers"].append(w["worker"])
            merged["first_seconds"] = min(merged["first_seconds"], d["first_seconds"])
            for key in ("repro", "steps"):
                if key in d:
                    merged.setdefault(key, d[key])
    steps = sum(w["steps"] for w in workers)
    peer_failures = [f for w in workers for f in w.get("peer_failures", [])]
    elapsed = max((w["elapsed"] for w in workers), default=0.0)
    # throughput of the search: the shrinking after it is not steps of the campaign
    searched = max((w.get("searched") or w["elapsed"] for w in workers), default=0.0)
    return {
        "format": "txgraph-fuzz-report/1",
        "config": config,
        "workers": len(workers),
        "steps": steps,
        "sequences": sum(w["sequences"] for w in workers),
        "behaviours": len(behaviours),
        "elapsed": elapsed,
        "searched": searched,
        "steps_per_second": round(steps / searched, 1) if searched else 0.0,
        # steps per CPU second of the workers: what the code does on a shared machine
        "steps_per_cpu_second": round(steps / cpu, 1) if (cpu := _cpu(workers)) else 0.0,
        "op_mix": dict(sorted(op_mix.items(), key=lambda kv: -kv[1])),
        "timeline": sorted(timeline),
        "divergences": divergences,
        # findings that are known QEMU bugs (txgraph.fuzz.known), pinned by their tests
        "known_qemu_bugs": sorted(s for s, d in divergences.items() if d.get("known")),
        "peer_failures": peer_failures,
    }


def _html(report: dict[str, Any]) -> str:
    rows = []
    for sig, d in sorted(report["divergences"].items(), key=lambda kv: kv[1]["first_seconds"]):
        repro = d.get("repro")
        link = f'<a href="{html.escape(repro)}">{html.escape(repro)}</a>' if repro else "-"
        rows.append(
            f"<tr><td>{sig}</td><td>{html.escape(d['kind'])}</td>"
            f"<td>{html.escape(d['command'])}</td><td>{d['count']}</td>"
            f"<td>{d['first_seconds']}</td><td>{d.get('steps', '-')}</td><td>{link}</td>"
            f"<td><pre>{html.escape(chr(10).join(d.get('lines', [])))}</pre></td></tr>"
        )
    ops = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in report["op_mix"].items()
    )
    points = " ".join(f"{t},{n}" for t, n, _w in report["timeline"])
    cfg = report["config"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>txgraph fuzz report</title>
<style>body{{font-family:Helvetica,Arial,sans-serif;margin:2em}}td,th{{border:1px solid #ccc;
padding:.3em;vertical-align:top}}table{{border-collapse:collapse}}pre{{margin:0;font-size:.8em}}</style>
</head><body>
<h1>txgraph fuzz: against {html.escape(str(cfg.get("against")))}, seed {cfg.get("seed")}</h1>
<p>{report["steps"]} steps in {report["sequences"]} sequences by {report["workers"]} worker(s) in
{report["elapsed"]} s ({report["steps_per_second"]} steps/s); {report["behaviours"]} behaviours;
{len(report["divergences"])} divergence(s), {len(report["known_qemu_bugs"])} of them known QEMU bugs.</p>
<h2>Divergences</h2>
<table><tr><th>signature</th><th>kind</th><th>command</th><th>count</th><th>first (s)</th>
<th>shrunk steps</th><th>reproducer</th><th>what differs</th></tr>{"".join(rows)}</table>
<h2>Behaviours over time</h2><p>(seconds, behaviours seen by a worker)</p><pre>{points}</pre>
<h2>Operation mix</h2><table><tr><th>command</th><th>steps</th></tr>{ops}</table>
</body></html>
"""


def write_report(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    report = collect(out, config)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.html").write_text(_html(report))
    return report
