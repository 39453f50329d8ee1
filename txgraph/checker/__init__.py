"""txgraph.checker: the invariant catalogue and its two engines.

``check(graph, touched)`` evaluates every rule of a policy on the region a
transaction touched (or the whole graph) and returns a :class:`Verdict`.
Engines: ``z3`` (the SMT encoding of :mod:`txgraph.checker.smt`, delta
encoding over the region) and ``structural`` (plain Python, exact); they
agree on every verdict, rule ids, subjects and sentences included.

``V1-guest-view`` is in the catalogue but not in ``check``: it needs the
images' allocation, which the checker core never reads. Its analysis is
:mod:`txgraph.checker.guest_view`; :mod:`txgraph.ops.guest_view` runs it at
each transaction's commit with the data plane's block status.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from txgraph.checker.before import Before, GraphBefore, as_before
from txgraph.checker.instances import enumerate_instances
from txgraph.checker.region import Region
from txgraph.checker.rules import POLICIES, RULES, Rule, rules_for
from txgraph.checker.structural import check_structural
from txgraph.checker.verdict import EdgeRef, Verdict, Violation
from txgraph.model.graph import BlockGraph

__all__ = [
    "check",
    "Before",
    "GraphBefore",
    "Verdict",
    "Violation",
    "EdgeRef",
    "Rule",
    "RULES",
    "POLICIES",
    "ENGINES",
]

ENGINES: tuple[str, ...] = ("z3", "structural")


def check(
    graph: BlockGraph,
    touched: Iterable[str] | None = None,
    *,
    policy: str = "qemu",
    before: BlockGraph | Before | None = None,
    engine: str = "z3",
) -> Verdict:
    """Check the invariants of ``policy`` on ``graph``.

    ``touched`` names the nodes (and backend keys) a transaction changed
    (``Transaction.touched``); the rest of the graph is assumed valid and
    unchanged since the previous check. ``None`` checks the whole graph.
    ``before`` is the graph before the transaction: it enables F1 (frozen
    links) and, under ``safe``, S1/S2 (backing chains that lost data); it is a
    copy of that graph or a :class:`Before` view (the transaction's journal).
    """
    start = time.perf_counter()
    rules = rules_for(policy)
    region = Region.of(graph, touched)
    instances = list(enumerate_instances(region, rules, as_before(before)))
    if engine == "z3":
        from txgraph.checker.smt import check_smt

        found = check_smt(region, instances, rules, policy)
    elif engine == "structural":
        found = check_structural(region, instances, rules, policy)
    else:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    violations = tuple(sorted(set(found)))
    return Verdict(not violations, violations, engine, time.perf_counter() - start)
