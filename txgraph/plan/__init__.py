"""txgraph.plan: reconfiguration plans — verify them on a dry run, then apply them.

Plan file format (JSON)
-----------------------
Either a list of steps, or an object ``{"steps": [...], "graph": STATE}``
(``graph`` is optional and has the same shapes as ``txgraph plan --graph``).
A step is

* a QMP command object, exactly what a QMP client sends to qemu-storage-daemon::

      {"execute": "blockdev-snapshot", "arguments": {"node": "disk", "overlay": "snap"}}

* or an atomic group ``{"transaction": [ACTION, ...]}`` whose actions use the
  ``transaction`` action shape (``{"type": ..., "data": {...}}``) with QEMU's
  action types and txgraph's extension types (``x-txgraph-blockdev-add``,
  ``x-txgraph-blockdev-reopen``, ``x-txgraph-insert-filter``...); it runs as
  ``x-txgraph-transaction``: all actions or none.

Every string may contain ``{dir}``, replaced by ``txgraph plan --dir DIR``.

Starting state (``--graph STATE``)
----------------------------------
* a JSON list of QMP commands (same step shapes), run on the scratch engine
  first (images are opened read-only, never written, never locked); or
* a graph import ``{"block-graph": <x-debug-query-block-graph>,
  "named-nodes": <query-named-block-nodes>, "block-exports": <optional>}``,
  as captured from any QEMU 7.2 / qemu-storage-daemon / txgraph process
  (``--graph-from-qmp SOCKET`` captures it live; from a txgraph server it also
  records ``generation`` and ``digest``).

Verified file (``txgraph plan --out FILE``, also the ``--json`` output)
---------------------------------------------------------------------
``{"format": "txgraph-plan-report/1", "txgraph": VERSION, "ok": bool, "policy": ...,
"source": {"kind", "generation"?, "digest"?}, "plan": [steps], "steps": [per-step
result: index, label, step, extension, accepted, ok, reply, error, explanation,
diff, verdict, warnings, not-simulated], "seal": {"algorithm", "digest"}}``. The
seal (:mod:`txgraph.plan.seal`) is a digest over every other member, keyed with
``--key-file``: ``txgraph apply`` refuses a file edited after verification or
verified by another txgraph version. ``txgraph apply VERIFIED --qmp SOCKET`` sends ``x-txgraph-apply-plan`` with ``expect-generation`` and
``expect-digest`` from ``source``: the server refuses it when the live graph
changed since the plan was verified.
"""

from __future__ import annotations

from txgraph.plan.diff import GraphDiff, diff, snapshot
from txgraph.plan.dryrun import DryRunRuntime
from txgraph.plan.format import Plan, PlanError, Step, load_plan, parse_plan
from txgraph.plan.importer import GraphImport, import_into
from txgraph.plan.render import render_text
from txgraph.plan.verify import PlanReport, StateError, scratch_engine, verify_plan

__all__ = ["Plan", "PlanError", "Step", "load_plan", "parse_plan", "GraphDiff", "diff",
           "snapshot", "DryRunRuntime", "GraphImport", "import_into", "render_text",
           "PlanReport", "StateError", "scratch_engine", "verify_plan"]


def demo_section(workdir: str) -> int:
    """``txgraph demo`` section 6: verify examples/seed-section3.json on the demo's images.

    Creates the plan's overlay image, dry-runs the example plan on the state
    built from the demo's ``disk0.qcow2``, prints the report; returns 0 if it
    verifies. Nothing is written to the demo's images.
    """
    import subprocess
    from pathlib import Path

    from txgraph.plan.format import load_json

    examples = Path(__file__).resolve().parents[2] / "examples"
    overlay = Path(workdir) / "snap0.qcow2"
    if not overlay.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "disk0.qcow2", "-F",
                        "qcow2", str(overlay)], check=True, capture_output=True)
    plan = load_plan(examples / "seed-section3.json", workdir)
    state = load_json(examples / "seed-section3-state.json", workdir)
    report = verify_plan(plan, state, policy="safe").to_dict()
    print(render_text(report))
    return 0 if report["ok"] else 1
