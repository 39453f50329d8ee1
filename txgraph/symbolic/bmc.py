"""Plan synthesis by bounded model checking in z3 (the BFS of :mod:`synth` is its cross-check).

The problem for ``k`` steps, in one private z3 context:

- the *union graph*: every vertex and edge of the start and of the target (the engine's
  graphs of both, so roles and export requests are the engine's), each with a presence
  literal per time step ``0..k``; at ``0`` exactly the start's;
- the candidate commands, with their effect on presence and their precondition, derived
  from the difference (as the BFS's): ``blockdev-add`` of a target node (flat, or the
  target's nested command for a whole subtree; the nodes must be absent, the children
  they name present), ``blockdev-del`` of a node the target lacks (no present parent;
  the children it was opened with and the target lacks go with it), ``blockdev-reopen``
  of a node whose children differ (its out-edges become the target's; the new children
  present), ``block-export-add``/``-del`` of an export only one side has (an export both
  sides have is never deleted: that ends the guest's connection). One command per step,
  each at most once; frame axioms keep everything else;
- the permission rules at every step: the checker's own P1/P3/P4 instances on the union
  graph, encoded by its own encoder (:class:`txgraph.symbolic.graphsmt.SymbolicEncoder`)
  with a prefix per step, guarded by presence, absent edges ``0``/``all``;
- the goal: at ``k`` the presence is the target's.

``k`` grows from 0; the first sat model is a shortest sequence. Unsat at the bound is
the impossibility answer, and the unsat core over named assumptions (each goal link,
each command's precondition, "an export both sides have is kept", "the permission rules")
names the constraint that blocks it. Every decoded sequence is then run on the engine
under the caller's policy (and on QSD in the tests).

Not encoded (:class:`NotEncodable`, the BFS answers alone): a node whose flags differ
between start and target (``blockdev-snapshot`` reopens its base read-only; a reopen
that changes read-only), so no snapshot, and the structural rules (G2-G5, N1/N2: every
command's precondition keeps them, and the engine's run confirms).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import z3

from txgraph.checker.encode import esc
from txgraph.checker.instances import Instance, enumerate_instances
from txgraph.checker.region import Region
from txgraph.model.graph import BlockGraph
from txgraph.plan.verify import scratch_engine
from txgraph.symbolic.graphsmt import SymbolicEncoder, edge_symbols, parse
from txgraph.symbolic.graphstate import export_definitions, node_definitions
from txgraph.symbolic.smtplan import RLIMIT
from txgraph.symbolic.synth import _refs, target_definition

__all__ = ["NotEncodable", "BmcResult", "bmc_synthesize"]

Command = dict[str, Any]
Ref = tuple[str, str, str]
_RULES = frozenset({"P1-edge-perm-formula", "P3-perm-conflict", "P4-read-only-writer"})
_EXPORT_BB = "bb:export:"


class NotEncodable(ValueError):
    """The difference needs something the encoding does not model (see the module doc)."""


@dataclass
class _Cand:
    label: str
    command: Command
    adds: set[str] = field(default_factory=set)  # vertices made present
    removes: set[str] = field(default_factory=set)  # vertices made absent
    on: set[Ref] = field(default_factory=set)  # edges made present
    off: set[Ref] = field(default_factory=set)  # edges made absent
    needs: set[str] = field(default_factory=set)  # vertices that must be present
    unused: set[str] = field(default_factory=set)  # vertices that must have no present parent


@dataclass
class BmcResult:
    found: bool
    steps: list[Command]
    bound: int
    blocked: list[str]
    candidates: int


def _graph(cmds: list[Command]) -> BlockGraph:
    engine, _ = scratch_engine(cmds)
    graph: BlockGraph = engine.context.session.graph
    return graph


def _refs_of(g: BlockGraph) -> set[Ref]:
    return {(p, e.name, c) for p, c, e in g.edges()}


def _union(a: BlockGraph, b: BlockGraph) -> BlockGraph:
    u = copy.deepcopy(a)
    for name, node in b.nodes.items():
        if name not in u.nodes:
            u.add_node(copy.deepcopy(node))
    for key, backend in b.backends.items():
        if key not in u.backends:
            u.add_backend(copy.deepcopy(backend))
    have = _refs_of(u)
    for p, c, e in b.edges():
        if (p, e.name, c) not in have:
            u.g.add_edge(p, c, key=e.name, obj=copy.deepcopy(e))
    return u


def _candidates(start: BlockGraph, target: BlockGraph, tcmds: list[Command]) -> list[_Cand]:
    defs = node_definitions(tcmds)
    s_edges, t_edges = _refs_of(start), _refs_of(target)
    out: list[_Cand] = []
    for name in sorted(set(target.nodes) - set(start.nodes)):
        d = defs[name]
        out.append(
            _Cand(
                f"blockdev-add '{name}'",
                {"execute": "blockdev-add", "arguments": d},
                adds={name},
                on={r for r in t_edges if r[0] == name},
                needs=set(_refs(d)),
            )
        )
    for cmd in (c for c in tcmds if c.get("execute") == "blockdev-add"):
        sub = set(node_definitions([cmd]))
        if len(sub) > 1 and not sub & set(start.nodes):
            ext = {r for n in sub for r in _refs(defs[n])} - sub
            out.append(
                _Cand(
                    f"blockdev-add '{cmd['arguments'].get('node-name')}' (nested)",
                    cmd,
                    adds=sub,
                    on={r for r in t_edges if r[0] in sub},
                    needs=ext,
                )
            )
    gone = set(start.nodes) - set(target.nodes)
    for name in sorted(gone):
        with_it = {c for p, c, _e in start.edges() if p == name and c in gone}
        with_it = {c for c in with_it if all(p == name for p, _e in start.parents(c))}
        dropped = {name} | with_it
        out.append(
            _Cand(
                f"blockdev-del '{name}'",
                {"execute": "blockdev-del", "arguments": {"node-name": name}},
                removes=dropped,
                off={r for r in s_edges if r[0] in dropped},
                needs={name},
                unused={name},
            )
        )
    tkids: dict[str, dict[str, str]] = {}
    for p, k, c in t_edges:
        tkids.setdefault(p, {})[k] = c
    for name in sorted(set(start.nodes) & set(target.nodes)):
        was = {r for r in s_edges if r[0] == name}
        now = {r for r in t_edges if r[0] == name}
        if was != now and name in defs:
            opts = target_definition(defs, name, tkids)
            out.append(
                _Cand(
                    f"blockdev-reopen '{name}'",
                    {"execute": "blockdev-reopen", "arguments": {"options": [opts]}},
                    on=now,
                    off=was - now,
                    needs={name, *_refs(opts)},
                )
            )
    xdefs = export_definitions(tcmds)
    for key in sorted(set(target.backends) - set(start.backends)):
        xid = key.removeprefix(_EXPORT_BB)
        if key.startswith(_EXPORT_BB) and xid in xdefs:
            out.append(
                _Cand(
                    f"block-export-add '{xid}'",
                    {"execute": "block-export-add", "arguments": xdefs[xid]},
                    adds={key},
                    on={r for r in t_edges if r[0] == key},
                    needs={str(xdefs[xid]["node-name"])},
                )
            )
    for key in sorted(set(start.backends) - set(target.backends)):
        if key.startswith(_EXPORT_BB):
            xid = key.removeprefix(_EXPORT_BB)
            out.append(
                _Cand(
                    f"block-export-del '{xid}'",
                    {"execute": "block-export-del", "arguments": {"id": xid}},
                    removes={key},
                    off={r for r in s_edges if r[0] == key},
                    needs={key},
                )
            )
    return out


def _goal(r: Ref, wanted: bool, had: bool) -> str:
    """The name of the goal literal of one link, as the impossibility answer shows it."""
    if r[0].startswith(_EXPORT_BB):
        xid = r[0].removeprefix(_EXPORT_BB)
        verb = "must use" if wanted else "must no longer use"
        return (
            f"export '{xid}' {verb} node '{r[2]}': QEMU 7.2 has no command that moves a "
            "block export to another node, and block-export-del would end the export the "
            "guest uses"
        )
    state = "has" if wanted else "lacks"
    return f"the target {state} the link '{r[0]}' -> '{r[2]}' as '{r[1]}'" + (
        "" if wanted != had else " (as the start)"
    )


def _flags(g: BlockGraph, n: str) -> tuple[Any, ...]:
    node = g.nodes[n]
    return node.driver, node.read_only, node.writable, node.force_share


def bmc_synthesize(
    start_cmds: list[Command], target_cmds: list[Command], *, max_steps: int = 5
) -> BmcResult:
    """The shortest command sequence z3 finds within ``max_steps``, or the blocking core."""
    start, target = _graph(start_cmds), _graph(target_cmds)
    for n in sorted(set(start.nodes) & set(target.nodes)):
        if _flags(start, n) != _flags(target, n):
            raise NotEncodable(f"node '{n}' changes its flags (a snapshot or read-only reopen)")
    u = _union(start, target)
    cands = _candidates(start, target, target_cmds)
    insts = list(enumerate_instances(Region.of(u, None), _RULES, None))
    refs = sorted(_refs_of(u))
    verts = sorted(set(u.nodes) | set(u.backends))
    s_refs, t_refs = _refs_of(start), _refs_of(target)
    s_verts = set(start.nodes) | set(start.backends)
    t_verts = set(target.nodes) | set(target.backends)
    last: list[str] = []
    # each command at most once: a longer sequence than the candidates is no sequence
    for k in range(min(max_steps, len(cands)) + 1):
        res = _solve(u, insts, refs, verts, cands, k, (s_refs, s_verts), (t_refs, t_verts))
        if isinstance(res, list) and res and isinstance(res[0], dict):
            return BmcResult(True, res, k, [], len(cands))
        last = [str(x) for x in res]
    return BmcResult(False, [], min(max_steps, len(cands)), last, len(cands))


def _any(xs: list[Any], ctx: z3.Context) -> Any:
    return z3.Or([*xs, z3.BoolVal(False, ctx)])


def _solve(
    u: BlockGraph,
    insts: list[Instance],
    refs: list[Ref],
    verts: list[str],
    cands: list[_Cand],
    k: int,
    start: tuple[set[Ref], set[str]],
    target: tuple[set[Ref], set[str]],
) -> list[Any]:
    """A decoded sequence of ``k`` commands, or the names of an unsat core."""
    ctx = z3.Context()
    s = z3.Solver(ctx=ctx)
    s.set("random_seed", 0)
    s.set("rlimit", RLIMIT)  # unknown is an error, never "impossible"
    tt = z3.BoolVal(True, ctx)
    ev = [{r: z3.Bool(f"t{t}:e:{r}", ctx) for r in refs} for t in range(k + 1)]
    vv = [{v: z3.Bool(f"t{t}:v:{v}", ctx) for v in verts} for t in range(k + 1)]
    pick = [[z3.Bool(f"t{t}:do:{c.label}", ctx) for c in cands] for t in range(k)]
    named: dict[str, Any] = {}

    def track(label: str) -> Any:
        return named.setdefault(label, z3.Bool(f"A:{label}", ctx))

    s.add(
        *(ev[0][r] == (r in start[0]) for r in refs), *(vv[0][v] == (v in start[1]) for v in verts)
    )
    for t in range(k):
        s.add(z3.PbEq([(p, 1) for p in pick[t]], 1) if cands else z3.BoolVal(False, ctx))
        for i, c in enumerate(cands):
            p = pick[t][i]
            s.add(z3.Implies(p, z3.Not(_any([pick[x][i] for x in range(t)], ctx))))
            pre = [vv[t][n] for n in sorted(c.needs) if n in vv[t]]
            pre += [z3.Not(vv[t][n]) for n in sorted(c.adds)]
            pre += [z3.Not(ev[t][r]) for r in refs if r[2] in c.unused and r[0] not in c.removes]
            s.add(z3.Implies(z3.And(p, track(f"precondition of {c.label}")), z3.And(tt, *pre)))
        for r in refs:
            on = [pick[t][i] for i, c in enumerate(cands) if r in c.on]
            off = [pick[t][i] for i, c in enumerate(cands) if r in c.off and r not in c.on]
            s.add(
                ev[t + 1][r]
                == z3.Or(
                    _any(on, ctx),
                    z3.And(ev[t][r], z3.Not(_any(off, ctx))),
                )
            )
        for v in verts:
            on = [pick[t][i] for i, c in enumerate(cands) if v in c.adds]
            off = [pick[t][i] for i, c in enumerate(cands) if v in c.removes]
            s.add(
                vv[t + 1][v]
                == z3.Or(
                    _any(on, ctx),
                    z3.And(vv[t][v], z3.Not(_any(off, ctx))),
                )
            )
        for r in refs:  # an edge needs both ends
            s.add(z3.Implies(ev[t + 1][r], z3.And(vv[t + 1][r[0]], vv[t + 1][r[2]])))
    kept = [v for v in verts if v.startswith(_EXPORT_BB) and v in start[1] and v in target[1]]
    for v in kept:
        s.add(
            z3.Implies(
                track(
                    f"export '{v.removeprefix(_EXPORT_BB)}' is kept (deleting it ends the guest's connection)"
                ),
                z3.And(tt, *(vv[t][v] for t in range(k + 1))),
            )
        )
    perm_ok = track("the permission rules (P1, P3, P4) at every step")
    declared: set[str] = set()
    encs = []
    for t in range(k + 1):
        enc = SymbolicEncoder(u, declared, f"t{t}:")
        enc.encode(insts)
        encs.append(enc)
    s.add(*parse(ctx, encs))
    for t, enc in enumerate(encs):
        for r in refs:
            ps, ss = edge_symbols(f"t{t}:", r)
            if ps in enc.used:
                pv, sv = z3.BitVec(ps, 4, ctx), z3.BitVec(ss, 4, ctx)
                s.add(z3.Implies(z3.Not(ev[t][r]), z3.And(pv == 0, sv == 0xF)))
        for inst in insts:
            lit = z3.Bool(f"t{t}:{esc(inst.key)}", ctx)
            d = inst.data
            if inst.kind in ("p1node", "p1root"):
                s.add(z3.Implies(ev[t][d[0]], lit))
            elif inst.kind == "p3":
                s.add(z3.Implies(z3.And(perm_ok, ev[t][d[1]], ev[t][d[2]]), lit))
            elif inst.kind == "p4":
                s.add(z3.Implies(z3.And(perm_ok, vv[t][d[0]]), lit))
    for r in refs:
        s.add(
            z3.Implies(track(_goal(r, r in target[0], r in start[0])), ev[k][r] == (r in target[0]))
        )
    for v in verts:
        s.add(
            z3.Implies(
                track(f"target {'has' if v in target[1] else 'lacks'} '{v}'"),
                vv[k][v] == (v in target[1]),
            )
        )
    res = s.check(*named.values())
    if res == z3.unknown:
        raise RuntimeError(f"z3 gave up: {s.reason_unknown()}")
    if res == z3.unsat:
        core = {str(c) for c in s.unsat_core()}
        return sorted(label for label, b in named.items() if str(b) in core)
    m = s.model()
    return [
        copy.deepcopy(c.command)
        for t in range(k)
        for i, c in enumerate(cands)
        if z3.is_true(m.eval(pick[t][i], model_completion=True))
    ]
