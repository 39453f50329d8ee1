"""A parameterised plan as one z3 problem: unknown starting graph, steps as transitions, rules.

The unknown starting graph is a *maximal* graph with a presence literal on every part
the plan's constraints leave open (:mod:`txgraph.symbolic.params`):

- the z3 integers of the parameter space (per variable: backing depth, number of other
  writers, which export choice), bounded by their ranges and by ``--max-nodes``;
- each optional vertex is present under a formula over them: the ``j``-th layer of a
  qcow2 chain (and its file node) iff ``depth > j``, the export ``X-exp`` iff its choice
  is not ``none``, the writer ``X-w<k>`` iff ``writers > k``; an edge iff both ends are;
- each edge's perm and shared-perm are 4-bit z3 variables per state: a present node
  edge equals the checker's own child-permission formula of its parent's cumulative
  permissions (:func:`txgraph.checker.perm_smt.smt_child_perm` through the checker's
  ``P1`` encoding), an absent one is ``0``/``all`` (so the OR/AND of cumulative
  permissions and every pairwise rule see exactly the present subgraph), an export's
  root edge is the request of its kind (``writable``: what QEMU's NBD export asks for
  with write, measured on the engine; ``read-only``: without);
- the plan's steps are transitions: state ``i`` is the maximal graph after step ``i``,
  whose *structure* (which edges, roles, flags, where each parent ends up after a
  ``blockdev-snapshot`` or a filter insertion moved it) the real engine produced by
  running the steps once on the maximal graph with every export a harmless read-only
  placeholder (:func:`skeleton`), and whose permissions z3 computes;
- every rule instance of the checker on each state (the checker's own enumeration and
  its own SMT encoding, :class:`txgraph.symbolic.graphsmt.SymbolicEncoder`; the start
  state under ``qemu``, the steps under the plan's policy with the previous state as
  the ``before`` of S1/S2/F1) is a literal equal to its formula, guarded by the
  presence of its subjects; S1's "the cut node is used" is the OR of its parent
  edges' presence.

z3 is asked for a model of: the start state satisfies every rule, steps ``< k`` do,
step ``k`` breaks one, minimising the node count (then the parameters). The model
decodes to an assignment, which :func:`txgraph.symbolic.params.build` turns into the
QMP commands that build it; the caller confirms it on the engine and on
qemu-storage-daemon 7.2. ``unsat`` is "none up to N nodes" for everything the
encoding covers.

V1 guest view (under a policy other than ``qemu``): per step and per export root, the
set of layers its guest reads data through, before and after, as z3 terms over the
presence literals and the layers' data literals (:mod:`txgraph.symbolic.guestsmt`:
the read path is the walk in the maximal graph of each state, cut at the first
absent vertex).

What is left to the engine (the confirmation run decides them, and a disagreement is
reported, never hidden): errors that are no checker rule (an option QEMU refuses, a
missing node), G1 acyclicity (the maximal structure is acyclic, so is each present
subgraph), and V1 where data of layers overlap (:mod:`txgraph.symbolic.guestsmt`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import z3

from txgraph.checker.before import as_before
from txgraph.checker.encode import esc
from txgraph.checker.instances import Instance, enumerate_instances
from txgraph.checker.region import Region
from txgraph.checker.rules import rules_for
from txgraph.model.graph import BlockGraph
from txgraph.plan.format import parse_steps
from txgraph.plan.verify import run_step, scratch_engine
from txgraph.symbolic.graphsmt import SymbolicEncoder, edge_symbols, parse
from txgraph.symbolic.guestsmt import measured_data, view_checks
from txgraph.symbolic.params import Assignment, ParamPlan, build, make_images, skeleton_assignment
from txgraph.symbolic.space import block, data_cost, data_vars, decode, unused_data_zero

__all__ = ["Encoding", "SkeletonError", "encode", "solve", "Prediction"]

_EXPORT_BB = "bb:export:"
#: z3's budget per solve (resource units, deterministic; the 40-node section-3 space needs
#: well under 1% of it): ``unknown`` is an error, never "none"
RLIMIT = 2_000_000_000


class SkeletonError(ValueError):
    """The engine refuses a step on the maximal graph itself: its structure is unknown."""


@dataclass
class Prediction:
    """What z3 predicts for the model it found."""

    assignment: Assignment
    step: int
    rules: list[str]
    keys: list[str]


@dataclass
class Encoding:
    plan: ParamPlan
    ctx: z3.Context
    params: dict[str, tuple[Any, Any, Any]]
    #: per variable with ``data: any``: "layer j holds data"
    bits: dict[str, list[Any]]
    size: Any
    base: list[Any]
    #: per state (0 = start): the (guard, literal, instance) of each rule instance
    checks: list[list[tuple[Any, Any, Instance]]]
    states: int
    stats: dict[str, int] = field(default_factory=dict)


class _Encoder(SymbolicEncoder):
    """The symbolic encoder with S1's ``used`` flag free (its presence is a formula)."""

    def _fact(self, name: str, sort: str, value: str) -> str:
        if name.startswith("n.used:"):
            return self._decl(name, sort)
        return super()._fact(name, sort, value)


def _copy(graph: BlockGraph) -> BlockGraph:
    return copy.deepcopy(graph)


def skeleton(
    plan: ParamPlan, workdir: Path, sock: str, measured: dict[str, bool] | None = None
) -> list[BlockGraph]:
    """The engine's maximal graphs: the start and after each step (see the module doc).

    ``measured`` receives, for every node the space does not define (the plan's own),
    whether its image holds data (:func:`txgraph.symbolic.guestsmt.measured_data`)."""
    cmds, images = build(plan, skeleton_assignment(plan), workdir, sock, placeholder=True)
    make_images(plan.images + images)
    engine, _ = scratch_engine(cmds)
    session = engine.context.session
    space = set(session.graph.nodes)
    out = [_copy(session.graph)]
    for i, step in enumerate(parse_steps(plan.steps)):
        res = run_step(engine, session, i, step, "qemu")
        if not res.accepted:
            desc = res.reply.get("error", {}).get("desc")
            raise SkeletonError(f"step {i} is refused on the maximal graph: {desc}")
        out.append(_copy(session.graph))
        if measured is not None:
            for name in set(session.graph.nodes) - space - set(measured):
                measured[name] = measured_data(session.runtime, name)
    return out


def export_requests() -> dict[bool, tuple[int, int]]:
    """(perm, shared) of an NBD export's BlockBackend, writable or not, as the engine asks."""
    engine, _ = scratch_engine(
        [
            {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n"}},
            {
                "execute": "nbd-server-start",
                "arguments": {"addr": {"type": "unix", "data": {"path": "/nonexistent.sock"}}},
            },
            *(
                {
                    "execute": "block-export-add",
                    "arguments": {
                        "type": "nbd",
                        "id": f"e{int(w)}",
                        "name": f"e{int(w)}",
                        "node-name": "n",
                        "writable": w,
                    },
                }
                for w in (False, True)
            ),
        ]
    )
    backends = engine.context.session.graph.backends
    return {
        w: (
            int(backends[f"{_EXPORT_BB}e{int(w)}"].perm),
            int(backends[f"{_EXPORT_BB}e{int(w)}"].shared),
        )
        for w in (False, True)
    }


def _params(
    plan: ParamPlan, ctx: z3.Context, max_nodes: int
) -> tuple[dict[str, Any], dict[str, list[Any]], Any, list[Any]]:
    v: dict[str, tuple[Any, Any, Any]] = {}
    bits: dict[str, list[Any]] = {}
    base: list[Any] = []
    size = []
    for var in plan.variables.values():
        d, w, x = (z3.Int(f"{var.name}.{k}", ctx) for k in ("depth", "writers", "export"))
        v[var.name] = (d, w, x)
        bits[var.name] = data_vars(var, ctx)
        base += [d >= var.depth[0], d <= var.depth[1], w >= var.writers[0], w <= var.writers[1]]
        base += [x >= 0, x < len(var.exports), *unused_data_zero(var, d, bits[var.name])]
        size.append(2 * d if var.driver == "qcow2" else z3.IntVal(1, ctx))
    total = z3.Sum(size) if size else z3.IntVal(0, ctx)
    base.append(total <= max_nodes)
    return v, bits, total, base


def _data(
    plan: ParamPlan, bits: dict[str, list[Any]], measured: dict[str, bool], ctx: z3.Context
) -> Any:
    """Layer name -> "it holds data": the space's literals, the plan's measured images."""
    lits: dict[str, Any] = {}
    for var in plan.variables.values():
        for j, layer in enumerate(var.layers(var.depth[1])):
            if var.data == "any":
                lits[layer] = bits[var.name][j]
            else:
                lits[layer] = z3.BoolVal(var.data == "all", ctx)

    def of(layer: str) -> Any:
        if layer in lits:
            return lits[layer]
        return z3.BoolVal(measured.get(layer, True), ctx)

    return of


class _Presence:
    """Which vertex of the maximal graphs exists, as a z3 formula over the parameters."""

    def __init__(self, plan: ParamPlan, ctx: z3.Context, v: dict[str, Any]) -> None:
        self.ctx = ctx
        self.of: dict[str, Any] = {}
        for var in plan.variables.values():
            d, w, x = v[var.name]
            if var.driver == "qcow2":
                for j in range(var.depth[1]):
                    layer = var.name if j == 0 else f"{var.name}-b{j}"
                    self.of[layer] = self.of[f"{layer}-file"] = d > j
            if "none" in var.exports:
                self.of[f"{_EXPORT_BB}{var.name}-exp"] = x != var.exports.index("none")
            for k in range(var.writers[1]):
                self.of[f"{_EXPORT_BB}{var.name}-w{k}"] = w > k
        self.true = z3.BoolVal(True, ctx)

    def vertex(self, name: str) -> Any:
        return self.of.get(name, self.true)

    def edge(self, ref: tuple[str, str, str]) -> Any:
        return z3.And(self.vertex(ref[0]), self.vertex(ref[2]))


def _subjects(inst: Instance, names: set[str]) -> list[str]:
    """The vertices an instance is about (top-level names and edge ends of its data)."""
    d = inst.data
    if inst.kind in ("p1node", "p1root", "p4"):
        top = d[:1]
    else:
        top = d
    out: list[str] = []
    for x in top:
        if isinstance(x, str) and x in names:
            out.append(x)
        elif isinstance(x, tuple) and len(x) == 3 and all(isinstance(y, str) for y in x):
            out += [y for y in (x[0], x[2]) if y in names]
    return out


def encode(plan: ParamPlan, workdir: Path, *, max_nodes: int, policy: str, sock: str) -> Encoding:
    """The z3 problem of ``plan`` (see the module doc)."""
    measured: dict[str, bool] = {}
    graphs = skeleton(plan, workdir, sock, measured)
    requests = export_requests()
    ctx = z3.Context()
    v, bits, total, base = _params(plan, ctx, max_nodes)
    pres = _Presence(plan, ctx, v)
    data = _data(plan, bits, measured, ctx)
    steps = parse_steps(plan.steps)
    declared: set[str] = set()
    encoders: list[_Encoder] = []
    per_state: list[list[Instance]] = []
    for i, g in enumerate(graphs):
        rules = rules_for("qemu" if i == 0 else policy) - {"G1-acyclic"}
        before = as_before(graphs[i - 1]) if i else None
        insts = list(enumerate_instances(Region.of(g, None), rules, before))
        enc = _Encoder(g, declared, f"s{i}:")
        enc.encode(insts)
        encoders.append(enc)
        per_state.append(insts)
    base += parse(ctx, encoders)
    checks: list[list[tuple[Any, Any, Instance]]] = []
    n_views = 0
    writable = {
        f"{_EXPORT_BB}{var.name}-exp": (x == var.exports.index("writable"))
        if "writable" in var.exports
        else z3.BoolVal(False, ctx)
        for var in plan.variables.values()
        for _d, _w, x in [v[var.name]]
    }
    for i, (g, insts, enc) in enumerate(zip(graphs, per_state, encoders)):
        prefix = f"s{i}:"
        names = set(g.g.nodes)
        if i:
            names |= set(graphs[i - 1].g.nodes)
        for p, c, e in g.edges():
            ref = (p, e.name, c)
            ps, ss = edge_symbols(prefix, ref)
            if ps not in enc.used:
                continue
            perm, shared = z3.BitVec(ps, 4, ctx), z3.BitVec(ss, 4, ctx)
            here = pres.edge(ref)
            base.append(z3.Implies(z3.Not(here), z3.And(perm == 0, shared == 0xF)))
            if (p.startswith(_EXPORT_BB) and p in pres.of) or p in writable:
                rw = writable.get(p, z3.BoolVal(True, ctx))
                (rp, rs), (wp, ws) = (
                    tuple(z3.BitVecVal(x, 4, ctx) for x in requests[w]) for w in (False, True)
                )
                base.append(
                    z3.Implies(here, z3.And(perm == z3.If(rw, wp, rp), shared == z3.If(rw, ws, rs)))
                )
        for node in g.nodes:
            used = prefix + "n.used:" + esc(node)
            if used in enc.used:
                ins = [pres.edge((p, e.name, node)) for p, e in g.parents(node)]
                base.append(z3.Bool(used, ctx) == z3.Or(z3.BoolVal(False, ctx), *ins))
        state: list[tuple[Any, Any, Instance]] = []
        for inst in insts:
            lit = z3.Bool(prefix + esc(inst.key), ctx)
            guard = z3.And(pres.true, *(pres.vertex(n) for n in _subjects(inst, names)))
            if inst.kind == "p1node":
                base.append(z3.Implies(guard, lit))  # the engine's refresh: a definition
            elif inst.kind == "p1root":
                if not (inst.data[0][0] in pres.of or inst.data[0][0] in writable):
                    base.append(z3.Implies(guard, lit))
            else:
                state.append((guard, lit, inst))
        if i and policy != "qemu" and steps[i - 1].intent is None:
            views = view_checks(graphs[i - 1], g, pres.vertex, data, ctx)
            state += views
            n_views += len(views)
        checks.append(state)
    stats = {
        "states": len(graphs),
        "instances": sum(len(s) for s in per_state) + n_views,
        "guest-view-instances": n_views,
        "edges": sum(len(list(g.edges())) for g in graphs),
    }
    return Encoding(plan, ctx, v, bits, total, base, checks, len(graphs), stats)


def _holds(state: list[tuple[Any, Any, Instance]], ctx: z3.Context) -> Any:
    return z3.And(z3.BoolVal(True, ctx), *(z3.Implies(g, lit) for g, lit, _i in state))


def solve(enc: Encoding, *, exclude: list[Assignment] | None = None) -> Prediction | None:
    """The smallest assignment on which a step breaks a rule, or None (unsat)."""
    ctx = enc.ctx
    opt = z3.Optimize(ctx=ctx)
    opt.set("random_seed", 0)
    opt.set("rlimit", RLIMIT)
    opt.add(*enc.base)
    opt.add(_holds(enc.checks[0], ctx))
    fails = []
    for k in range(1, enc.states):
        earlier = [_holds(enc.checks[i], ctx) for i in range(1, k)]
        fails.append(z3.And(z3.BoolVal(True, ctx), *earlier, z3.Not(_holds(enc.checks[k], ctx))))
    opt.add(z3.Or(z3.BoolVal(False, ctx), *fails))
    for a in exclude or []:
        opt.add(block(enc.plan, a, enc.params, enc.bits))
    opt.minimize(enc.size)
    opt.minimize(
        z3.Sum([z3.Sum(list(t)) for t in enc.params.values()]) if enc.params else z3.IntVal(0, ctx)
    )
    opt.minimize(data_cost(enc.bits, ctx))
    res = opt.check()
    if res == z3.unknown:
        raise RuntimeError(f"z3 gave up: {opt.reason_unknown()}")
    if res == z3.unsat:
        return None
    m = opt.model()
    assignment = decode(enc.plan, m, enc.params, enc.bits)
    for k in range(1, enc.states):
        broken = [
            inst
            for g, lit, inst in enc.checks[k]
            if z3.is_true(m.eval(g, model_completion=True))
            and z3.is_false(m.eval(lit, model_completion=True))
        ]
        if broken:
            rules = sorted({i.rule for i in broken})
            return Prediction(assignment, k - 1, rules, sorted(i.key for i in broken))
    raise AssertionError("z3's model breaks no step")


def timed_solve(enc: Encoding) -> tuple[Prediction | None, float]:
    t = time.monotonic()
    return solve(enc), time.monotonic() - t
