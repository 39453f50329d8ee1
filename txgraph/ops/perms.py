"""Applying a permission refresh inside a transaction.

``compute_refresh`` (txgraph.model.permissions) decides; this module records
each edge change in the transaction (QEMU's ``bdrv_child_set_perm`` registers
an undo for the same reason) so an abort restores every perm and shared-perm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from txgraph.model.node import BlockNode
from txgraph.model.perm import Perm
from txgraph.model.permissions import compute_refresh
from txgraph.ops.transaction import Transaction

__all__ = ["refresh_perms"]


def refresh_perms(session: Any, tx: Transaction, roots: Iterable[str], *,
                  writable_after: Callable[[BlockNode], bool] | None = None) -> None:
    """``bdrv_refresh_perms`` over the roots' subtrees; raises QEMU's P3/P4 errors."""
    def driver_check(node: BlockNode, perm: Perm, shared: Perm) -> None:
        undo = session.runtime.check_perm(node.name, int(perm), int(shared))
        if undo is not None:
            tx.undo(undo)

    changes = compute_refresh(session.graph, roots, writable_after=writable_after,
                              driver_check=driver_check)
    for change in changes:
        tx.set_edge_perm(change.parent, change.name, change.perm, change.shared)
