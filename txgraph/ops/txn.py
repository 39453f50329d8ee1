"""The QMP ``transaction`` command: several actions, all or nothing.

Reproduces blockdev.c ``qmp_transaction`` (reference/qemu-graph.md §4.2):
the actions run in list order, each staging its changes at once in one shared
:class:`~txgraph.ops.transaction.Transaction`; the first error aborts the
whole transaction, which undoes every action newest first (QEMU's
``tran_abort``), otherwise everything commits. Permissions are only required
to hold at the transaction boundary, as in QEMU.

Work QEMU does in an action's *commit* callback (making the old node of an
external snapshot read-only) is registered with :func:`defer_to_end` and
staged after the last action, newest first like ``tran_commit``; being staged
in the same transaction, it is undone if the transaction still fails (for
example because txgraph's checker refuses the final graph).

Besides QEMU's action types (``abort``, ``blockdev-snapshot``,
``blockdev-snapshot-sync``) every txgraph graph operation is an action type
here (:data:`EXTENSION_ACTIONS`), which is what makes e.g. "add a filter,
move three edges, delete the old node" one atomic step.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from txgraph.errors import BlockError
from txgraph.ops.session import Session
from txgraph.ops.transaction import Transaction

__all__ = ["defer_to_end", "finish", "stage_action", "stage_transaction", "run_transaction",
           "QEMU_ACTIONS", "EXTENSION_ACTIONS", "ABORT_TEXT"]

ABORT_TEXT = "Transaction aborted using Abort action"

#: QEMU 7.2 action types txgraph implements (the rest of the schema's list are jobs/bitmaps)
QEMU_ACTIONS = ("abort", "blockdev-snapshot", "blockdev-snapshot-sync")

#: txgraph's own action types, each the stage function of one command
EXTENSION_ACTIONS = ("x-txgraph-blockdev-add", "x-txgraph-blockdev-del", "x-txgraph-blockdev-reopen",
                     "x-txgraph-replace", "x-txgraph-insert-filter", "x-txgraph-remove-filter",
                     "x-blockdev-change")

_DEFERRED: weakref.WeakKeyDictionary[Transaction, list[Callable[[], None]]] = \
    weakref.WeakKeyDictionary()


def defer_to_end(tx: Transaction, fn: Callable[[], None]) -> None:
    """Stage ``fn`` after every action of ``tx`` (QEMU: an action's commit callback)."""
    _DEFERRED.setdefault(tx, []).append(fn)


def finish(tx: Transaction) -> None:
    """Stage the deferred steps, newest first (``tran_commit`` runs commits LIFO)."""
    pending = _DEFERRED.pop(tx, [])
    while pending:
        pending.pop()()
        pending.extend(_DEFERRED.pop(tx, []))


def stage_action(session: Session, tx: Transaction, kind: str, data: dict[str, Any]) -> None:
    """Stage one action (arguments already validated by the QMP layer)."""
    if kind == "abort":
        # abort_prepare: always fails, so the whole transaction is rolled back
        raise BlockError(ABORT_TEXT)
    if kind == "blockdev-snapshot":
        from txgraph.ops.snapshot import stage_blockdev_snapshot

        stage_blockdev_snapshot(session, tx, data)
    elif kind == "blockdev-snapshot-sync":
        from txgraph.ops.snapshot import stage_blockdev_snapshot_sync

        stage_blockdev_snapshot_sync(session, tx, data)
    elif kind == "x-txgraph-blockdev-add":
        from txgraph.ops.blockdev import stage_blockdev_add

        stage_blockdev_add(session, tx, data)
    elif kind == "x-txgraph-blockdev-del":
        from txgraph.ops.blockdev import stage_blockdev_del

        stage_blockdev_del(session, tx, data["node-name"])
    elif kind == "x-txgraph-blockdev-reopen":
        try:
            from txgraph.ops.reopen import stage_blockdev_reopen
        except ImportError as err:  # pragma: no cover - reopen is being written in parallel
            raise BlockError("blockdev-reopen is not available in this build") from err
        stage_blockdev_reopen(session, tx, data["options"])
    elif kind == "x-txgraph-replace":
        from txgraph.ops.replace import stage_blockdev_replace, stage_replace_edges

        if "parent-type" in data:
            stage_blockdev_replace(session, tx, data)
        else:
            stage_replace_edges(session, tx, data)
    elif kind == "x-txgraph-insert-filter":
        from txgraph.ops.filters import stage_insert_filter

        stage_insert_filter(session, tx, data)
    elif kind == "x-txgraph-remove-filter":
        from txgraph.ops.filters import stage_remove_filter

        stage_remove_filter(session, tx, data)
    elif kind == "x-blockdev-change":
        from txgraph.ops.quorum import stage_x_blockdev_change

        stage_x_blockdev_change(session, tx, data)
    else:
        raise BlockError(f"Action '{kind}' is not supported by txgraph")


def stage_transaction(session: Session, tx: Transaction, actions: list[dict[str, Any]],
                      properties: dict[str, Any] | None = None) -> None:
    """``qmp_transaction`` inside an open transaction: actions in order, then the commit steps.

    ``completion-mode: grouped`` only concerns backup jobs; every action
    txgraph has refuses it in its prepare, with QEMU's text.
    """
    mode = (properties or {}).get("completion-mode", "individual")
    for action in actions:
        kind = action["type"]
        if mode != "individual" and kind != "abort":
            raise BlockError(f"Action '{kind}' does not support Transaction property "
                             f"completion-mode = {mode}")
        stage_action(session, tx, kind, action.get("data", {}))
    finish(tx)


def run_transaction(session: Session, actions: list[dict[str, Any]],
                    properties: dict[str, Any] | None = None) -> None:
    """Run ``actions`` as one transaction of ``session``."""
    with session.transaction() as tx:
        stage_transaction(session, tx, actions, properties)
