"""Applying a verified plan to a live QEMU / qemu-storage-daemon, checked step by step.

``txgraph apply VERIFIED --qmp SOCK`` against QEMU 7.2 (which has no
``x-txgraph-apply-plan``) runs :func:`apply_to_qemu`:

1. the live graph is captured again (:func:`txgraph.plan.client.capture_graph`)
   and its digest (:func:`import_digest`, over the canonical graph, nodes,
   exports and monitor ownership) must equal the one the plan was verified
   against (``source.graph-digest``, sealed with the plan);
2. :func:`prepare` turns every step into QEMU 7.2 commands (extension steps
   through :mod:`txgraph.plan.compile`, trying its candidate orders on a fresh
   dry run each and keeping the first one QEMU accepts throughout), checks that
   each compiled step leaves the graph the extension step itself leaves, and
   records the predicted reply and state after every command. Nothing is sent
   when a step cannot be compiled;
3. the commands are sent one at a time; after each, the live reply and both
   state queries are compared (canonically, :mod:`txgraph.oracle.canon`) with
   the prediction, and the first difference stops the apply.

Each dry run is a scratch engine rebuilt from the same capture
(:func:`txgraph.plan.verify.scratch_engine`), so trying an order never
disturbs the next one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from txgraph.errors import TxgraphError
from txgraph.oracle.canon import canon_reply
from txgraph.oracle.compare import StepRecord, compare_records
from txgraph.plan.compile import CompileError, compile_step
from txgraph.plan.format import Step, parse_steps
from txgraph.plan.importer import GraphImport, import_digest
from txgraph.plan.verify import scratch_engine
from txgraph.qmp.engine import Engine

__all__ = [
    "ApplyError",
    "Predicted",
    "Prepared",
    "import_digest",
    "live_state",
    "prepare",
    "apply_to_qemu",
    "ApplyOutcome",
]

Execute = Callable[[dict[str, Any]], dict[str, Any]]


class ApplyError(TxgraphError, RuntimeError):
    """The plan cannot be applied (stale start, no QEMU 7.2 form); nothing was sent."""


def live_state(execute: Execute) -> tuple[Any, Any]:
    """Both state queries, canonical (``query-named-block-nodes``, ``x-debug-query-block-graph``)."""
    q_nodes: dict[str, Any] = {"execute": "query-named-block-nodes", "arguments": {"flat": True}}
    q_graph: dict[str, Any] = {"execute": "x-debug-query-block-graph"}
    nodes = canon_reply(q_nodes, execute(q_nodes), None, writes=True)
    graph = canon_reply(q_graph, execute(q_graph), None)
    return nodes.get("return", nodes), graph.get("return", graph)


@dataclass
class Predicted:
    """One QEMU command of the compiled plan and what the dry run says it does."""

    step: int
    label: str
    message: dict[str, Any]
    record: StepRecord
    #: position within the step's commands and how many there are
    position: tuple[int, int] = (1, 1)


@dataclass
class Prepared:
    commands: list[Predicted]
    notes: list[str] = field(default_factory=list)


def _fresh(imp: GraphImport, history: list[dict[str, Any]]) -> Engine:
    engine, _source = scratch_engine(imp)
    for msg in history:
        engine.execute(msg)
    return engine


def _run(engine: Engine, step: int, label: str, order: list[dict[str, Any]]) -> list[Predicted]:
    out: list[Predicted] = []
    for i, msg in enumerate(order):
        reply = engine.execute(msg)
        nodes, graph = live_state(engine.execute)
        record = StepRecord(step, json.dumps(msg), canon_reply(msg, reply, None), nodes, graph)
        out.append(Predicted(step, label, msg, record, (i + 1, len(order))))
    return out


def _first_error(run: list[Predicted]) -> str | None:
    for p in run:
        if isinstance(p.record.reply, dict) and "error" in p.record.reply:
            return f"{p.message['execute']}: {p.record.reply['error']['desc']}"
    return None


def prepare(imp: GraphImport, steps: list[Step]) -> Prepared:
    """Every step as QEMU 7.2 commands with their predicted replies and states (see module)."""
    history: list[dict[str, Any]] = []
    prepared = Prepared([])
    engine = _fresh(imp, history)
    try:
        for index, step in enumerate(steps, 1):
            label = step.label()
            try:
                compiled = compile_step(engine.context.session, step)
            except CompileError as err:
                raise ApplyError(f"step {index} ({label}): {err}") from None
            if compiled is None:
                run = _run(engine, index, label, [step.message()])
                error = _first_error(run)
                if error is not None:
                    raise ApplyError(f"step {index} ({label}) would fail on QEMU: {error}")
                prepared.commands += run
                history.append(step.message())
                continue
            # What the extension step itself leaves: the compiled form must leave the same.
            ext = _fresh(imp, history)
            try:
                ext.execute(step.message())
                want = live_state(ext.execute)
            finally:
                ext.context.session.close()
            errors: list[str] = []
            chosen: list[Predicted] | None = None
            for order in compiled.orders:
                trial = _fresh(imp, history)
                try:
                    run = _run(trial, index, label, order)
                finally:
                    trial.context.session.close()
                error = _first_error(run)
                if error is None and (
                    not run or (run[-1].record.nodes, run[-1].record.graph) == want
                ):
                    chosen = run
                    break
                errors.append(error or "leaves a different graph than the step itself")
            if chosen is None:
                raise ApplyError(
                    f"step {index} ({label}): no order of its QEMU 7.2 commands is accepted "
                    f"throughout ({len(compiled.orders)} tried; first: {errors[0] if errors else '-'})"
                )
            prepared.notes += [f"step {index} ({label}): {n}" for n in compiled.notes]
            prepared.commands += chosen
            history += [p.message for p in chosen]
            engine.context.session.close()
            engine = _fresh(imp, history)
    finally:
        engine.context.session.close()
    return prepared


@dataclass
class ApplyOutcome:
    sent: int
    total: int
    problems: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and self.sent == self.total


def apply_to_qemu(report: dict[str, Any], client: Any) -> ApplyOutcome:
    """Apply a sealed, verified report through ``client`` (a connected QMP client).

    Raises :class:`ApplyError` when nothing may be sent; otherwise sends the
    commands and stops at the first whose reply or resulting state differs from
    the prediction (``problems`` says where and what, one line each).
    """
    from txgraph.plan.client import capture_graph

    source = report.get("source", {})
    expected = source.get("graph-digest") if isinstance(source, dict) else None
    if not isinstance(expected, str):
        raise ApplyError(
            "the plan was not verified against a live graph: verify it with "
            "txgraph plan PLAN --graph-from-qmp SOCK --out FILE"
        )
    imp = capture_graph(client)
    if import_digest(imp) != expected:
        raise ApplyError(
            "the live graph no longer matches the graph the plan was verified against; "
            "refusing to apply it: verify the plan again"
        )
    prepared = prepare(imp, parse_steps(report["plan"]))
    total = len(prepared.commands)
    for sent, predicted in enumerate(prepared.commands):
        msg = predicted.message
        reply = client.execute(msg["execute"], msg.get("arguments"))
        nodes, graph = live_state(lambda m: client.execute(m["execute"], m.get("arguments")))
        observed = StepRecord(
            predicted.step, predicted.record.command, canon_reply(msg, reply, None), nodes, graph
        )
        diffs = compare_records(predicted.record, observed)
        if diffs:
            at, of = predicted.position
            where = (
                f"step {predicted.step} ({predicted.label}), command {at} of {of} "
                f"({msg['execute']})"
            )
            problems = [f"{where}: predicted {d.replace('  !=  ', ', observed ')}" for d in diffs]
            problems = [
                p.replace("only in left", "only predicted").replace(
                    "only in right", "only observed"
                )
                for p in problems
            ]
            return ApplyOutcome(sent + 1, total, problems, prepared.notes)
    return ApplyOutcome(total, total, [], prepared.notes)
