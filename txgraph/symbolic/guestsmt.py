"""V1-guest-view in the symbolic plan encoding: what each export's guest reads, as z3 terms.

The checker's rule (:mod:`txgraph.checker.guest_view`) compares, for every export or
device root a step touches, which layer serves each offset before and after the step.
Over an unknown starting graph the allocation is unknown too, so the encoding
abstracts it by *which layers hold data*: a z3 boolean per layer of the parameter
space (the plan's ``data`` constraint, :func:`txgraph.symbolic.params.data_vars`), the
measured answer for the layers the plan's own images make (the scratch runtime's
``block_status``, as :class:`txgraph.io.allocation.RuntimeAllocation` asks it; a
layer whose allocation is unknown counts as holding data).

The read path of a root in a state is a function of the symbolic graph: the engine's
maximal graph of that state gives the walk ``bdrv_skip_filters``/``bdrv_cow_bs``
(:func:`served_path`: filters passed through, then ``backing`` links), and a vertex of
it is on the path of the actual graph iff it and every vertex above it on the walk are
present (an edge exists iff both ends do). So "layer ``L`` serves the guest" is the
conjunction of those presence formulas and ``L``'s data literal, and the view of the
root is the *set* of layers it reads data through.

The step keeps the guest view iff that set is the same after as before (for every
root present in both states; a step declaring ``"intent": "changes-guest-data"``, and
the ``qemu`` policy, are not judged). This is exact for the space's images, whose data
layers each own a cluster no other layer writes (:func:`txgraph.symbolic.params.build`):
no layer hides another's data, so the served layer of an offset changes exactly when a
data layer leaves or joins the path. For images of other shapes it is what the rule
itself judges when the layers' data do not overlap; where they do (a layer whose data
an upper one hides), the set comparison may report a change the engine does not, and
the engine's confirmation run says so (never hidden). Layer sizes are not modelled
(the space's images are all 1 MiB).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import z3

from txgraph.checker.guest_view import RULE, filtered_child_name
from txgraph.checker.instances import Instance
from txgraph.model.graph import BlockGraph
from txgraph.model.node import ParentKind

__all__ = ["served_path", "guest_roots", "reads", "view_checks", "measured_data", "RULE"]

_JOB_BB = "bb:job:"


def served_path(g: BlockGraph, root: str) -> list[tuple[str, bool]]:
    """The walk of a root's reads in ``g``: (vertex, is a data layer), top first.

    The checker's :func:`txgraph.checker.guest_view.served_layers` with the filters kept
    (their presence decides whether the layers below them are reached)."""
    out: list[tuple[str, bool]] = []
    found = g.child_edge(root, "root")
    node = found[0] if found else None
    seen: set[str] = set()
    while node is not None and node not in seen and node in g.nodes:
        seen.add(node)
        via = filtered_child_name(g.nodes[node].driver)
        out.append((node, via is None))
        nxt = g.child_edge(node, via if via is not None else "backing")
        node = nxt[0] if nxt else None
    return out


def guest_roots(g: BlockGraph) -> list[str]:
    """The export and device roots of ``g`` (job BlockBackends are not guests), sorted."""
    return sorted(
        k for k, b in g.backends.items() if b.kind is ParentKind.ROOT and not k.startswith(_JOB_BB)
    )


def reads(
    path: list[tuple[str, bool]],
    present: Callable[[str], Any],
    data: Callable[[str], Any],
    ctx: z3.Context,
) -> dict[str, Any]:
    """Layer -> "the guest reads this layer's data" on the actual graph."""
    out: dict[str, Any] = {}
    reached = z3.BoolVal(True, ctx)
    for vertex, layer in path:
        reached = z3.And(reached, present(vertex))
        if layer:
            out[vertex] = z3.And(reached, data(vertex))
    return out


def view_checks(
    before: BlockGraph,
    after: BlockGraph,
    present: Callable[[str], Any],
    data: Callable[[str], Any],
    ctx: z3.Context,
) -> list[tuple[Any, Any, Instance]]:
    """(guard, literal, instance) of V1 for one step: per root in both states whose read
    path the step changes, "the set of layers read through is the same"."""
    out: list[tuple[Any, Any, Instance]] = []
    for root in guest_roots(after):
        if root not in before.backends:
            continue  # a new root had no guest view before
        old, new = served_path(before, root), served_path(after, root)
        if old == new:
            continue
        a, b = reads(old, present, data, ctx), reads(new, present, data, ctx)
        false = z3.BoolVal(False, ctx)
        same = [a.get(layer, false) == b.get(layer, false) for layer in sorted({*a, *b})]
        inst = Instance(RULE, "v1", f"V1:root={root}", (root,))
        out.append((present(root), z3.And(z3.BoolVal(True, ctx), *same), inst))
    return out


def measured_data(runtime: Any, name: str) -> bool:
    """Whether the scratch runtime's driver object of ``name`` allocates anything itself
    (``bdrv_is_allocated`` over the whole node); unknown counts as data."""
    obj = runtime.driver_object(name, staged=False)
    if obj is None or getattr(obj, "allocation_unknown", False):
        return True
    size = int(obj.size())
    pos = 0
    while pos < size:
        st = obj.block_status(pos, size - pos)
        if st.allocated:
            return True
        pos += max(1, min(int(st.length), size - pos))
    return False
