"""The QMP ``transaction`` command: several actions, all or nothing.

Reproduces blockdev.c ``qmp_transaction`` (reference/qemu-graph.md §4.2):
the actions run in list order, each staging its changes at once in one shared
:class:`~txgraph.ops.undo_log.Transaction`; the first error aborts the
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

from collections.abc import Callable, Mapping
from typing import Any

from txgraph.errors import BlockError
from txgraph.ops.blockdev import stage_blockdev_add, stage_blockdev_del
from txgraph.ops.deferred import defer_to_end, finish
from txgraph.ops.filters import stage_insert_filter, stage_remove_filter
from txgraph.ops.quorum import stage_x_blockdev_change
from txgraph.ops.reopen import stage_blockdev_reopen
from txgraph.ops.replace import stage_blockdev_replace, stage_replace_edges
from txgraph.ops.session import Session
from txgraph.ops.snapshot import stage_blockdev_snapshot, stage_blockdev_snapshot_sync
from txgraph.ops.undo_log import Transaction

__all__ = ["defer_to_end", "finish", "stage_action", "stage_transaction", "run_transaction",
           "QEMU_ACTIONS", "EXTENSION_ACTIONS", "ABORT_TEXT"]

ABORT_TEXT = "Transaction aborted using Abort action"

#: QEMU 7.2 action types txgraph implements (the rest of the schema's list are jobs/bitmaps)
QEMU_ACTIONS = ("abort", "blockdev-snapshot", "blockdev-snapshot-sync")

#: txgraph's own action types, each the stage function of one command
EXTENSION_ACTIONS = ("x-txgraph-blockdev-add", "x-txgraph-blockdev-del", "x-txgraph-blockdev-reopen",
                     "x-txgraph-replace", "x-txgraph-insert-filter", "x-txgraph-remove-filter",
                     "x-blockdev-change")


def _replace(session: Session, tx: Transaction, data: dict[str, Any]) -> None:
    if "parent-type" in data:
        stage_blockdev_replace(session, tx, data)
    else:
        stage_replace_edges(session, tx, data)


_STAGES: dict[str, Callable[[Session, Transaction, dict[str, Any]], Any]] = {
    "blockdev-snapshot": stage_blockdev_snapshot,
    "blockdev-snapshot-sync": stage_blockdev_snapshot_sync,
    "x-txgraph-blockdev-add": stage_blockdev_add,
    "x-txgraph-blockdev-del": lambda s, tx, d: stage_blockdev_del(s, tx, d["node-name"]),
    "x-txgraph-blockdev-reopen": lambda s, tx, d: stage_blockdev_reopen(s, tx, d["options"]),
    "x-txgraph-replace": _replace,
    "x-txgraph-insert-filter": stage_insert_filter,
    "x-txgraph-remove-filter": stage_remove_filter,
    "x-blockdev-change": stage_x_blockdev_change,
}


#: a job action's stage: ``(session, tx, data, group)``; ``group`` is None for
#: ``completion-mode: individual``, else a list shared by the transaction's job actions
#: (the first one puts the shared JobTxn there)
JobStage = Callable[[Session, Transaction, dict[str, Any], "list[Any] | None"], Any]


def stage_action(session: Session, tx: Transaction, kind: str, data: dict[str, Any]) -> None:
    """Stage one action (arguments already validated by the QMP layer)."""
    if kind == "abort":
        # abort_prepare: always fails, so the whole transaction is rolled back
        raise BlockError(ABORT_TEXT)
    stage = _STAGES.get(kind)
    if stage is None:
        raise BlockError(f"Action '{kind}' is not supported by txgraph")
    stage(session, tx, data)


def stage_transaction(session: Session, tx: Transaction, actions: list[dict[str, Any]],
                      properties: dict[str, Any] | None = None,
                      job_stages: Mapping[str, JobStage] | None = None) -> None:
    """``qmp_transaction`` inside an open transaction: actions in order, then the commit steps.

    Job actions (``blockdev-backup``) come from the jobs layer (``job_stages``);
    only they accept ``completion-mode: grouped``, every other action refuses it in
    its prepare with QEMU's text.
    """
    mode = (properties or {}).get("completion-mode", "individual")
    jobs = job_stages or {}
    group: list[Any] | None = [] if mode == "grouped" else None
    for action in actions:
        kind = action["type"]
        if kind in jobs:
            jobs[kind](session, tx, action.get("data", {}), group)
            continue
        if mode != "individual" and kind != "abort":
            raise BlockError(f"Action '{kind}' does not support Transaction property "
                             f"completion-mode = {mode}")
        stage_action(session, tx, kind, action.get("data", {}))
    finish(tx)


def run_transaction(session: Session, actions: list[dict[str, Any]],
                    properties: dict[str, Any] | None = None,
                    job_stages: Mapping[str, JobStage] | None = None) -> None:
    """Run ``actions`` as one transaction of ``session``."""
    with session.transaction() as tx:
        stage_transaction(session, tx, actions, properties, job_stages)
