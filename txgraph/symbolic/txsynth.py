"""Plan synthesis as one atomic txgraph transaction (``txgraph plan --from --to --transaction``).

Where :mod:`txgraph.symbolic.synth` needs every intermediate state accepted by QEMU 7.2,
one ``x-txgraph-transaction`` is only judged at its end, as QEMU judges a
``transaction`` (``tran_commit`` after every action staged): the intermediate states
need not be acceptable, so changes QEMU 7.2 cannot order — a filter between an export
and its node, two parents moved at once — become possible.

Actions, derived once from the difference between start and target (the intermediate
states are not observed, so there is nothing to derive them from):

- mandatory: ``x-txgraph-blockdev-add`` of every node the target adds (flat, children
  by name, children first), ``x-txgraph-blockdev-del`` of every node it drops;
- optional: ``x-txgraph-blockdev-reopen`` of a node whose children or options differ
  (the target's definition, ``backing`` stated), ``x-txgraph-replace`` of an export
  whose node differs (``parent-type: export``, the v9 ``blockdev-replace`` proposal).

The search tries the mandatory actions with every subset of the optional ones, fewest
actions first, each ordering of the optional ones between the adds and the deletes,
each candidate run as one ``x-txgraph-transaction`` on a scratch engine from the start
(:func:`txgraph.plan.verify.run_step`, so under ``safe`` the checker and V1 judge the
end state). The first that ends in the target state
(:func:`~txgraph.symbolic.graphstate.graph_state`) is minimal in actions. Exports the
target adds or drops are commands of their own around it (txgraph has no transaction
action for exports).
"""

from __future__ import annotations

import itertools
from typing import Any

from txgraph.plan.format import parse_steps
from txgraph.plan.verify import run_step, scratch_engine
from txgraph.symbolic.graphstate import (
    GraphState,
    export_definitions,
    graph_state,
    node_definitions,
)
from txgraph.symbolic.synth import SynthResult, _refs, target_definition

__all__ = ["synthesize_transaction"]

Command = dict[str, Any]


def _action(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "data": data}


def _adds_in_order(names: list[str], defs: dict[str, dict[str, Any]]) -> list[str]:
    """Children before parents."""
    out: list[str] = []

    def visit(n: str) -> None:
        if n in out or n not in names:
            return
        for r in _refs(defs[n]):
            visit(r)
        out.append(n)

    for n in sorted(names):
        visit(n)
    return out


def _kids(state: GraphState) -> dict[str, dict[str, str]]:
    kids: dict[str, dict[str, str]] = {}
    for p, k, c, _pe, _sh in state[1]:
        kids.setdefault(p, {})[k] = c
    return kids


def synthesize_transaction(
    start: list[Command], target: list[Command], *, max_actions: int = 6, policy: str = "safe"
) -> SynthResult:
    """The smallest ``x-txgraph-transaction`` (plus export commands) from ``start`` to
    ``target``, or why none exists within ``max_actions`` actions."""
    engine, _ = scratch_engine(start)
    first = graph_state(engine.execute)
    engine, _ = scratch_engine(target)
    want = graph_state(engine.execute)
    defs = node_definitions(target)
    have = {n[0]: n for n in first[0]}
    tnodes = {n[0]: n for n in want[0]}
    kids, tkids = _kids(first), _kids(want)
    adds = _adds_in_order([n for n in defs if n not in have], defs)
    mandatory_head = [_action("x-txgraph-blockdev-add", defs[n]) for n in adds]
    gone = sorted(n for n in have if n not in tnodes)
    parents = {c: {p for p, _k, cc, _pe, _sh in first[1] if cc == c} for c in gone}
    # A child opened with its parent goes with it (its last reference); one added on its
    # own stays until deleted. The state does not tell which, so both tails are tried.
    tops = [n for n in gone if not parents[n] or not parents[n] <= set(gone)]
    tails = [[_action("x-txgraph-blockdev-del", {"node-name": n}) for n in tops]]
    if tops != gone:
        tails.append([_action("x-txgraph-blockdev-del", {"node-name": n}) for n in gone])
    optional = [
        _action("x-txgraph-blockdev-reopen", {"options": [target_definition(defs, n, tkids)]})
        for n in sorted(set(have) & set(defs))
        if kids.get(n, {}) != tkids.get(n, {}) or have[n] != tnodes.get(n)
    ]
    exports, texports = dict(first[2]), dict(want[2])
    optional += [
        _action("x-txgraph-replace", {"parent-type": "export", "export-id": x, "new-child": n})
        for x, n in sorted(texports.items())
        if x in exports and exports[x] != n
    ]
    xdefs = export_definitions(target)
    before = [
        {"execute": "block-export-del", "arguments": {"id": x}}
        for x in exports
        if x not in texports
    ]
    after = [
        {"execute": "block-export-add", "arguments": xdefs[x]} for x in texports if x not in exports
    ]
    refusals: dict[str, str] = {}
    tried = 0
    fixed = len(mandatory_head) + len(tails[0])
    for k in range(len(optional) + 1):
        if fixed + k > max_actions:
            break
        for subset, tail in itertools.product(itertools.combinations(optional, k), tails):
            for order in itertools.permutations(subset):
                actions = [*mandatory_head, *order, *tail]
                if not actions:
                    continue
                tried += 1
                tx = {"execute": "x-txgraph-transaction", "arguments": {"actions": actions}}
                steps = [*before, tx, *after]
                ok, why = _run(start, steps, policy)
                if not ok:
                    refusals[" + ".join(a["type"] for a in actions)] = why
                    continue
                engine, _ = scratch_engine([*start, *steps])
                if graph_state(engine.execute) == want:
                    return SynthResult(True, steps, tried, max_actions)
    blocked = [f"{k}: {v}" for k, v in sorted(refusals.items())] or [
        "no candidate transaction reaches the target's edges and permissions"
    ]
    return SynthResult(
        False, [], tried, max_actions, blocked, exhausted=fixed + len(optional) <= max_actions
    )


def _run(start: list[Command], steps: list[Command], policy: str) -> tuple[bool, str]:
    engine, _ = scratch_engine(start)
    session = engine.context.session
    for i, step in enumerate(parse_steps(steps)):
        res = run_step(engine, session, i, step, policy)
        if not res.ok:
            err = res.reply.get("error", {}).get("desc")
            if err is None and res.verdict:
                err = "; ".join(v["sentence"] for v in res.verdict.get("violations", []))
            return False, str(err)
    return True, ""
