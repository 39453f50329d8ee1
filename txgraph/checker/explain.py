"""Turning a failed instance (or a confirmed cycle) into a :class:`Violation`.

Both engines render through here, so equal decisions give equal verdicts,
down to the sentence. Sentences reuse QEMU's error texts where QEMU has one
(P3, N1, FS1, F1).
"""

from __future__ import annotations

import networkx as nx

from txgraph.checker.instances import Instance
from txgraph.checker.region import cumulative, edge_label
from txgraph.checker.rules import RULES
from txgraph.checker.verdict import EdgeRef, Violation
from txgraph.model.graph import BlockGraph
from txgraph.model.names import MAX_NODE_NAME, id_wellformed
from txgraph.model.perm_bits import Perm, Role, perm_names
from txgraph.model.perm_refresh import parent_description

__all__ = ["render", "cycles_through", "letters"]


def letters(perm: int) -> str:
    """``RWUS`` notation of reference/qemu-graph.md §0."""
    out = "".join(ch for bit, ch in ((1, "R"), (2, "W"), (4, "U"), (8, "S")) if perm & bit)
    return out or "-"


def _edge(graph: BlockGraph, ref: EdgeRef) -> tuple[int, int, int]:
    e = graph.g.edges[ref[0], ref[2], ref[1]]["obj"]
    return int(e.perm), int(e.shared), int(e.role)


def _v(
    inst: Instance, policy: str, nodes: tuple[str, ...], edges: tuple[EdgeRef, ...], **fmt: object
) -> Violation:
    sentence = RULES[inst.rule].template.format(**fmt)
    return Violation(
        inst.rule, tuple(sorted(set(nodes))), tuple(sorted(set(edges))), sentence, policy
    )


def render(inst: Instance, graph: BlockGraph, policy: str) -> Violation:
    """The violation an instance stands for; only called when it failed."""
    d = inst.data
    k = inst.kind
    if k == "g2card":
        p, bit_name, bit, kids = d
        hit = tuple(r for r, role in kids if role & bit)
        return _v(
            inst,
            policy,
            (p,),
            hit,
            node=p,
            problem=f"has {len(hit)} {bit_name} children ({', '.join(r[1] for r in hit)})",
        )
    if k == "g2excl":
        ref, role, excl = d
        return _v(
            inst,
            policy,
            (ref[0], ref[2]),
            (ref,),
            node=ref[0],
            problem=f"uses '{ref[2]}' as '{ref[1]}' with role {Role(role)!r} "
            f"({excl} excludes the other data roles)",
        )
    if k == "g3one":
        p, drv, kids = d
        return _v(
            inst,
            policy,
            (p,),
            tuple(r for r, _role in kids),
            node=p,
            driver=drv,
            problem="is a filter but does not have exactly one FILTERED|PRIMARY child",
        )
    if k in ("g3fcow", "g3nofilt", "g3nocow"):
        ref, drv, _role = d
        problem = {
            "g3fcow": "is a filter and cannot have a COW child",
            "g3nofilt": "is not a filter and cannot have a FILTERED child",
            "g3nocow": "does not support backing files",
        }[k]
        return _v(
            inst,
            policy,
            (ref[0], ref[2]),
            (ref,),
            node=ref[0],
            driver=drv,
            problem=f"{problem} ('{ref[1]}' -> '{ref[2]}')",
        )
    if k == "g4":
        owner, a, b = d
        who = f"Node '{owner}'" if owner in graph.nodes else f"Backend '{owner}'"
        return _v(inst, policy, (owner,), (a, b), owner=who, name=a[1], a=a[2], b=b[2])
    if k == "g5req":
        p, drv, cname, _names = d
        return _v(inst, policy, (p,), (), node=p, driver=drv, problem=f"has no '{cname}' child")
    if k == "g5quorum":
        p, drv, _n = d
        return _v(inst, policy, (p,), (), node=p, driver=drv, problem="has no children")
    if k == "n1":
        return _v(inst, policy, (d[0],), (), node=d[0])
    if k == "n2":
        n = d[0]
        why = (
            f"Node name '{n}' is too long (at most {MAX_NODE_NAME} characters)"
            if id_wellformed(n)
            else f"Invalid node-name: '{n}'"
        )
        return _v(inst, policy, (n,), (), problem=why)
    if k == "fs1":
        return _v(inst, policy, (d[0],), (), node=d[0])
    if k in ("p1node", "p1root"):
        ref = d[0]
        perm, shared, _role = _edge(graph, ref)
        want = expected_p1(inst, graph)
        return _v(
            inst,
            policy,
            (ref[0], ref[2]) if ref[0] in graph.nodes else (ref[2],),
            (ref,),
            edge=edge_label(ref),
            have=f"{letters(perm)}/{letters(shared)}",
            want=f"{letters(want[0])}/{letters(want[1])}",
        )
    if k == "p3":
        c, a, b = d
        missing = _edge(graph, b)[0] & ~_edge(graph, a)[1]
        return _v(
            inst,
            policy,
            (c,),
            (a, b),
            node=c,
            perms=perm_names(missing),
            b_desc=parent_description(graph, b[0]),
            b_name=b[1],
            a_desc=parent_description(graph, a[0]),
            a_name=a[1],
        )
    if k == "p4":
        c, _ups = d
        perm, _s = cumulative(graph, c)
        return _v(
            inst,
            policy,
            (c,),
            (),
            node=c,
            perms=perm_names(perm & (Perm.WRITE | Perm.WRITE_UNCHANGED)),
        )
    if k == "f1":
        ref, now = d
        what = "link removed" if now is None else f"now points to '{now}'"
        return _v(
            inst,
            policy,
            (ref[0], ref[2]),
            (ref,),
            name=ref[1],
            parent=ref[0],
            old=ref[2],
            what=what,
        )
    if k == "j1":
        job, parent, name, child, now = d
        what = "removed" if now is None else f"would point to '{now}'"
        return _v(
            inst,
            policy,
            (parent, child),
            ((parent, name, child),),
            job=graph.backends[job].description,
            parent=parent,
            child=child,
            name=name,
            what=what,
        )
    if k == "s1":
        node, old, file, _used = d
        return _v(inst, policy, (node, old), (), node=node, old=old, file=file)
    if k == "s2":
        ref, top, node, old, _perm = d
        return _v(
            inst,
            policy,
            (top, node, old),
            (ref,),
            user=parent_description(graph, ref[0]),
            top=top,
            node=node,
            old=old,
        )
    raise AssertionError(f"no renderer for {k}")


def expected_p1(inst: Instance, graph: BlockGraph) -> tuple[int, int]:
    """What P1 demands of the instance's edge (shared with the structural engine)."""
    from txgraph.model.child_perms import child_perm
    from txgraph.model.perm_bits import PERM_ALL

    if inst.kind == "p1root":
        return inst.data[1], inst.data[2]
    ref, ctx, role, _ups, force_share = inst.data
    p, s = cumulative(graph, ref[0])
    nperm, nshared = child_perm(ctx, Role(role), p, s)
    return int(nperm), int(PERM_ALL if force_share else nshared)


def cycles_through(graph: BlockGraph, nodes: set[str] | None, policy: str) -> list[Violation]:
    """G1 by networkx: one violation per strongly connected component with a cycle.

    With ``nodes`` given only components containing one of them are reported
    (the rest of the graph is held fixed and assumed acyclic).
    """
    g = graph.g
    comps: list[set[str]] = []
    if nodes is None:
        comps = [
            c
            for c in nx.strongly_connected_components(g)
            if len(c) > 1 or any(g.has_edge(n, n) for n in c)
        ]
    else:
        done: set[str] = set()
        for n in sorted(nodes):
            if n in done or n not in g:
                continue
            down = nx.descendants(g, n)  # never contains n itself
            if not any(p == n or p in down for p in g.predecessors(n)):
                continue
            up: set[str] = nx.ancestors(g, n)
            comp = {n} | (down & up)
            done |= comp
            comps.append(comp)
    out: list[Violation] = []
    rule = RULES["G1-acyclic"]
    for comp in comps:
        edges = tuple(
            sorted(
                (p, key, c)
                for p, c, key, data in g.edges(comp, keys=True, data=True)
                if c in comp and p in graph.nodes
            )
        )
        cyc = tuple(sorted(comp))
        sentence = rule.template.format(
            cycle=", ".join(f"'{n}'" for n in cyc),
            edges=", ".join(f"{p} -{k}-> {c}" for p, k, c in edges),
        )
        out.append(Violation(rule.id, cyc, edges, sentence, policy))
    return out
