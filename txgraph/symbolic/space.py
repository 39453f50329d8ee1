"""The parameter space of a parameterised plan in z3, and the enumerating cross-check.

:mod:`txgraph.symbolic.params` defines the plan format and how one assignment is built
and run; this module is the space itself as z3 terms — per variable its depth, number of
other writers, export choice and, with ``data: any``, a "holds data" boolean per layer
(:func:`data_vars`) — shared by the symbolic encoding (:mod:`txgraph.symbolic.smtplan`)
and by the enumeration: :func:`assignments` (every point within the node bound, smallest
graph first, z3 ``Optimize`` over the ranges only), :func:`enumerate_search` and
:func:`failing_assignments` (each built and run on the real engine), which the tests
require to name the same failing graphs as the z3 search on every example plan.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import z3

from txgraph.plan.verify import StateError
from txgraph.symbolic.params import (
    Assignment,
    Command,
    Counterexample,
    ParamPlan,
    SearchResult,
    Var,
    build,
    make_images,
    run_plan,
)

__all__ = [
    "assignments",
    "block",
    "data_cost",
    "data_vars",
    "decode",
    "enumerate_search",
    "failing_assignments",
    "unused_data_zero",
]


def _nodes(var: Var, depth: Any) -> Any:
    return 2 * depth if var.driver == "qcow2" else 1


def data_vars(var: Var, ctx: z3.Context) -> list[Any]:
    """The z3 booleans "layer ``j`` holds data" of a variable with ``data: any``."""
    if var.data != "any":
        return []
    return [z3.Bool(f"{var.name}.data.{j}", ctx) for j in range(len(var.layers(var.depth[1])))]


def data_of(var: Var, m: Any, depth: int, bits: list[Any]) -> list[bool]:
    """The model's data choice of a variable's present layers."""
    if var.data == "all":
        return [True] * len(var.layers(depth))
    return [z3.is_true(m.eval(b, model_completion=True)) for b in bits[: len(var.layers(depth))]]


def decode(plan: ParamPlan, m: Any, v: dict[str, Any], bits: dict[str, list[Any]]) -> Assignment:
    out: Assignment = {}
    for name, (d, w, x) in v.items():
        var = plan.variables[name]
        depth = m.eval(d).as_long()
        out[name] = {
            "depth": depth,
            "writers": m.eval(w).as_long(),
            "export": var.exports[m.eval(x).as_long()],
        }
        if var.data != "none":
            out[name]["data"] = data_of(var, m, depth, bits[name])
    return out


def block(plan: ParamPlan, a: Assignment, v: dict[str, Any], bits: dict[str, list[Any]]) -> Any:
    """The z3 clause that excludes assignment ``a``."""
    diff = []
    for n, (d, w, x) in v.items():
        var = plan.variables[n]
        diff += [d != a[n]["depth"], w != a[n]["writers"], x != var.exports.index(a[n]["export"])]
        if var.data == "any":
            diff += [b != val for b, val in zip(bits[n], a[n]["data"])]
    return z3.Or(diff)


def data_cost(bits: dict[str, list[Any]], ctx: z3.Context) -> Any:
    """How many layers hold data (minimised after the node count and the parameters)."""
    terms = [z3.If(b, 1, 0) for bs in bits.values() for b in bs]
    return z3.Sum(terms) if terms else z3.IntVal(0, ctx)


def unused_data_zero(var: Var, d: Any, bits: list[Any]) -> list[Any]:
    """Layers below the chain's depth hold no data (one model per graph)."""
    return [z3.Implies(d <= j, z3.Not(b)) for j, b in enumerate(bits)]


def _space(
    plan: ParamPlan, max_nodes: int, ctx: z3.Context
) -> tuple[z3.Optimize, dict[str, Any], dict[str, list[Any]]]:
    opt = z3.Optimize(ctx=ctx)
    v: dict[str, Any] = {}
    bits: dict[str, list[Any]] = {}
    size = []
    for var in plan.variables.values():
        d, w, x = (z3.Int(f"{var.name}.{k}", ctx) for k in ("depth", "writers", "export"))
        v[var.name] = (d, w, x)
        bits[var.name] = data_vars(var, ctx)
        opt.add(d >= var.depth[0], d <= var.depth[1], w >= var.writers[0], w <= var.writers[1])
        opt.add(x >= 0, x < len(var.exports), *unused_data_zero(var, d, bits[var.name]))
        size.append(_nodes(var, d))
    total = z3.Sum(size) if size else z3.IntVal(0, ctx)
    opt.add(total <= max_nodes)
    opt.minimize(total)
    opt.minimize(z3.Sum([z3.Sum(list(t)) for t in v.values()]))
    opt.minimize(data_cost(bits, ctx))
    return opt, v, bits


def assignments(plan: ParamPlan, max_nodes: int) -> Any:
    """Every assignment within the bound, smallest graph first (z3)."""
    ctx = z3.Context()
    opt, v, bits = _space(plan, max_nodes, ctx)
    while opt.check() == z3.sat:
        got = decode(plan, opt.model(), v, bits)
        yield got
        opt.add(block(plan, got, v, bits))


def _outcomes(
    plan: ParamPlan, workdir: Path, max_nodes: int, policy: str, sock: str
) -> Iterator[tuple[Assignment, list[Command], list[list[str]], Any]]:
    """Every assignment within the bound, built and run: (assignment, build, images,
    :func:`run_plan`'s answer, or ``StateError`` for a start QEMU would not build)."""
    sock = sock or str(workdir / "nbd.sock")
    make_images(plan.images)
    for a in assignments(plan, max_nodes):
        cmds, images = build(plan, a, workdir, sock)
        make_images(images)
        try:
            yield a, cmds, images, run_plan(plan, cmds, policy)
        except StateError as exc:
            yield a, cmds, images, exc


def enumerate_search(
    plan: ParamPlan, workdir: Path, *, max_nodes: int = 8, policy: str = "safe", sock: str = ""
) -> SearchResult:
    """The cross-check of the z3 search (:mod:`txgraph.symbolic.search`): build and run
    every assignment on the engine, smallest first; the first counterexample, or none."""
    start = time.monotonic()
    n = bad_starts = 0
    for a, cmds, images, found in _outcomes(plan, workdir, max_nodes, policy, sock):
        n += 1
        if isinstance(found, StateError):
            bad_starts += 1  # QEMU would not build this graph: not a starting state
            continue
        if found is not None:
            i, cmd, err, rules = found
            cex = Counterexample(a, cmds, images, i, cmd, err, rules)
            return SearchResult(max_nodes, n, bad_starts, time.monotonic() - start, cex)
    return SearchResult(max_nodes, n, bad_starts, time.monotonic() - start)


def failing_assignments(
    plan: ParamPlan, workdir: Path, *, max_nodes: int = 8, policy: str = "safe", sock: str = ""
) -> list[tuple[Assignment, int, list[str]]]:
    """Every assignment on which the engine fails a step: (assignment, step, rules)."""
    out = []
    for a, _cmds, _images, found in _outcomes(plan, workdir, max_nodes, policy, sock):
        if found is not None and not isinstance(found, StateError):
            out.append((a, found[0], found[3]))
    return out
