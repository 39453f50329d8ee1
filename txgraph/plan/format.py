"""Plan files: parsing, ``{dir}`` substitution, and steps as QMP messages.

A plan is JSON, either a bare list of steps or ``{"steps": [...], "graph": ...}``.
A step is a QMP command object (``{"execute": NAME, "arguments": {...}}``,
exactly what a QMP client would send to qemu-storage-daemon), a wait point
``{"wait": POINT, "job": ID}`` (``ready``, ``completed``, ``pending``, ``null``...:
the plan goes on once the job got there; sent as ``x-txgraph-wait-job``), or a group
``{"transaction": [ACTION, ...]}`` whose actions must apply atomically; a
group is sent as txgraph's ``x-txgraph-transaction`` (QEMU's ``transaction``
semantics, all-or-nothing as in blockdev.c ``qmp_transaction``, plus the
txgraph extension action types).

A command or a group may carry ``"intent": "changes-guest-data"``: the step
is meant to change what a guest reads (a backing cut, a layer skipped), so the
``safe`` policy's guest-view rule (V1-guest-view) reports the change instead
of refusing it. The same member on the plan object applies to every step.
The intent is part of the step (``to_json``: sealed with it), never of the
QMP message QEMU receives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txgraph import __version__
from txgraph.errors import TxgraphError
from txgraph.plan.seal import seal_problem

__all__ = [
    "PlanError",
    "Step",
    "Plan",
    "load_plan",
    "parse_plan",
    "substitute_dir",
    "parse_steps",
    "check_verified",
    "load_json",
    "json_text_error",
    "INTENTS",
]


class PlanError(TxgraphError, ValueError):
    """A plan or state file that does not have the documented shape."""


@dataclass(frozen=True)
class Step:
    """One unit of a plan: a QMP command, or an atomic group of transaction actions."""

    execute: str
    arguments: dict[str, Any] = field(default_factory=dict)
    #: the actions of a ``{"transaction": [...]}`` group (None for a plain command)
    actions: list[dict[str, Any]] | None = None
    #: ``"changes-guest-data"`` when the step declares that it changes the guest's data
    intent: str | None = None

    @property
    def is_group(self) -> bool:
        return self.actions is not None

    def message(self) -> dict[str, Any]:
        """The QMP message that runs this step (a group runs as ``x-txgraph-transaction``)."""
        if self.actions is not None:
            return {"execute": "x-txgraph-transaction", "arguments": {"actions": self.actions}}
        msg: dict[str, Any] = {"execute": self.execute}
        if self.arguments:
            msg["arguments"] = self.arguments
        return msg

    def to_json(self) -> dict[str, Any]:
        """The step as it is written in a plan file."""
        if self.actions is not None:
            group: dict[str, Any] = {"transaction": self.actions}
            return {**group, "intent": self.intent} if self.intent else group
        if self.execute == "x-txgraph-wait-job":
            out: dict[str, Any] = {"wait": self.arguments["event"], "job": self.arguments["job"]}
            if "timeout" in self.arguments:
                out["timeout"] = self.arguments["timeout"]
            return out
        msg = self.message()
        return {**msg, "intent": self.intent} if self.intent else msg

    def label(self) -> str:
        if self.actions is not None:
            kinds = ", ".join(str(a.get("type")) for a in self.actions)
            return f"transaction [{kinds}]"
        target = next(
            (
                self.arguments[k]
                for k in ("node-name", "node", "id", "overlay")
                if isinstance(self.arguments.get(k), str)
            ),
            None,
        )
        if self.execute == "x-txgraph-wait-job":
            return f"wait {self.arguments['event']} of job {self.arguments['job']}"
        if self.execute == "blockdev-reopen":
            names = [
                o.get("node-name") for o in self.arguments.get("options", []) if isinstance(o, dict)
            ]
            target = ", ".join(str(n) for n in names)
        return f"{self.execute} {target}" if target else self.execute


@dataclass(frozen=True)
class Plan:
    steps: list[Step]
    #: the optional embedded starting state (same shapes as ``--graph``)
    graph: Any = None


#: the values a step's (or plan's) ``intent`` member may take
INTENTS = ("changes-guest-data",)


def _intent(where: str, item: dict[str, Any]) -> str | None:
    value = item.get("intent")
    if value is None and "intent" not in item:
        return None
    if value not in INTENTS:
        raise PlanError(f"{where}: 'intent' must be one of {list(INTENTS)}, got {value!r}")
    return str(value)


def parse_steps(raw: Any, intent: str | None = None) -> list[Step]:
    """Validate the step list; the error names the offending step index.

    ``intent`` (the plan's own) applies to every command and group step.
    """
    if not isinstance(raw, list):
        raise PlanError("the steps of a plan must be a JSON array")
    steps: list[Step] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PlanError(f"step {i}: expected an object, got {type(item).__name__}")
        if "wait" in item:
            unexpected = set(item) - {"wait", "job", "timeout"}
            if unexpected:
                raise PlanError(f"step {i}: unexpected member(s) {sorted(unexpected)}")
            if not isinstance(item.get("job"), str) or not isinstance(item["wait"], str):
                raise PlanError(f'step {i}: a wait point is {{"wait": POINT, "job": ID}}')
            wait_args: dict[str, Any] = {"job": item["job"], "event": item["wait"]}
            if "timeout" in item:
                wait_args["timeout"] = item["timeout"]
            steps.append(Step("x-txgraph-wait-job", wait_args))
            continue
        if "transaction" in item:
            actions = item["transaction"]
            if set(item) - {"intent"} != {"transaction"}:
                raise PlanError(
                    f"step {i}: a transaction group has only the 'transaction' member "
                    "(and an optional 'intent')"
                )
            if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
                raise PlanError(f"step {i}: 'transaction' must be an array of action objects")
            steps.append(
                Step(
                    "x-txgraph-transaction",
                    {"actions": actions},
                    list(actions),
                    _intent(f"step {i}", item) or intent,
                )
            )
            continue
        name = item.get("execute")
        if not isinstance(name, str):
            raise PlanError(f"step {i}: missing 'execute' (or 'transaction')")
        unexpected = set(item) - {"execute", "arguments", "id", "intent"}
        if unexpected:
            raise PlanError(f"step {i}: unexpected member(s) {sorted(unexpected)}")
        args = item.get("arguments", {})
        if not isinstance(args, dict):
            raise PlanError(f"step {i}: 'arguments' must be an object")
        steps.append(Step(name, args, intent=_intent(f"step {i}", item) or intent))
    return steps


def parse_plan(data: Any) -> Plan:
    """A plan from parsed JSON: a list of steps, or ``{"steps": [...], "graph": ...}``."""
    if isinstance(data, list):
        return Plan(parse_steps(data))
    if isinstance(data, dict):
        unexpected = set(data) - {"steps", "graph", "description", "intent"}
        if unexpected:
            raise PlanError(f"unexpected plan member(s) {sorted(unexpected)}")
        if "steps" not in data:
            raise PlanError("a plan object needs a 'steps' member")
        return Plan(parse_steps(data["steps"], _intent("the plan", data)), data.get("graph"))
    raise PlanError("a plan is a JSON array of steps or an object with 'steps'")


def substitute_dir(value: Any, directory: str | None) -> Any:
    """Replace ``{dir}`` in every string of ``value`` (recursively) by ``directory``."""
    if directory is None:
        return value
    if isinstance(value, str):
        return value.replace("{dir}", directory)
    if isinstance(value, list):
        return [substitute_dir(v, directory) for v in value]
    if isinstance(value, dict):
        return {k: substitute_dir(v, directory) for k, v in value.items()}
    return value


def json_text_error(path: str | Path, err: ValueError) -> str:
    """One line for a file that is not JSON: bad syntax, or bytes that are not UTF-8."""
    if isinstance(err, UnicodeDecodeError):
        return f"{path}: not valid JSON: byte 0x{err.object[err.start]:02x} at {err.start} is not UTF-8"
    return f"{path}: not valid JSON: {err}"


def load_json(path: str | Path, directory: str | None = None) -> Any:
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PlanError(json_text_error(path, err)) from None
    return substitute_dir(data, directory)


def load_plan(path: str | Path, directory: str | None = None) -> Plan:
    return parse_plan(load_json(path, directory))


def check_verified(report: Any, key: bytes | None = None) -> str | None:
    """Why a verified-plan file cannot be applied (None if it can).

    The seal comes first: a report whose steps, source, policy or predictions
    were edited after verification is refused whatever else it says.
    """
    if not isinstance(report, dict) or report.get("format") != "txgraph-plan-report/1":
        return "not a verified plan (run txgraph plan ... --out FILE first)"
    problem = seal_problem(report, key)
    if problem:
        return problem
    if report.get("txgraph") != __version__:
        return (
            f"the plan was verified by txgraph {report.get('txgraph')}, this is txgraph "
            f"{__version__}: verify the plan again"
        )
    if not report.get("ok"):
        return "the plan did not verify cleanly; refusing to apply it"
    source = report.get("source", {})
    from_txgraph = isinstance(source.get("generation"), int) and isinstance(
        source.get("digest"), str
    )
    # a QEMU / qemu-storage-daemon capture is identified by its graph digest instead
    if not from_txgraph and not isinstance(source.get("graph-digest"), str):
        return (
            "the plan was not verified against a live graph "
            "(use txgraph plan --graph-from-qmp SOCKET --out FILE)"
        )
    try:
        parse_steps(report.get("plan"))
    except PlanError as err:
        return f"the verified plan is malformed: {err}"
    return None
