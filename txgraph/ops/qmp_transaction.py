"""The QMP ``transaction`` command: several actions, all or nothing.

Reproduces blockdev.c ``qmp_transaction`` (reference/qemu-graph.md §4.2):
everything is drained first (``bdrv_drain_all``, whatever happens next), then
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
from dataclasses import dataclass
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

__all__ = [
    "defer_to_end",
    "finish",
    "stage_action",
    "stage_transaction",
    "run_transaction",
    "ActionKind",
    "ACTIONS",
    "QEMU_ACTIONS",
    "EXTENSION_ACTIONS",
    "ABORT_TEXT",
]

ABORT_TEXT = "Transaction aborted using Abort action"

Stage = Callable[[Session, Transaction, dict[str, Any]], Any]


@dataclass(frozen=True)
class ActionKind:
    """One transaction action type: how it stages, and what its ``data`` is.

    ``data`` is None for QEMU's own types (QSD's schema describes them);
    for txgraph's it names the command whose arguments ``data`` holds, or a
    type of txgraph's schema (:mod:`txgraph.qmp.qapi_ext`). ``stage`` is None
    for ``abort``, which always fails (``abort_prepare``).
    """

    stage: Stage | None
    data: str | None = None


def _replace(session: Session, tx: Transaction, data: dict[str, Any]) -> None:
    if "parent-type" in data:
        stage_blockdev_replace(session, tx, data)
    else:
        stage_replace_edges(session, tx, data)


#: Every action type txgraph implements, the one list of them: QEMU 7.2's (the rest of
#: its schema's kinds are jobs and bitmaps) first, then txgraph's, each the stage
#: function of one command. The QMP schema of ``x-txgraph-transaction`` is built from it.
ACTIONS: dict[str, ActionKind] = {
    "abort": ActionKind(None),
    "blockdev-snapshot": ActionKind(stage_blockdev_snapshot),
    "blockdev-snapshot-sync": ActionKind(stage_blockdev_snapshot_sync),
    "x-txgraph-blockdev-add": ActionKind(stage_blockdev_add, "blockdev-add"),
    "x-txgraph-blockdev-del": ActionKind(
        lambda s, tx, d: stage_blockdev_del(s, tx, d["node-name"]), "blockdev-del"
    ),
    "x-txgraph-blockdev-reopen": ActionKind(
        lambda s, tx, d: stage_blockdev_reopen(s, tx, d["options"]), "blockdev-reopen"
    ),
    "x-txgraph-replace": ActionKind(_replace, "x-txgraph.ReplaceActionData"),
    "x-txgraph-insert-filter": ActionKind(stage_insert_filter, "x-txgraph-insert-filter"),
    "x-txgraph-remove-filter": ActionKind(stage_remove_filter, "x-txgraph-remove-filter"),
    "x-blockdev-change": ActionKind(stage_x_blockdev_change, "x-blockdev-change"),
}

#: QEMU 7.2 action types txgraph implements
QEMU_ACTIONS = tuple(k for k, a in ACTIONS.items() if a.data is None)

#: txgraph's own action types (``x-txgraph-transaction`` only)
EXTENSION_ACTIONS = tuple(k for k, a in ACTIONS.items() if a.data is not None)


#: a job action's stage: ``(session, tx, data, group)``; ``group`` is None for
#: ``completion-mode: individual``, else a list shared by the transaction's job actions
#: (the first one puts the shared JobTxn there)
JobStage = Callable[[Session, Transaction, dict[str, Any], "list[Any] | None"], Any]


def stage_action(session: Session, tx: Transaction, kind: str, data: dict[str, Any]) -> None:
    """Stage one action (arguments already validated by the QMP layer)."""
    action = ACTIONS.get(kind)
    if action is None:
        raise BlockError(f"Action '{kind}' is not supported by txgraph")
    if action.stage is None:
        # abort_prepare: always fails, so the whole transaction is rolled back
        raise BlockError(ABORT_TEXT)
    action.stage(session, tx, data)


def stage_transaction(
    session: Session,
    tx: Transaction,
    actions: list[dict[str, Any]],
    properties: dict[str, Any] | None = None,
    job_stages: Mapping[str, JobStage] | None = None,
) -> None:
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
            raise BlockError(
                f"Action '{kind}' does not support Transaction property completion-mode = {mode}"
            )
        stage_action(session, tx, kind, action.get("data", {}))
    finish(tx)


def run_transaction(
    session: Session,
    actions: list[dict[str, Any]],
    properties: dict[str, Any] | None = None,
    job_stages: Mapping[str, JobStage] | None = None,
    *,
    drain_all: bool = True,
) -> None:
    """Run ``actions`` as one transaction of ``session``: everything drained first (the
    ``bdrv_drain_all`` that starts ``qmp_transaction``), then one undo-log transaction.
    txgraph's own ``x-txgraph-transaction`` passes ``drain_all=False``: it is not a QEMU
    command, and its change drains once, only the nodes it touches."""
    if drain_all:
        session.drain_all()
    with session.transaction() as tx:
        stage_transaction(session, tx, actions, properties, job_stages)
