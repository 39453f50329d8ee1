"""Verifying a plan: every step dry-run on a scratch Engine, as the live process would run it.

The scratch session runs the ``qemu`` policy, so each step is answered as
qemu-storage-daemon 7.2 would answer it (success, or ``GenericError`` with
QEMU's ``desc`` and txgraph's explanation); the state after an accepted step
is the state QEMU would be in, and the next step runs on it. Under the
``safe`` policy the checker additionally judges every accepted step with the
data-loss rules (S1/S2: a backing chain cut under a live image), given the
graph before the step; a step the checker refuses makes the plan fail but is
kept applied in the scratch graph, because QEMU would have applied it.

The guest-view rule (V1-guest-view, :mod:`txgraph.ops.guest_view`) is judged
per transaction of the step, before the scratch runtime applies it, with the
allocation of the images the plan's graph opened (read-only, from disk). A
step declaring ``"intent": "changes-guest-data"`` keeps its findings in the
verdict's ``declared`` list without failing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from txgraph import __version__
from txgraph.checker.verdict import Violation
from txgraph.errors import TxgraphError
from txgraph.model.graph import BlockGraph
from txgraph.ops.confine import configure
from txgraph.ops.journal import Journal
from txgraph.ops.session import Session
from txgraph.plan.diff import PreImage, diff, snapshot
from txgraph.plan.dryrun import DryRunNbdServer, DryRunRuntime
from txgraph.plan.format import Plan, Step, parse_steps
from txgraph.plan.importer import GraphImport, import_digest, import_into, parse_state_import
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine

__all__ = [
    "StateError",
    "StepResult",
    "PlanReport",
    "scratch_engine",
    "verify_plan",
    "run_step",
    "start_is_valid",
    "StepObserver",
    "REPORT_FORMAT",
]

REPORT_FORMAT = "txgraph-plan-report/1"
#: also compute each step's diff from whole-graph snapshots and require equality
#: (the O(change) diff's guard in the test suite; costs O(graph) per step)
_VERIFY_DIFF = os.environ.get("TXGRAPH_VERIFY_DIFF") == "1"


class StateError(TxgraphError, ValueError):
    """The starting state could not be built."""


@dataclass
class StepResult:
    index: int
    step: Step
    accepted: bool
    reply: dict[str, Any]
    diff: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    #: set when the step was not run at all (it would touch the host)
    not_simulated: str | None = None

    @property
    def extension(self) -> bool:
        """The step uses a txgraph extension QEMU itself does not have."""
        name = str(self.step.message()["execute"])
        return name.startswith("x-txgraph-") or name == "x-blockdev-replace"

    @property
    def ok(self) -> bool:
        return self.accepted and (self.verdict is None or bool(self.verdict.get("ok")))

    def to_dict(self) -> dict[str, Any]:
        error = self.reply.get("error")
        explanation = error.get("__io.txgraph_explanation") if error else None
        return {
            "index": self.index,
            "label": self.step.label(),
            "step": self.step.to_json(),
            "extension": self.extension,
            "accepted": self.accepted,
            "ok": self.ok,
            "reply": self.reply.get("return") if self.accepted else None,
            "error": {"class": error["class"], "desc": error["desc"]} if error else None,
            "explanation": explanation,
            "diff": self.diff,
            "verdict": self.verdict,
            "warnings": self.warnings,
            "not-simulated": self.not_simulated,
        }


@dataclass
class PlanReport:
    policy: str
    source: dict[str, Any]
    steps: list[StepResult]
    plan: list[Step]

    @property
    def ok(self) -> bool:
        return len(self.steps) == len(self.plan) and all(s.ok for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "txgraph": __version__,
            "ok": self.ok,
            "policy": self.policy,
            "source": self.source,
            "plan": [s.to_json() for s in self.plan],
            "steps": [s.to_dict() for s in self.steps],
        }


def scratch_engine(state: Any) -> tuple[Engine, dict[str, Any]]:
    """An Engine on a DryRunRuntime holding the starting graph, and a description of it.

    ``state`` is None (empty graph), a list of QMP commands (run first), or a
    graph import (:class:`GraphImport` or its JSON shape).
    """
    runtime = DryRunRuntime()
    session = Session(policy="qemu", runtime=runtime, nbd_server=DryRunNbdServer(runtime))
    engine = Engine(CommandContext(session))
    if state is None:
        return engine, {"kind": "empty"}
    if isinstance(state, list):
        for i, step in enumerate(parse_steps(state)):
            reason = _host_side_effect(step)
            if reason:
                raise StateError(f"state command {i}: {reason}")
            reply = engine.execute(step.message())
            if "error" in reply:
                raise StateError(f"state command {i} ({step.label()}): {reply['error']['desc']}")
        return engine, {"kind": "commands", "commands": len(state)}
    imp = state if isinstance(state, GraphImport) else parse_state_import(state)
    import_into(session, imp)
    source: dict[str, Any] = {"kind": "import", "nodes": len(session.graph.nodes)}
    if imp.generation is not None:
        source.update({"generation": imp.generation, "digest": imp.digest})
    else:  # QEMU: txgraph apply compares the live graph with this before sending anything
        source["graph-digest"] = import_digest(imp)
    return engine, source


def _host_side_effect(step: Step) -> str | None:
    """Steps a dry run must not execute because they would change the host."""
    actions = (
        step.actions
        if step.actions is not None
        else (
            step.arguments.get("actions", [])
            if step.execute in ("transaction", "x-txgraph-transaction")
            else [{"type": step.execute, "data": step.arguments}]
        )
    )
    for action in actions:
        if not isinstance(action, dict):
            continue
        data = action.get("data", {})
        if (
            action.get("type") == "blockdev-snapshot-sync"
            and isinstance(data, dict)
            and data.get("mode", "absolute-paths") != "existing"
        ):
            return (
                "blockdev-snapshot-sync would create the image "
                f"'{data.get('snapshot-file')}'; a dry run does not create files "
                "(use blockdev-add + blockdev-snapshot, or mode=existing)"
            )
        if action.get("type") in ("x-txgraph-apply-plan",):
            return "x-txgraph-apply-plan cannot be a step of a plan"
    return None


#: ``observer(index, phase, graph)`` sees the scratch graph before (``"before"``) and
#: after (``"after"``) each simulated step, e.g. to draw it; it must not change it.
StepObserver = Callable[[int, str, BlockGraph], None]


def verify_plan(
    plan: Plan | list[Step],
    state: Any = None,
    *,
    policy: str = "safe",
    engine: Engine | None = None,
    source: dict[str, Any] | None = None,
    observer: StepObserver | None = None,
    confine_dirs: tuple[str, ...] = (),
) -> PlanReport:
    """Dry-run every step of ``plan`` on a scratch engine built from ``state``.

    Under ``safe`` (or with ``confine_dirs``) the steps' image-header references
    are confined as ``txgraph serve`` confines them (txgraph.ops.confine);
    ``observer`` sees the graph around every step.
    """
    steps = plan.steps if isinstance(plan, Plan) else plan
    if engine is None:
        if state is None and isinstance(plan, Plan):
            state = plan.graph
        engine, source = scratch_engine(state)
    session = engine.context.session
    configure(session, confine_dirs, enabled=policy == "safe" or bool(confine_dirs))
    results: list[StepResult] = []
    try:
        # A valid starting state stays valid under every accepted step's region (each
        # step passed the qemu rules on what it touched; S1/S2/F1 compare with the
        # step's own before), so one whole-graph check here lets every step be judged
        # on what it touched: O(change) per step. A broken start keeps whole checks.
        regional = policy != "qemu" and start_is_valid(session, policy)
        for index, step in enumerate(steps):
            if observer is not None:
                observer(index, "before", session.graph)
            results.append(run_step(engine, session, index, step, policy, regional=regional))
            if observer is not None:
                observer(index, "after", session.graph)
    finally:
        session.close()
    return PlanReport(policy, source or {"kind": "engine"}, results, list(steps))


def start_is_valid(session: Session, policy: str) -> bool:
    """The starting state passes a whole-graph check (then steps are judged regionally)."""
    from txgraph.checker import check

    return not session.graph.nodes or check(session.graph, None, policy=policy).ok


def run_step(
    engine: Engine, session: Session, index: int, step: Step, policy: str, *, regional: bool = False
) -> StepResult:
    """Simulate one step; under ``safe`` judge it with the data-loss rules.

    ``regional``: the graph before the step is known valid, so the verdict is
    computed on the nodes the step's transactions touched (the same verdict as
    a whole-graph check, see :func:`verify_plan`), else on the whole graph.
    """
    reason = _host_side_effect(step)
    if reason is not None:
        reply = {"error": {"class": "GenericError", "desc": f"not simulated: {reason}"}}
        return StepResult(index, step, False, reply, not_simulated=reason)
    graph = session.graph
    # The step's before-values for S1/S2 and F1, and for its diff: a journal spanning
    # every transaction the step runs (O(change)), instead of a copy of the scratch graph.
    journal = Journal(graph)
    pre = PreImage(graph)
    journal.watch = pre
    before = snapshot(graph) if _VERIFY_DIFF else None
    session.last_warnings = []
    session.last_verdict = None
    session.outer_journal = journal
    guest: list[Violation] = []
    session.guest_view_sink = guest if policy != "qemu" else None
    try:
        reply = engine.execute(step.message())
    finally:
        session.outer_journal = None
        session.guest_view_sink = None
    accepted = "return" in reply
    result = StepResult(index, step, accepted, reply, warnings=list(session.last_warnings))
    if not accepted:
        explanation = reply["error"].get("__io.txgraph_explanation")
        verdict = explanation.get("explanation") if isinstance(explanation, dict) else None
        result.verdict = verdict if isinstance(verdict, dict) and "violations" in verdict else None
        return result
    result.diff = pre.diff().to_dict()
    if before is not None:
        full = diff(before, snapshot(graph)).to_dict()
        if full != result.diff:
            raise AssertionError(f"step diff {result.diff} != whole-graph diff {full}")
    if policy == "qemu":
        verdict = session.last_verdict
        result.verdict = verdict.to_dict() if verdict is not None else None
    else:
        from txgraph.checker import check

        if step.execute == "x-txgraph-wait-job":
            # At a wait point the graph changes are the jobs' own ends (a pivot, a dropped
            # filter), each made by the job in a transaction of its own: the rules comparing
            # with the graph before (frozen links, chain cuts) do not apply to them.
            result.verdict = check(graph, None, policy=policy).to_dict()
        else:
            touched = journal.touched if regional else None
            result.verdict = check(graph, touched, policy=policy, before=journal).to_dict()
        _add_guest_view(result.verdict, guest, declared=step.intent is not None)
    return result


def _add_guest_view(verdict: dict[str, Any], found: list[Violation], *, declared: bool) -> None:
    """Merge the step's V1-guest-view findings into its verdict (declared ones do not fail)."""
    if not found:
        return
    entries = [v.to_dict() for v in sorted(set(found))]
    if declared:
        verdict["declared"] = entries
        return
    verdict["violations"] = sorted(
        [*verdict["violations"], *entries], key=lambda v: (v["rule"], v["nodes"], v["sentence"])
    )
    verdict["ok"] = False
