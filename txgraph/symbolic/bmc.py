"""Plan synthesis by bounded model checking in z3 (the BFS of :mod:`synth` is its cross-check).

The problem for ``k`` steps, in one private z3 context:

- the *union graph*: every vertex and edge of the start and of the target (the engine's
  graphs of both, so roles and export requests are the engine's), each with a presence
  literal per time step ``0..k``; at ``0`` exactly the start's;
- the candidate commands (:mod:`txgraph.symbolic.bmccands`: blockdev-add, -del, -reopen,
  blockdev-snapshot, block-export-add/-del, derived from the difference), with their
  effect on presence and their precondition; a snapshot *moves* the parents of its base
  (an edge to the overlay exists afterwards iff the one to the base did). One command per
  step, each at most once; frame axioms keep everything else;
- the flags (read-only, writable, force-share) of every node whose flags differ between
  start and target: a literal per step, "it has the target's flags", set by its reopen
  (and by its parent's, for a node inheriting its options) or by a snapshot onto it;
- the permission rules at every step: the checker's own P1/P3/P4 instances on the union
  graph, encoded by its own encoder (:class:`txgraph.symbolic.graphsmt.SymbolicEncoder`)
  with a prefix per step, guarded by presence, absent edges ``0``/``all``; an instance
  whose formula reads a flipping node's flags (its P4, the P1 of its child edges) in two
  copies, the start's flags and the target's, each under its flag literal;
- the goal: at ``k`` the presence is the target's, and every flipping node has the
  target's flags.

``k`` grows from 0; the first sat model is a shortest sequence. Unsat at the bound is
the impossibility answer, and the unsat core over named assumptions (each goal link,
each command's precondition, "an export both sides have is kept", "the permission rules",
each node's target flags) names the constraint that blocks it. Every decoded sequence is
then run on the engine under the caller's policy (and on QSD in the tests).

Not encoded (:class:`NotEncodable`, the BFS answers alone): a node whose driver differs,
target flags that change which rule instances exist; and the structural rules (G2-G5,
N1/N2: every command's precondition keeps them, and the engine's run confirms). A reopen
is modelled as re-inheriting the options of the nodes that inherit from it
(``bdrv_reopen_queue_child``), a snapshot as leaving its base and what inherits from it
with the target's flags; where that model is wrong the engine's run of the sequence does
not reach the target and the caller falls back to the BFS, saying so.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import z3

from txgraph.checker.encode import esc
from txgraph.checker.instances import Instance, enumerate_instances
from txgraph.checker.region import Region
from txgraph.model.graph import BlockGraph
from txgraph.plan.verify import scratch_engine
from txgraph.symbolic.bmccands import Cand, candidates, flag_variants, flipping
from txgraph.symbolic.bmccands import refs_of as _refs_of
from txgraph.symbolic.graphsmt import SymbolicEncoder, edge_symbols, parse
from txgraph.symbolic.smtplan import RLIMIT

__all__ = ["NotEncodable", "BmcResult", "bmc_synthesize"]

Command = dict[str, Any]
Ref = tuple[str, str, str]
_RULES = frozenset({"P1-edge-perm-formula", "P3-perm-conflict", "P4-read-only-writer"})
_EXPORT_BB = "bb:export:"


class NotEncodable(ValueError):
    """The difference needs something the encoding does not model (see the module doc)."""


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


class _Tagged(SymbolicEncoder):
    """The encoder of the target-flag copies: same edge variables, literals tagged ``T:``."""

    def track(self, key: str, formula: str) -> None:
        super().track("T:" + key, formula)


@dataclass
class _Problem:
    union: BlockGraph
    #: the union graph with the target's flags on the flipping nodes
    flipped: BlockGraph
    #: (instance on the union graph, the flipping nodes its formula reads): with the
    #: start's flags; with the target's flags, the instances of the same key that differ
    insts: list[tuple[Instance, frozenset[str]]]
    flipped_insts: list[Instance]
    refs: list[Ref]
    verts: list[str]
    cands: list[Cand]
    flips: list[str]
    start: tuple[set[Ref], set[str]]
    target: tuple[set[Ref], set[str]]


def _depends(a: Instance, b: Instance, u: BlockGraph, flips: set[str]) -> frozenset[str]:
    """The flipping nodes whose flags ``a`` (start flags) and ``b`` (target's) differ on."""
    if a.kind == "p1node":
        ref = a.data[0]
        deps = {ref[0]} if a.data[1] != b.data[1] else set()
        return frozenset(deps | ({ref[2]} if a.data[4] != b.data[4] else set()))
    if a.kind == "p4" and a.data[0] in flips:
        return frozenset({a.data[0]})
    return frozenset()


def _problem(start_cmds: list[Command], target_cmds: list[Command]) -> _Problem:
    start, target = _graph(start_cmds), _graph(target_cmds)
    for n in sorted(set(start.nodes) & set(target.nodes)):
        if start.nodes[n].driver != target.nodes[n].driver:
            raise NotEncodable(f"node '{n}' changes its driver")
    flips = flipping(start, target)
    u = _union(start, target)
    ut = flag_variants(u, target, flips)
    plain = list(enumerate_instances(Region.of(u, None), _RULES, None))
    other = {i.key: i for i in enumerate_instances(Region.of(ut, None), _RULES, None)}
    if {i.key for i in plain} != set(other):
        raise NotEncodable("the target's flags change which permission rules apply")
    insts = [(i, _depends(i, other[i.key], u, flips)) for i in plain]
    return _Problem(
        u,
        ut,
        insts,
        [other[i.key] for i, d in insts if d],
        sorted(_refs_of(u)),
        sorted(set(u.nodes) | set(u.backends)),
        candidates(start, target, target_cmds, u),
        sorted(flips),
        (_refs_of(start), set(start.nodes) | set(start.backends)),
        (_refs_of(target), set(target.nodes) | set(target.backends)),
    )


def bmc_synthesize(
    start_cmds: list[Command], target_cmds: list[Command], *, max_steps: int = 5
) -> BmcResult:
    """The shortest command sequence z3 finds within ``max_steps``, or the blocking core."""
    pb = _problem(start_cmds, target_cmds)
    n = len(pb.cands)
    last: list[str] = []
    # each command at most once: a longer sequence than the candidates is no sequence
    for k in range(min(max_steps, n) + 1):
        res = _solve(pb, k)
        if isinstance(res, list) and res and isinstance(res[0], dict):
            return BmcResult(True, res, k, [], n)
        last = [str(x) for x in res]
    return BmcResult(False, [], min(max_steps, n), last, n)


def _any(xs: list[Any], ctx: z3.Context) -> Any:
    return z3.Or([*xs, z3.BoolVal(False, ctx)])


def _solve(pb: _Problem, k: int) -> list[Any]:
    """A decoded sequence of ``k`` commands, or the names of an unsat core."""
    refs, verts, cands, start, target = pb.refs, pb.verts, pb.cands, pb.start, pb.target
    ctx = z3.Context()
    s = z3.Solver(ctx=ctx)
    s.set("random_seed", 0)
    s.set("rlimit", RLIMIT)  # unknown is an error, never "impossible"
    tt = z3.BoolVal(True, ctx)
    ev = [{r: z3.Bool(f"t{t}:e:{r}", ctx) for r in refs} for t in range(k + 1)]
    vv = [{v: z3.Bool(f"t{t}:v:{v}", ctx) for v in verts} for t in range(k + 1)]
    #: "the node has the target's flags" at step t
    fl = [{n: z3.Bool(f"t{t}:f:{n}", ctx) for n in pb.flips} for t in range(k + 1)]
    pick = [[z3.Bool(f"t{t}:do:{c.label}", ctx) for c in cands] for t in range(k)]
    named: dict[str, Any] = {}

    def track(label: str) -> Any:
        return named.setdefault(label, z3.Bool(f"A:{label}", ctx))

    s.add(
        *(ev[0][r] == (r in start[0]) for r in refs), *(vv[0][v] == (v in start[1]) for v in verts)
    )
    s.add(*(z3.Not(f) for f in fl[0].values()))
    for t in range(k):
        s.add(z3.PbEq([(p, 1) for p in pick[t]], 1) if cands else z3.BoolVal(False, ctx))
        for i, c in enumerate(cands):
            p = pick[t][i]
            s.add(z3.Implies(p, z3.Not(_any([pick[x][i] for x in range(t)], ctx))))
            pre = [vv[t][n] for n in sorted(c.needs) if n in vv[t]]
            pre += [z3.Not(vv[t][n]) for n in sorted(c.adds)]
            pre += [z3.Not(ev[t][r]) for r in refs if r[2] in c.unused and r[0] not in c.removes]
            pre += [z3.Not(ev[t][r]) for r in sorted(c.absent)]
            s.add(z3.Implies(z3.And(p, track(f"precondition of {c.label}")), z3.And(tt, *pre)))
        for r in refs:
            on = [pick[t][i] for i, c in enumerate(cands) if r in c.on]
            on += [
                z3.And(pick[t][i], ev[t][a])
                for i, c in enumerate(cands)
                for a, b in c.moves
                if b == r
            ]
            off = [pick[t][i] for i, c in enumerate(cands) if r in c.off and r not in c.on]
            off += [pick[t][i] for i, c in enumerate(cands) if any(a == r for a, _b in c.moves)]
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
        for n in pb.flips:
            sets = [pick[t][i] for i, c in enumerate(cands) if n in c.flips]
            s.add(fl[t + 1][n] == z3.Or(fl[t][n], _any(sets, ctx)))
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
    _permissions(
        pb, s, ctx, k, ev, vv, fl, track("the permission rules (P1, P3, P4) at every step")
    )
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
    for n in pb.flips:
        ro = "read-only" if pb.flipped.nodes[n].read_only else "read-write"
        s.add(z3.Implies(track(f"the target has node '{n}' {ro}"), fl[k][n]))
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


def _permissions(
    pb: _Problem,
    s: z3.Solver,
    ctx: z3.Context,
    k: int,
    ev: list[dict[Ref, Any]],
    vv: list[dict[str, Any]],
    fl: list[dict[str, Any]],
    perm_ok: Any,
) -> None:
    """The checker's P1/P3/P4 instances at every step, each formula reading a flipping
    node's flags in two copies, selected by its flag literal. An instance reading two
    flipping nodes has no copy for mixed flags: those nodes flip together (a restriction
    of the search, never a false sequence; the BFS answers "impossible" with it)."""
    declared: set[str] = set()
    encs: list[SymbolicEncoder] = []
    dep = [(i, d) for i, d in pb.insts if d]
    for t in range(k + 1):
        enc = SymbolicEncoder(pb.union, declared, f"t{t}:")
        enc.encode(i for i, _d in pb.insts)
        encs.append(enc)
        if dep:
            tagged = _Tagged(pb.flipped, declared, f"t{t}:")
            tagged.encode(pb.flipped_insts)
            encs.append(tagged)
        for _i, d in dep:
            first, *rest = sorted(d)
            s.add(*(fl[t][first] == fl[t][n] for n in rest))
    s.add(*parse(ctx, encs))
    for t in range(k + 1):
        for r in pb.refs:
            ps, ss = edge_symbols(f"t{t}:", r)
            if any(ps in e.used for e in encs):
                pv, sv = z3.BitVec(ps, 4, ctx), z3.BitVec(ss, 4, ctx)
                s.add(z3.Implies(z3.Not(ev[t][r]), z3.And(pv == 0, sv == 0xF)))
        for inst, d in pb.insts:
            variants = [(z3.Bool(f"t{t}:{esc(inst.key)}", ctx), [z3.Not(fl[t][n]) for n in d])]
            if d:
                variants.append(
                    (z3.Bool(f"t{t}:{esc('T:' + inst.key)}", ctx), [fl[t][n] for n in d])
                )
            for lit, when in variants:
                on = z3.And(z3.BoolVal(True, ctx), *when)
                data = inst.data
                if inst.kind in ("p1node", "p1root"):
                    s.add(z3.Implies(z3.And(ev[t][data[0]], on), lit))
                elif inst.kind == "p3":
                    s.add(z3.Implies(z3.And(perm_ok, ev[t][data[1]], ev[t][data[2]], on), lit))
                elif inst.kind == "p4":
                    s.add(z3.Implies(z3.And(perm_ok, vv[t][data[0]], on), lit))
