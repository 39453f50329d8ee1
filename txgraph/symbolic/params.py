"""Parameterised plans: is there a starting graph within the constraints on which a step fails?

A parameterised plan names node variables with constraints instead of a starting graph::

    {"variables": {
       "X": {"driver": "qcow2", "backing-depth": [1, 3], "writers": [0, 1]},
       "Y": {"driver": "throttle", "file": "X", "export": ["writable"]}},
     "steps": [... QMP commands naming the variables' nodes ...]}

- ``driver``: ``qcow2`` (a chain of ``backing-depth`` qcow2 layers, X on top, each over
  a file node), ``throttle`` (over the variable named by ``file``), ``file``;
- ``export``: the choices for an NBD export of the node (``none``, ``writable``,
  ``read-only``); ``writers``: how many *other* writable NBD exports use the node
  directly (a second writer); ``backing-depth``/``writers``: ``[lo, hi]``;
- ``data`` (``qcow2`` and ``file``): which layers hold data a guest reads — ``none``
  (the default: fresh, empty images), ``all``, or ``any`` (each layer's choice is a
  parameter). A layer with data holds one 64 KiB cluster of its own byte pattern at
  an offset of its own (:func:`data_slots`), so no layer's data hides another's and
  a guest's view changes exactly when the set of data layers it reads through does.

A counterexample is an assignment whose graph QEMU builds, on which some step is
refused (QEMU's error, under the ``qemu`` policy) or accepted but breaks a rule of the
``safe`` policy. The search itself is z3's (:mod:`txgraph.symbolic.search` over the
encoding of :mod:`txgraph.symbolic.smtplan`). This module holds the plan format, the
decoding of an assignment into QMP commands (:func:`build`), the engine run of one
assignment (:func:`run_plan`) and QSD confirmation (:func:`confirm_on_qsd`); the space
as z3 terms and the enumerating cross-check are :mod:`txgraph.symbolic.space`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txgraph.plan.format import parse_steps
from txgraph.plan.verify import run_step, scratch_engine

__all__ = [
    "ParamPlan",
    "Counterexample",
    "SearchResult",
    "load_param_plan",
    "data_slots",
    "tool_argv",
    "make_images",
    "run_plan",
    "build",
]

Command = dict[str, Any]
_EXPORTS = ("none", "writable", "read-only")
_DATA = ("none", "all", "any")
#: the data cluster of a layer: one per slot (:func:`data_slots`), within the 1 MiB images
DATA_CLUSTER = 64 << 10
_MAX_SLOTS = 16


class ParamPlanError(ValueError):
    """The parameterised plan file is malformed."""


@dataclass
class Var:
    name: str
    driver: str
    depth: tuple[int, int] = (1, 1)
    writers: tuple[int, int] = (0, 0)
    exports: tuple[str, ...] = ("none",)
    file: str | None = None
    #: ``none``, ``all`` or ``any``: which of the variable's layers hold data
    data: str = "none"

    def layers(self, depth: int) -> list[str]:
        """The variable's data layers, top first, for a chain of ``depth``."""
        if self.driver == "file":
            return [self.name]
        if self.driver == "qcow2":
            return [self.name] + [f"{self.name}-b{i}" for i in range(1, depth)]
        return []


@dataclass
class ParamPlan:
    description: str
    variables: dict[str, Var]
    steps: list[Command]
    #: qemu-img argument lists the plan's own steps need (an overlay's image), run once
    images: list[list[str]] = field(default_factory=list)


def _range(v: Any, what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v) and v[0] <= v[1]:
        return v[0], v[1]
    raise ParamPlanError(f"{what} must be an integer or [lo, hi]")


def load_param_plan(raw: Any) -> ParamPlan:
    if not isinstance(raw, dict) or not isinstance(raw.get("variables"), dict):
        raise ParamPlanError("a parameterised plan needs a 'variables' object")
    out: dict[str, Var] = {}
    for name, spec in raw["variables"].items():
        if not isinstance(spec, dict) or spec.get("driver") not in ("qcow2", "throttle", "file"):
            raise ParamPlanError(f"variable {name}: driver must be qcow2, throttle or file")
        exports = spec.get("export", ["none"])
        exports = [exports] if isinstance(exports, str) else exports
        if not isinstance(exports, list) or not exports or any(e not in _EXPORTS for e in exports):
            raise ParamPlanError(f"variable {name}: export must be among {list(_EXPORTS)}")
        var = Var(
            name,
            spec["driver"],
            _range(spec.get("backing-depth", 1), f"{name}.backing-depth"),
            _range(spec.get("writers", 0), f"{name}.writers"),
            tuple(exports),
            spec.get("file"),
            spec.get("data", "none"),
        )
        if var.data not in _DATA or (var.data != "none" and var.driver == "throttle"):
            raise ParamPlanError(
                f"variable {name}: data must be among {list(_DATA)} (a filter holds none)"
            )
        if var.driver == "throttle" and var.file is None:
            raise ParamPlanError(f"variable {name}: a throttle filter needs 'file'")
        out[name] = var
    for var in out.values():
        if var.file is not None and var.file not in out:
            raise ParamPlanError(f"variable {var.name}: 'file' names no variable")
    steps = raw.get("steps")
    if not isinstance(steps, list):
        raise ParamPlanError("a parameterised plan needs a 'steps' list")
    parse_steps(steps)  # the plan format's own validation
    images = raw.get("images", [])
    if not isinstance(images, list) or not all(
        isinstance(a, list) and all(isinstance(x, str) for x in a) for a in images
    ):
        raise ParamPlanError("'images' must be a list of qemu-img argument lists")
    plan = ParamPlan(str(raw.get("description", "")), out, steps, images)
    if len(data_slots(plan)) > _MAX_SLOTS:
        raise ParamPlanError(f"at most {_MAX_SLOTS} layers may hold data")
    return plan


def data_slots(plan: ParamPlan) -> dict[str, int]:
    """Layer name -> its data slot (cluster ``slot`` of the image), for every layer of
    the space that may hold data: the patterns and offsets of :func:`build`."""
    out: dict[str, int] = {}
    for var in plan.variables.values():
        if var.data != "none":
            for layer in var.layers(var.depth[1]):
                out[layer] = len(out)
    return out


Assignment = dict[str, dict[str, Any]]


def skeleton_assignment(plan: ParamPlan) -> Assignment:
    """The maximal point of the space: deepest chains, most writers, an export wherever
    one may be (:func:`build` with ``placeholder`` makes every export read-only)."""
    out: Assignment = {
        name: {
            "depth": var.depth[1],
            "writers": var.writers[1],
            "export": "none" if var.exports == ("none",) else "read-only",
        }
        for name, var in plan.variables.items()
    }
    for name, var in plan.variables.items():
        if var.data != "none":
            out[name]["data"] = [True] * len(var.layers(var.depth[1]))
    return out


def _needs_server(plan: ParamPlan) -> bool:
    """The plan exports something without starting the NBD server itself."""
    names = [s.get("execute") for s in plan.steps]
    return "block-export-add" in names and "nbd-server-start" not in names


def build(
    plan: ParamPlan, a: Assignment, workdir: Path, sock: str, *, placeholder: bool = False
) -> tuple[list[Command], list[list[str]]]:
    """QMP commands that build the assignment's graph, and the qemu-img runs for its images.

    ``placeholder``: every export read-only (the skeleton of :mod:`txgraph.symbolic.smtplan`,
    whose permissions z3 computes per choice)."""
    cmds: list[Command] = []
    images: list[list[str]] = []
    if any(v.driver == "throttle" for v in plan.variables.values()):
        cmds.append(
            {
                "execute": "object-add",
                "arguments": {"qom-type": "throttle-group", "id": "tg0", "limits": {}},
            }
        )
    done: set[str] = set()
    slots = data_slots(plan)

    def fill(var: Var, layer: str, j: int, img: Path, fmt: str) -> None:
        if var.data != "none" and a[var.name]["data"][j]:
            k = slots[layer]
            write = f"write -q -P {0x10 + k} {k * DATA_CLUSTER} {DATA_CLUSTER}"
            images.append(["qemu-io", "-f", fmt, "-c", write, str(img)])

    def add(var: Var) -> None:
        if var.name in done:
            return
        if var.file is not None:
            add(plan.variables[var.file])
        depth = a[var.name]["depth"]
        if var.driver == "file":
            images.append(["create", "-q", "-f", "raw", str(workdir / f"{var.name}.img"), "1M"])
            fill(var, var.name, 0, workdir / f"{var.name}.img", "raw")
            cmds.append(
                _add(
                    {
                        "driver": "file",
                        "node-name": var.name,
                        "filename": str(workdir / f"{var.name}.img"),
                    }
                )
            )
        elif var.driver == "throttle":
            cmds.append(
                _add(
                    {
                        "driver": "throttle",
                        "node-name": var.name,
                        "throttle-group": "tg0",
                        "file": var.file,
                    }
                )
            )
        else:
            layers = [var.name] + [f"{var.name}-b{i}" for i in range(1, depth)]
            for i in reversed(range(depth)):
                img = workdir / f"{layers[i]}.qcow2"
                below = layers[i + 1] if i + 1 < depth else None
                create = ["create", "-q", "-f", "qcow2"]
                if below is not None:
                    create += ["-b", str(workdir / f"{below}.qcow2"), "-F", "qcow2"]
                images.append([*create, str(img), "1M"])
                fill(var, layers[i], i, img, "qcow2")
                cmds.append(
                    _add(
                        {
                            "driver": "qcow2",
                            "node-name": layers[i],
                            "file": {
                                "driver": "file",
                                "node-name": f"{layers[i]}-file",
                                "filename": str(img),
                            },
                            "backing": below,
                        }
                    )
                )
        done.add(var.name)

    for var in plan.variables.values():
        add(var)
    exports: list[Command] = []
    for var in plan.variables.values():
        ex = a[var.name]["export"]
        if ex != "none":
            exports.append(
                _export(f"{var.name}-exp", var.name, ex == "writable" and not placeholder)
            )
        for k in range(a[var.name]["writers"]):
            exports.append(_export(f"{var.name}-w{k}", var.name, not placeholder))
    if exports or _needs_server(plan):
        cmds.append(
            {
                "execute": "nbd-server-start",
                "arguments": {"addr": {"type": "unix", "data": {"path": sock}}},
            }
        )
        cmds += exports
    return cmds, images


def _add(args: dict[str, Any]) -> Command:
    return {"execute": "blockdev-add", "arguments": args}


def _export(xid: str, node: str, writable: bool) -> Command:
    return {
        "execute": "block-export-add",
        # the export name defaults to the node name: two exports of one node need their own
        "arguments": {
            "type": "nbd",
            "id": xid,
            "name": xid,
            "node-name": node,
            "writable": writable,
        },
    }


@dataclass
class Counterexample:
    assignment: Assignment
    build: list[Command]
    images: list[list[str]]
    step: int
    command: Command
    #: QEMU's answer when the step is refused, else None (accepted but unsafe)
    error: str | None
    rules: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment": self.assignment,
            "qemu-img": self.images,
            "build": self.build,
            "failing-step": self.step,
            "command": self.command,
            "error": self.error,
            "rules": self.rules,
        }


@dataclass
class SearchResult:
    max_nodes: int
    candidates: int
    invalid_starts: int
    seconds: float
    counterexample: Counterexample | None = None
    passed: list[Assignment] = field(default_factory=list)
    #: ``z3`` (:mod:`txgraph.symbolic.search`) or ``enumeration`` (:func:`txgraph.symbolic.space.enumerate_search`)
    method: str = "enumeration"
    #: z3 path: what z3 predicted (assignment, step, rules), None for unsat
    prediction: dict[str, Any] | None = None
    #: z3 path: the engine's run of the predicted graph agrees with the prediction
    agrees: bool | None = None
    #: z3 path: the size of the encoding (states, rule instances, edges) and why not, if not
    encoding: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "method": self.method,
            "max-nodes": self.max_nodes,
            "candidates": self.candidates,
            "invalid-starts": self.invalid_starts,
            "seconds": round(self.seconds, 3),
            "counterexample": self.counterexample.to_dict() if self.counterexample else None,
        }
        if self.method == "z3":
            out.update(
                {
                    "prediction": self.prediction,
                    "engine-agrees": self.agrees,
                    "encoding": self.encoding,
                }
            )
        return out


def run_plan(
    plan: ParamPlan, cmds: list[Command], policy: str
) -> tuple[int, Command, str | None, list[str]] | None:
    """The plan on a scratch engine built by ``cmds``: (step, command, QEMU's error or
    None, rules) of the first step that fails, or None. Raises StateError if the engine
    does not build the start."""
    engine, _ = scratch_engine(cmds)
    session = engine.context.session
    for i, step in enumerate(parse_steps(plan.steps)):
        res = run_step(engine, session, i, step, policy)
        if not res.ok:
            rules = sorted({v["rule"] for v in (res.verdict or {}).get("violations", [])})
            err = res.reply.get("error", {}).get("desc") if not res.accepted else None
            said = res.reply.get("error", {}).get("__io.txgraph_explanation", {})
            if not rules and isinstance(said, dict) and isinstance(said.get("rule"), str):
                rules = [said["rule"]]  # QEMU's own check refused it (e.g. P4-read-only)
            return i, step.message(), err, rules
    return None


def rule_numbers(rules: list[str]) -> list[str]:
    """``P4-read-only-writer`` -> ``P4``: the checker's rule and QEMU's check of the same
    rule (``P4-read-only``, named by the engine's refusal) compare equal."""
    return sorted({r.split("-", 1)[0] for r in rules})


def tool_argv(run: list[str]) -> list[str]:
    """An image run as a command line: qemu-img's arguments, or a whole ``qemu-io`` line
    (the data a layer holds)."""
    return run if run[:1] == ["qemu-io"] else ["qemu-img", *run]


def make_images(runs: list[list[str]]) -> None:
    for argv in runs:
        subprocess.run(tool_argv(argv), check=True, capture_output=True, timeout=60)


def confirm_on_qsd(plan: ParamPlan, cex: Counterexample, execute: Any) -> tuple[bool, str]:
    """Replay ``cex`` through ``execute`` (a QSD peer's): the build and the steps before the
    failing one must succeed, the failing one must fail with the predicted text (or, for an
    unsafe step, succeed as predicted). Returns (prediction = observation, what QSD said)."""
    for cmd in cex.build:
        reply = execute(cmd)
        if "return" not in reply:
            return False, f"build: {json.dumps(cmd)}: {reply}"
    for i, step in enumerate(plan.steps[: cex.step + 1]):
        reply = execute(step)
        if i < cex.step:
            if "return" not in reply:
                return False, f"step {i}: {reply}"
            continue
        if cex.error is None:
            return "return" in reply, json.dumps(reply)
        desc = reply.get("error", {}).get("desc", "")
        return desc == cex.error, str(desc or reply)
    return False, "no failing step"
