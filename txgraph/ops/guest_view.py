"""The guest-view rule (V1) at a transaction's commit: which roots it touches, and their views.

:mod:`txgraph.checker.guest_view` decides whether a root's guest reads other
data after a change; this module feeds it one transaction's worth of facts,
in O(change):

- the *affected roots* are the export and device BlockBackends at or above
  the parent of a link the transaction changed (:func:`change_starts`): a
  served chain differs only below such a parent, which is still in the staged
  graph on the chain's new path (or is the root itself). A node that merely
  gained a parent (a shared base under a new overlay) changes no chain above
  it, so its other users are not visited. Job-internal BlockBackends are not
  guests;
- the chain *before* is walked through the transaction's journal (the
  before-value of every link slot it changed) with the drivers of the live
  objects, the chain *after* through the staged graph;
- allocation comes from the data plane (:class:`txgraph.io.allocation.RuntimeAllocation`):
  the live driver objects for the layers before, the prepared ones for the
  layers the change opens. Only the layers that differ between both chains
  are queried, over the ranges they allocate.

Called by :meth:`txgraph.ops.session.Session._validate` before
``Runtime.apply``, while the live objects still are the graph before the
change. A block job's own graph changes (mirror's pivot, commit's and
stream's end) keep the view by construction and are not judged
(``Transaction.by_job``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from txgraph.checker.guest_view import served_layers, view_changes, violation
from txgraph.checker.verdict import Violation
from txgraph.io.allocation import RuntimeAllocation
from txgraph.model.graph import BlockGraph
from txgraph.model.node import ParentKind
from txgraph.ops.journal import Journal

if TYPE_CHECKING:
    from txgraph.ops.session import Session

__all__ = ["affected_roots", "change_starts", "guest_view_violations", "root_label", "INTENT"]

#: the plan/step member value that declares a change of the guest's data
INTENT = "changes-guest-data"

_JOB_BB = "bb:job:"
_EXPORT_BB = "bb:export:"


def _is_guest_root(graph: BlockGraph, key: str) -> bool:
    backend = graph.backends.get(key)
    return backend is not None and backend.kind is ParentKind.ROOT and not key.startswith(_JOB_BB)


def root_label(graph: BlockGraph, key: str) -> str:
    """How a root is named in the sentence: ``export 'e0'`` or ``device 'disk0'``."""
    if key.startswith(_EXPORT_BB):
        return f"export '{key[len(_EXPORT_BB) :]}'"
    backend = graph.backends.get(key)
    if backend is not None and backend.name:
        return f"device '{backend.name}'"
    return f"'{key}'"


def change_starts(journal: Journal) -> set[str]:
    """Where chains can have changed: the parents of the link slots the journal recorded."""
    return journal.changed_parents()


def affected_roots(graph: BlockGraph, touched: set[str]) -> list[str]:
    """Export and device roots at or above a key of ``touched``, in the staged graph (sorted)."""
    seen: set[str] = set()
    todo = [k for k in touched if k in graph.g]
    roots: set[str] = set()
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        if _is_guest_root(graph, key):
            roots.add(key)
        todo.extend(p for p in graph.g.predecessors(key) if p not in seen)
    return sorted(roots)


def guest_view_violations(session: Session, journal: Journal) -> list[Violation]:
    """V1 for one validated transaction: one violation per root whose guest reads change."""
    graph = session.graph
    runtime = session.runtime
    before_alloc = RuntimeAllocation(runtime, staged=False)
    after_alloc = RuntimeAllocation(runtime, staged=True)

    def driver_before(name: str) -> str | None:
        obj = runtime.driver_object(name, staged=False)
        if obj is not None:
            return obj.driver_name
        node = graph.nodes.get(name)
        return node.driver if node is not None and journal.had_node(name) else None

    def driver_after(name: str) -> str | None:
        node = graph.nodes.get(name)
        return node.driver if node is not None else None

    def child_after(parent: str, name: str) -> str | None:
        found = graph.child_edge(parent, name) if parent in graph.g else None
        return found[0] if found else None

    out: list[Violation] = []
    for key in affected_roots(graph, change_starts(journal)):
        if not journal.had_vertex(key):
            continue  # a new root had no guest view before
        old_top = journal.child_before(key, "root")
        new_top = child_after(key, "root")
        if old_top is None or new_top is None:
            continue
        old = served_layers(old_top, driver_before, journal.child_before)
        new = served_layers(new_top, driver_after, child_after)
        changes = view_changes(old, new, _Both(before_alloc, after_alloc, set(old)))
        if changes:
            layers = {c.before for c in changes} | {c.after for c in changes}
            nodes = [n for n in layers if n is not None]
            out.append(violation(key, root_label(graph, key), new_top, changes, nodes, "safe"))
    return out


class _Both:
    """Allocation of a layer from the side it belongs to (live before, prepared after)."""

    def __init__(self, before: RuntimeAllocation, after: RuntimeAllocation, old: set[str]) -> None:
        self.before, self.after, self.old = before, after, old

    def _side(self, layer: str) -> RuntimeAllocation:
        return self.before if layer in self.old else self.after

    def size(self, layer: str) -> int:
        return self._side(layer).size(layer)

    def allocated(self, layer: str, offset: int, length: int) -> list[tuple[int, int]]:
        return self._side(layer).allocated(layer, offset, length)

    def known(self, layer: str) -> bool:
        return self._side(layer).known(layer)
