"""Applying a permission refresh inside a transaction.

``compute_refresh`` (txgraph.model.perm_refresh) decides; this module records
each edge change in the transaction (QEMU's ``bdrv_child_set_perm`` registers
an undo for the same reason) so an abort restores every perm and shared-perm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from txgraph.checker import check
from txgraph.errors import BlockError
from txgraph.model.node import BlockNode
from txgraph.model.perm_bits import Perm
from txgraph.model.perm_refresh import compute_refresh
from txgraph.ops.undo_log import Transaction

__all__ = ["refresh_perms"]


def refresh_perms(
    session: Any,
    tx: Transaction,
    roots: Iterable[str],
    *,
    writable_after: Callable[[BlockNode], bool] | None = None,
) -> None:
    """``bdrv_refresh_perms`` over the roots' subtrees; raises QEMU's P3/P4 errors."""

    def driver_check(node: BlockNode, perm: Perm, shared: Perm) -> None:
        # A prepare step: image locks are taken now (their errors are QEMU's
        # open-time errors) and given back on abort.
        tx.rt.check_perm(node.name, int(perm), int(shared))

    roots = list(roots)
    # A node whose alignment rose at a reopen commit is re-checked by the next refresh
    # that covers it (QEMU re-runs every node's checks over the whole subtree), even
    # where its own edges keep their values.
    walked = roots + _aligned_below(session.graph, tx.rt.aligned_nodes(), roots)
    try:
        changes = compute_refresh(
            session.graph,
            walked,
            writable_after=writable_after,
            driver_check=driver_check,
            stale=tx.lost_parents,
        )
    except BlockError as err:
        if err.rule in ("P3-perm-conflict", "P4-read-only") and err.explanation is None:
            err.explanation = _checker_explanation(session, tx, roots, writable_after)
        raise
    for change in changes:
        tx.set_edge_perm(change.parent, change.name, change.perm, change.shared)


def _aligned_below(graph: Any, aligned: frozenset[str], roots: list[str]) -> list[str]:
    """The nodes of ``aligned`` in the roots' subtrees (none in the common case)."""
    if not aligned:
        return []
    tops = set(roots)
    found: list[str] = []
    for name in sorted(aligned - tops):
        if name not in graph.nodes:
            continue
        seen, todo = {name}, [name]
        while todo:
            up = [p for n in todo for p, _e in graph.parents(n) if p in graph.nodes]
            if tops.intersection(up):
                found.append(name)
                break
            todo = [p for p in up if p not in seen]
            seen.update(todo)
    return found


def _checker_explanation(
    session: Any,
    tx: Transaction,
    roots: list[str],
    writable_after: Callable[[BlockNode], bool] | None,
) -> Any:
    """Stage the permissions the graph would get and let the invariant checker explain them.

    The transaction is about to abort, which undoes these staged values too;
    the verdict (rule, nodes, edges, sentence from the z3 unsat core) travels
    beside QEMU's error text.
    """
    collected: list[BlockError] = []
    would_be = compute_refresh(
        session.graph,
        roots,
        writable_after=writable_after,
        collect=collected,
        stale=tx.lost_parents,
    )
    for change in would_be:
        tx.set_edge_perm(change.parent, change.name, change.perm, change.shared)
    return check(session.graph, tx.touched, policy=session.policy).to_dict()
