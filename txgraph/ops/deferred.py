"""Commit-phase steps of QMP ``transaction`` actions, staged after the last action.

QEMU runs some of an action's work in its *commit* callback (an external
snapshot makes the old node read-only there); ``tran_commit`` calls them
newest first. txgraph stages that work after every action of the
transaction, newest first too, inside the same undo log, so it is still
undone if the transaction fails afterwards (for example because the
checker refuses the final graph). Reference: qemu-graph.md §4.1, §4.2.

Lock discipline: the pending list of a transaction is touched only by the
thread staging it (the engine's command lock); entries die with the
transaction (weak keys).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from txgraph.ops.undo_log import Transaction

__all__ = ["defer_to_end", "finish"]

_DEFERRED: weakref.WeakKeyDictionary[Transaction, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)


def defer_to_end(tx: Transaction, fn: Callable[[], None]) -> None:
    """Stage ``fn`` after every action of ``tx`` (QEMU: an action's commit callback)."""
    _DEFERRED.setdefault(tx, []).append(fn)


def finish(tx: Transaction) -> None:
    """Stage the deferred steps, newest first (``tran_commit`` runs commits LIFO)."""
    pending = _DEFERRED.pop(tx, [])
    while pending:
        pending.pop()()
        pending.extend(_DEFERRED.pop(tx, []))
