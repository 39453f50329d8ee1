"""Plan synthesis: the shortest sequence of QEMU 7.2 commands from one graph to another.

``synthesize(start, target)`` runs a breadth-first search whose transition function is
the real engine: each candidate command runs on a scratch Engine (the ``qemu`` policy
answers as qemu-storage-daemon 7.2 would, :func:`txgraph.plan.verify.run_step`) holding
the start state plus the path so far, and is kept only if it is accepted and, under
``safe``, the checker agrees (S1/S2 data-loss rules, every QEMU invariant on the whole
graph). States are :func:`~txgraph.symbolic.graphstate.graph_state` values, so a state
reached twice is expanded once; breadth first makes the first path found minimal in
steps.

Candidates are only QEMU 7.2 commands, derived from the difference to the target:
``blockdev-add`` of a missing node (the target's own nested command, or one node with
its children by name), ``blockdev-del`` of a node the target lacks, ``blockdev-reopen``
of a node whose children or options differ (the target's definition, with its
``backing`` stated), ``blockdev-snapshot`` where the target has an overlay on a node,
``block-export-add``/``-del`` for exports only one side has. One invariant is the
search's own: an export present in the start and in the target is never deleted
(block-export-del ends the guest's connection) — QEMU 7.2 has no command that moves
an export to another node, which is what makes inserting a filter between an export
and its node impossible.

When the search exhausts every state within the bound without reaching the target it
reports which target links no reachable state had, and why: which command could make
each and what the engine answered when it was tried.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from txgraph.model.drivers import driver_spec
from txgraph.plan.format import parse_steps
from txgraph.plan.verify import run_step, scratch_engine
from txgraph.qmp.engine import Engine
from txgraph.symbolic.graphstate import (
    GraphState,
    export_definitions,
    graph_state,
    node_definitions,
)

__all__ = ["SynthResult", "synthesize", "target_definition", "reaches"]

Command = dict[str, Any]


@dataclass
class SynthResult:
    found: bool
    steps: list[Command]
    explored: int
    max_steps: int
    blocked: list[str] = field(default_factory=list)
    #: the search ran out of states before the bound: no sequence of any length exists
    #: from these candidate commands
    exhausted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "steps": self.steps,
            "states-explored": self.explored,
            "max-steps": self.max_steps,
            "blocked-by": self.blocked,
            "exhausted": self.exhausted,
        }


class _Search:
    def __init__(self, start: list[Command], target: list[Command], policy: str) -> None:
        self.start = start
        self.policy = policy
        self.defs = node_definitions(target)
        #: the target's own nested blockdev-add commands, with the names they create
        self.nested = [c for c in target if c.get("execute") == "blockdev-add"]
        self.subtree = {id(c): set(node_definitions([c])) for c in self.nested}
        self.exports = export_definitions(target)
        self.start_exports = set(export_definitions(start))
        engine, _ = scratch_engine(target)
        self.target = graph_state(engine.execute)
        self.target_nodes = {n[0] for n in self.target[0]}
        #: (parent, child name, child) links of the target and of every state reached
        self.target_links = {(p, k, c) for p, k, c, _pe, _sh in self.target[1]}
        self.target_links |= {(f"export {x}", "root", n) for x, n in self.target[2]}
        self.seen_links: set[tuple[str, str, str]] = set()
        #: refusals of candidates: command label -> QEMU's answer
        self.refusals: dict[str, str] = {}

    def replay(self, path: list[Command]) -> Engine | None:
        """A scratch engine in the state after ``path`` (None if a step is refused)."""
        engine, _ = scratch_engine(self.start)
        for i, cmd in enumerate(path):
            if not self.step(engine, i, cmd)[0]:
                return None
        return engine

    def step(self, engine: Engine, i: int, cmd: Command) -> tuple[bool, str]:
        session = engine.context.session
        result = run_step(engine, session, i, parse_steps([cmd])[0], self.policy)
        if result.ok:
            return True, ""
        err = result.reply.get("error", {}).get("desc")
        if err is None and result.verdict:
            err = "; ".join(v["sentence"] for v in result.verdict.get("violations", []))
        return False, str(err)

    def note(self, state: GraphState) -> None:
        self.seen_links |= {(p, k, c) for p, k, c, _pe, _sh in state[1]}
        self.seen_links |= {(f"export {x}", "root", n) for x, n in state[2]}

    def candidates(self, state: GraphState) -> Iterator[Command]:
        nodes = {n[0]: n for n in state[0]}
        kids: dict[str, dict[str, str]] = {}
        for p, k, c, _pe, _sh in state[1]:
            kids.setdefault(p, {})[k] = c
        tkids: dict[str, dict[str, str]] = {}
        for p, k, c, _pe, _sh in self.target[1]:
            tkids.setdefault(p, {})[k] = c
        tnodes = {n[0]: n for n in self.target[0]}
        for name, d in self.defs.items():
            if name in nodes:
                continue
            if all(r in nodes for r in _refs(d)):
                yield {"execute": "blockdev-add", "arguments": d}
            if isinstance(d.get("backing"), str) and all(
                r in nodes for k, r in d.items() if k != "backing" and r in _refs(d)
            ):
                # an overlay for blockdev-snapshot is added without its backing
                yield {"execute": "blockdev-add", "arguments": {**d, "backing": None}}
        for cmd in self.nested:
            if not self.subtree[id(cmd)] & set(nodes):
                yield cmd
                if isinstance(cmd["arguments"].get("backing"), str):
                    yield {**cmd, "arguments": {**cmd["arguments"], "backing": None}}
        for name in sorted(nodes):
            if name not in self.target_nodes:
                yield {"execute": "blockdev-del", "arguments": {"node-name": name}}
        for name in sorted(set(nodes) & set(self.defs)):
            if kids.get(name, {}) != tkids.get(name, {}) or nodes[name] != tnodes.get(name):
                opts = target_definition(self.defs, name, tkids)
                if all(r in nodes for r in _refs(opts)):
                    yield {"execute": "blockdev-reopen", "arguments": {"options": [opts]}}
        for overlay, tk in tkids.items():
            base = tk.get("backing")
            if (
                base
                and overlay in nodes
                and base in nodes
                and "backing" not in kids.get(overlay, {})
            ):
                yield {
                    "execute": "blockdev-snapshot",
                    "arguments": {"node": base, "overlay": overlay},
                }
        exports = dict(state[2])
        for xid, args in self.exports.items():
            if xid not in exports and args.get("node-name") in nodes:
                yield {"execute": "block-export-add", "arguments": args}
        for xid in sorted(exports):
            if xid not in self.exports:
                yield {"execute": "block-export-del", "arguments": {"id": xid}}

    def run(self, max_steps: int) -> SynthResult:
        engine = self.replay([])
        assert engine is not None
        first = graph_state(engine.execute)
        self.note(first)
        seen = {first}
        frontier: list[list[Command]] = [[]]
        explored = 1
        if first == self.target:
            return SynthResult(True, [], explored, max_steps)
        for _depth in range(max_steps):
            nxt: list[list[Command]] = []
            for path in frontier:
                base = self.replay(path)
                assert base is not None
                for cmd in self.candidates(graph_state(base.execute)):
                    engine = self.replay(path)
                    assert engine is not None
                    ok, why = self.step(engine, len(path), copy.deepcopy(cmd))
                    if not ok:
                        self.refusals[_label(cmd)] = why
                        continue
                    state = graph_state(engine.execute)
                    self.note(state)
                    if state in seen:
                        continue
                    seen.add(state)
                    explored += 1
                    if state == self.target:
                        return SynthResult(True, [*path, cmd], explored, max_steps)
                    nxt.append([*path, cmd])
            frontier = nxt
            if not frontier:
                return SynthResult(False, [], explored, max_steps, self.why_blocked(), True)
        return SynthResult(False, [], explored, max_steps, self.why_blocked())

    def why_blocked(self) -> list[str]:
        out = []
        for parent, name, child in sorted(self.target_links - self.seen_links):
            if parent.startswith("export "):
                xid = parent.removeprefix("export ")
                was = next((n for x, n in self._start_exports() if x == xid), None)
                out.append(
                    f"{parent} must use node '{child}'"
                    + (f" instead of '{was}'" if was else "")
                    + ": QEMU 7.2 has no command that moves a block export to another node, and "
                    "block-export-del would end the export the guest uses"
                )
                continue
            tried = [f"{k}: {v}" for k, v in sorted(self.refusals.items()) if f"'{parent}'" in k]
            out.append(
                f"no reachable state links '{parent}' to '{child}' as '{name}'"
                + (f" ({'; '.join(tried)})" if tried else "")
            )
        return out

    def _start_exports(self) -> list[tuple[str, str]]:
        engine = self.replay([])
        assert engine is not None
        return list(graph_state(engine.execute)[2])


def target_definition(
    defs: dict[str, dict[str, Any]], name: str, tkids: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The target's flat definition of ``name`` for ``blockdev-reopen``: with ``backing``
    stated (QEMU 7.2 refuses a reopen that leaves it out on a node with a backing)."""
    opts = dict(defs[name])
    spec = driver_spec(str(opts.get("driver")))
    if spec is not None and spec.supports_backing:
        opts.setdefault("backing", tkids.get(name, {}).get("backing"))
    return opts


def _refs(d: dict[str, Any]) -> list[str]:
    """The nodes a flat definition names as children."""
    return [v for k, v in d.items() if k in _CHILD_KEYS and isinstance(v, str)]


_CHILD_KEYS = ("file", "backing", "data-file", "image")


def _label(cmd: Command) -> str:
    args = cmd.get("arguments", {})
    if cmd["execute"] == "blockdev-reopen":
        return f"blockdev-reopen '{args['options'][0].get('node-name')}'"
    subject = args.get("node-name") or args.get("overlay") or args.get("id")
    return f"{cmd['execute']} '{subject}'"


def reaches(start: list[Command], steps: list[Command], target: list[Command], policy: str) -> bool:
    """``steps`` run from ``start`` on a scratch engine are accepted under ``policy`` one by
    one and end in the target's state: how a sequence z3 found is confirmed."""
    search = _Search(start, target, policy)
    engine = search.replay(steps)
    return engine is not None and graph_state(engine.execute) == search.target


def synthesize(
    start: list[Command], target: list[Command], *, max_steps: int = 5, policy: str = "safe"
) -> SynthResult:
    """The shortest accepted command sequence from ``start`` to ``target`` (both lists of
    QMP commands that build the graph from nothing), or why none exists within
    ``max_steps``."""
    return _Search(start, target, policy).run(max_steps)
