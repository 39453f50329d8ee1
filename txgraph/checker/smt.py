"""The z3 engine: the region's constraints as SMT-LIB, decided under assumptions.

Encoding (reference/qmp-and-tooling.md §2.1):

- the region's edges and nodes become constants (4-bit ``perm``/``shared``,
  5-bit role, booleans for writable/read-only/force-share) pinned by facts;
- the check first decides the plain conjunction of every instance's
  constraint (the common outcome, all rules hold, needs nothing more: half the
  text, so half z3's parse); only when that is not sat does every instance
  become an implication ``lit => constraint`` whose literal carries a readable
  name (``P3:node=file0:a=top/file:b=dup/file``), and the check assumes all
  literals, so the unsat core names the broken rules;
- acyclicity uses integer ranks: region nodes symbolic, every other node a
  constant from :mod:`ranks` (delta encoding), on the edges touching the
  region only;
- one long-lived solver per thread: declarations persist, each check's
  facts and implications live in one ``push``/``pop`` scope, and the text is
  parsed in bulk, because z3's Python builders cost ~20 µs per term and an
  incremental check costs far less than a fresh solver's first one.

``unknown`` (budget exhausted) is a failure, never a pass.
"""

from __future__ import annotations

import threading

import z3
from z3 import z3core

from txgraph.checker.encode import NAME_PRELUDE, Encoder, esc
from txgraph.checker.explain import cycles_through, render
from txgraph.checker.instances import Instance
from txgraph.checker.ranks import SPACING, ranks_for, record
from txgraph.checker.region import Region
from txgraph.checker.rules import RULES
from txgraph.checker.verdict import Violation
from txgraph.model.graph import BlockGraph

__all__ = ["check_smt", "RLIMIT", "SEED"]

#: deterministic budget per check (z3 resource units, not time)
RLIMIT = 20_000_000
SEED = 0
#: start a fresh solver once this many symbols were declared
MAX_DECLARED = 200_000
#: decide the untracked conjunction first (False: always the tracked form; tests
#: compare the two)
FAST_CONJUNCTION = True


class _Session:
    """A solver with the symbols already declared in it."""

    def __init__(self) -> None:
        self.solver = z3.Solver()
        self.solver.set("unsat_core", True)
        self.solver.set("random_seed", SEED)
        self.solver.set("rlimit", RLIMIT)
        self.declared: set[str] = set()
        self.bools: dict[str, z3.BoolRef] = {}
        self.go = z3.Bool("go")
        self.solver.from_string("(declare-const |go| Bool)\n" + NAME_PRELUDE)
        # The raw handles for the per-check calls: z3's Python wrappers build a sort,
        # cast and re-check every assumption on each call (about 10 us a check).
        self._ctx = self.solver.ctx.ref()
        self._handle = self.solver.solver
        self._go = (z3.Ast * 1)()
        self._go[0] = self.go.as_ast()

    def push(self) -> None:
        z3core.Z3_solver_push(self._ctx, self._handle)

    def parse(self, text: str) -> None:
        z3core.Z3_solver_from_string(self._ctx, self._handle, text)

    def pop(self) -> None:
        z3core.Z3_solver_pop(self._ctx, self._handle, 1)

    def check_go(self) -> z3.CheckSatResult:
        """``solver.check(go)``: the one assumption that stands for every literal."""
        return z3.CheckSatResult(
            z3core.Z3_solver_check_assumptions(self._ctx, self._handle, 1, self._go)
        )

    def lit(self, name: str) -> z3.BoolRef:
        b = self.bools.get(name)
        if b is None:
            b = self.bools[name] = z3.Bool(name)
        return b


#: z3's Python API works in one global context that is not thread-safe, and a solver
#: freed by a thread that ends (a block job's) races with any other use of it. So there
#: is one solver session for the process, and ``_LOCK`` is held for everything done
#: with it: building it, every check, and replacing it.
_LOCK = threading.Lock()
_SHARED: list[_Session] = []


def _session() -> _Session:
    """The process's solver session (``_LOCK`` held by the caller)."""
    if not _SHARED or len(_SHARED[0].declared) > MAX_DECLARED:
        _SHARED[:] = [_Session()]
    return _SHARED[0]


def check_smt(
    region: Region, instances: list[Instance], rules: frozenset[str], policy: str
) -> list[Violation]:
    with _LOCK:
        session = _session()
        out, false_alarm = _run(session, region, instances, rules, policy, force_ranks=False)
        if false_alarm:
            # A rank core without a real cycle: the constants left no room. Renumber, retry.
            # A second false alarm can only mean the fixed part itself is cyclic, which a
            # region check does not judge; the other rules' findings stand.
            out, _again = _run(session, region, instances, rules, policy, force_ranks=True)
    return out


def _run(
    session: _Session,
    region: Region,
    instances: list[Instance],
    rules: frozenset[str],
    policy: str,
    force_ranks: bool,
) -> tuple[list[Violation], bool]:
    graph = region.graph
    enc = Encoder(graph, session.declared)
    for inst in instances:
        enc.instance(inst)
    symbolic: list[str] = []
    fixed: dict[str, int] | None = None
    if "G1-acyclic" in rules:
        fixed = _fixed_ranks(region, force_ranks)
        if fixed is not None:
            symbolic = enc.ranks(region, fixed)
    solver = session.solver
    session.push()
    try:
        # Declarations persist across pop in z3's parser; facts and rules do not.
        # Fast path: the conjunction of every formula, one assumption. It is sat
        # exactly when the tracked form is; only a failure (or an undecided
        # conjunction) pays for the literals, their cores and their peeling.
        decls = "\n".join(enc.decls)
        first = z3.unknown
        if FAST_CONJUNCTION:
            session.parse(decls + "\n" + enc.conjunction())
            decls = ""  # declared now, for the rest of the session
            first = session.check_go()
        if first != z3.sat:
            session.pop()
            session.push()
            session.parse(decls + "\n" + enc.tracked())
            first = session.check_go()
        if first == z3.sat:
            failed: list[str] = []
        elif first == z3.unknown:
            return [_unknown(solver.reason_unknown(), policy)], False
        else:
            failed, unknown = _cores(solver, [session.lit(k) for k in enc.lits])
            if unknown is not None:
                return [_unknown(unknown, policy)], False
    finally:
        session.pop()
    rank_lits = [k for k in failed if k.startswith("G1:")]
    if not rank_lits and symbolic and not region.whole:
        _remember_ranks(region, fixed or {})
    out: list[Violation] = []
    false_alarm = False
    if rank_lits:
        # Fixed ranks are only sufficient: report a cycle only once networkx finds it.
        cycles = cycles_through(graph, None if region.whole else region.nodes, policy)
        false_alarm = not cycles
        out.extend(cycles)
    if any(not key.startswith("G1:") for key in failed):
        # the literal names of the instances, needed only to render a failure
        by_lit = {esc(inst.key): inst for inst in instances}
        for key in failed:
            if not key.startswith("G1:"):
                out.append(render(by_lit[key], graph, policy))
    return out, false_alarm


def _fixed_ranks(region: Region, force: bool) -> dict[str, int] | None:
    """Constant ranks for the nodes adjacent to the region (delta encoding)."""
    graph = region.graph
    if region.whole:
        return {}
    needed: set[str] = set()
    succ, pred = graph._succ, graph._pred
    for n in region.nodes:
        needed.update(x for x in succ[n] if x not in region.nodes)
        needed.update(x for x in pred[n] if x in graph.nodes and x not in region.nodes)
    if not needed:
        return {}
    return ranks_for(graph, region.nodes, needed, force=force)


def _remember_ranks(region: Region, fixed: dict[str, int]) -> None:
    """Give the region's nodes ranks between their fixed neighbours, for later checks.

    z3 proved such ranks exist; picking them in Python (children first, a
    quarter of the remaining gap above the highest child) avoids fetching the
    model, and the result is verified before it is kept.
    """
    graph = region.graph
    g = graph.g
    if len(region.nodes) == 1:
        # The common case (one node added or changed): its own order, unless it
        # loops on itself; a subgraph view and networkx's sort cost ~0.3 ms here.
        order = list(region.nodes)
        if order[0] in g.succ[order[0]]:
            return
    else:
        found = _topological(graph, region.nodes)
        if found is None:
            return
        order = found
    ranks: dict[str, int] = {}
    for n in reversed(order):
        lo = max(
            (ranks.get(c, fixed.get(c, 0)) for c in g.successors(n) if c in graph.nodes), default=0
        )
        hi = min((fixed[p] for p in g.predecessors(n) if p in fixed), default=lo + 2 * SPACING)
        ranks[n] = lo + max(1, (hi - lo) // 4)
    for n in order:
        for c in g.successors(n):
            if c in graph.nodes and not ranks[n] > ranks.get(c, fixed.get(c, -1)):
                return
        for p in g.predecessors(n):
            if p in fixed and not fixed[p] > ranks[n]:
                return
    record(graph, ranks)


def _topological(graph: BlockGraph, nodes: set[str]) -> list[str] | None:
    """The nodes in an order with every parent before its children (edges among
    ``nodes`` only), or None on a cycle: Kahn's algorithm on the adjacency dicts
    (a networkx subgraph view and its sort cost ~0.1 ms per 100 nodes more).
    Any such order serves: the ranks picked from it are verified before use."""
    succ, pred = graph._succ, graph._pred
    indeg = {n: sum(len(keys) for p, keys in pred[n].items() if p in nodes) for n in nodes}
    ready = sorted(n for n, d in indeg.items() if d == 0)
    order: list[str] = []
    while ready:
        n = ready.pop()
        order.append(n)
        for c, keys in succ[n].items():
            if c in indeg:
                indeg[c] -= len(keys)
                if indeg[c] == 0:
                    ready.append(c)
    return order if len(order) == len(nodes) else None


def _cores(solver: z3.Solver, lits: list[z3.BoolRef]) -> tuple[list[str], str | None]:
    """Every literal that belongs to some unsat core, found by peeling cores off.

    Ground literals of a core are re-checked alone: z3 does not promise minimal
    cores, and a literal is reported only if it is false on its own. Rank
    literals are only false together, so they are kept as a group.
    """
    remaining = list(lits)
    failed: list[str] = []
    while True:
        res = solver.check(remaining)
        if res == z3.sat:
            return sorted(set(failed)), None
        if res == z3.unknown:
            return failed, solver.reason_unknown()
        core = {c.decl().name() for c in solver.unsat_core()}
        if not core:
            return failed, "the facts of the region are contradictory"
        for c in sorted(core):
            if c.startswith("G1:"):
                failed.append(c)
            else:
                alone = solver.check(z3.Bool(c))
                if alone == z3.unknown:
                    return failed, solver.reason_unknown()
                if alone == z3.unsat:
                    failed.append(c)
        remaining = [x for x in remaining if x.decl().name() not in core]


def _unknown(reason: str, policy: str) -> Violation:
    rule = RULES["Z1-solver-unknown"]
    return Violation(rule.id, (), (), rule.template.format(reason=reason), policy)
