"""The structural engine: every rule as a plain Python predicate (exact).

This is the reference the z3 engine is cross-checked against, and the
fallback when z3 is not wanted. Each predicate restates the QEMU rule it
reflects; see :mod:`txgraph.checker.rules` for the block.c functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from txgraph.checker.explain import cycles_through, expected_p1, render
from txgraph.checker.instances import Instance
from txgraph.checker.region import Region, cumulative
from txgraph.checker.verdict import EdgeRef, Violation
from txgraph.model.graph import BlockGraph
from txgraph.model.names import MAX_NODE_NAME, id_wellformed
from txgraph.model.perm_bits import Perm, Role

__all__ = ["holds", "check_structural", "AUTO_NAME"]

#: ``id_generate(ID_BLOCK)``: '#block' + counter + two random digits.
AUTO_NAME = re.compile(r"#block[0-9]{3,}\Z")

_DATA_ROLES = int(Role.DATA | Role.METADATA)
_FP = int(Role.FILTERED | Role.PRIMARY)
_W = int(Perm.WRITE | Perm.WRITE_UNCHANGED)


def _edge_vals(graph: BlockGraph, ref: EdgeRef) -> tuple[int, int]:
    e = graph.g.edges[ref[0], ref[2], ref[1]]["obj"]
    return int(e.perm), int(e.shared)


def _g2card(inst: Instance, graph: BlockGraph) -> bool:
    # bdrv_child_cb_attach: at most one child per FILTERED/COW/PRIMARY bit.
    _p, _name, bit, kids = inst.data
    return sum(1 for _r, role in kids if role & bit) <= 1


def _g2excl(inst: Instance, graph: BlockGraph) -> bool:
    _ref, role, excl = inst.data
    if excl == "FILTERED":
        return not (role & Role.FILTERED and role & (_DATA_ROLES | Role.COW))
    return not (role & Role.COW and role & (_DATA_ROLES | Role.FILTERED | Role.PRIMARY))


def _g3one(inst: Instance, graph: BlockGraph) -> bool:
    # A filter has exactly one FILTERED|PRIMARY child; others carry neither bit.
    _p, _drv, kids = inst.data
    full = sum(1 for _r, role in kids if role & _FP == _FP)
    partial = sum(1 for _r, role in kids if role & _FP)
    return full == 1 and partial == 1


def _g3fcow(inst: Instance, graph: BlockGraph) -> bool:
    return not inst.data[2] & Role.COW


def _g3nofilt(inst: Instance, graph: BlockGraph) -> bool:
    return not inst.data[2] & Role.FILTERED


def _g4(inst: Instance, graph: BlockGraph) -> bool:
    _owner, a, b = inst.data
    return bool(a[1] != b[1])


def _g5req(inst: Instance, graph: BlockGraph) -> bool:
    _p, _drv, cname, refs = inst.data
    return any(ref[1] == cname for ref in refs)


def _g5quorum(inst: Instance, graph: BlockGraph) -> bool:
    return bool(inst.data[2] >= 1)


def _n1(inst: Instance, graph: BlockGraph) -> bool:
    name, bb_names = inst.data
    return name not in bb_names


def _n2(inst: Instance, graph: BlockGraph) -> bool:
    n = inst.data[0]
    return bool(id_wellformed(n) and len(n) <= MAX_NODE_NAME) or bool(AUTO_NAME.match(n))


def _fs1(inst: Instance, graph: BlockGraph) -> bool:
    node = graph.nodes[inst.data[0]]
    return not node.force_share or node.read_only


def _p1(inst: Instance, graph: BlockGraph) -> bool:
    return _edge_vals(graph, inst.data[0]) == expected_p1(inst, graph)


def _p3(inst: Instance, graph: BlockGraph) -> bool:
    # bdrv_a_allow_b: b's needs must be within what a shares.
    _c, a, b = inst.data
    return not _edge_vals(graph, b)[0] & ~_edge_vals(graph, a)[1]


def _p4(inst: Instance, graph: BlockGraph) -> bool:
    c = inst.data[0]
    perm, _s = cumulative(graph, c)
    return not (perm & _W) or graph.nodes[c].writable


def _f1(inst: Instance, graph: BlockGraph) -> bool:
    ref, now = inst.data
    return bool(now == ref[2])


def _j1(inst: Instance, graph: BlockGraph) -> bool:
    _job, _parent, _name, child, now = inst.data
    return bool(now == child)


def _s1(inst: Instance, graph: BlockGraph) -> bool:
    return not inst.data[3]


def _s2(inst: Instance, graph: BlockGraph) -> bool:
    return not inst.data[4] & Perm.WRITE


_PREDICATES: dict[str, Callable[[Instance, BlockGraph], bool]] = {
    "g2card": _g2card,
    "g2excl": _g2excl,
    "g3one": _g3one,
    "g3fcow": _g3fcow,
    "g3nofilt": _g3nofilt,
    "g3nocow": _g3fcow,
    "g4": _g4,
    "g5req": _g5req,
    "g5quorum": _g5quorum,
    "n1": _n1,
    "n2": _n2,
    "fs1": _fs1,
    "p1node": _p1,
    "p1root": _p1,
    "p3": _p3,
    "p4": _p4,
    "f1": _f1,
    "s1": _s1,
    "s2": _s2,
    "j1": _j1,
}


def holds(inst: Instance, graph: BlockGraph) -> bool:
    return _PREDICATES[inst.kind](inst, graph)


def check_structural(
    region: Region, instances: list[Instance], rules: frozenset[str], policy: str
) -> list[Violation]:
    graph = region.graph
    out: list[Violation] = []
    if "G1-acyclic" in rules:
        out.extend(cycles_through(graph, None if region.whole else region.nodes, policy))
    for inst in instances:
        if not holds(inst, graph):
            out.append(render(inst, graph, policy))
    return out
