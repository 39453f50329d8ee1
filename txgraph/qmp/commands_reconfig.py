"""QMP commands that reconfigure a live graph: snapshots, quorum, replace, filters, transaction.

QEMU 7.2 commands (arguments already validated against QSD's schema):
``blockdev-snapshot``, ``blockdev-snapshot-sync``, ``x-blockdev-change``,
``transaction`` (QEMU's action types only, exactly as QSD).

txgraph extensions (not in QSD's schema; their arguments are validated from
their own entries in :mod:`txgraph.qmp.qapi_ext`, by the same visitor, so the
errors have QAPI's texts and member paths):

* ``x-blockdev-replace`` — the upstream v9 ``blockdev-replace`` proposal
  (``blockdev-replace`` itself stays unknown, as in QSD 7.2);
* ``x-txgraph-replace-edges`` — replace-node with a parents mode, or a list of edges;
* ``x-txgraph-insert-filter`` / ``x-txgraph-remove-filter``;
* ``x-txgraph-transaction`` — ``transaction`` that also accepts every txgraph
  operation as an action type. It is a separate command because QSD's own
  ``transaction`` refuses unknown action types before running anything
  ("Parameter 'type' does not accept value ..."), and an extension must not
  change what a QEMU command answers.
"""

from __future__ import annotations

from typing import Any

from txgraph.jobs.backup import TRANSACTION_ACTIONS as JOB_ACTIONS
from txgraph.ops.filters import stage_insert_filter, stage_remove_filter
from txgraph.ops.qmp_transaction import run_transaction
from txgraph.ops.quorum import stage_x_blockdev_change
from txgraph.ops.replace import stage_blockdev_replace, stage_replace_edges
from txgraph.qmp.command_table import CommandContext, command

__all__: list[str] = []


# -- QEMU 7.2 commands --------------------------------------------------------------------
@command("blockdev-snapshot")
def _blockdev_snapshot(ctx: CommandContext, args: dict[str, Any]) -> Any:
    # QEMU runs it as a one-action transaction (qmp_blockdev_snapshot).
    run_transaction(ctx.session, [{"type": "blockdev-snapshot", "data": args}])
    return {}


@command("blockdev-snapshot-sync")
def _blockdev_snapshot_sync(ctx: CommandContext, args: dict[str, Any]) -> Any:
    run_transaction(ctx.session, [{"type": "blockdev-snapshot-sync", "data": args}])
    return {}


@command("x-blockdev-change")
def _x_blockdev_change(ctx: CommandContext, args: dict[str, Any]) -> Any:
    with ctx.session.transaction() as tx:
        stage_x_blockdev_change(ctx.session, tx, args)
    return {}


@command("transaction")
def _transaction(ctx: CommandContext, args: dict[str, Any]) -> Any:
    run_transaction(ctx.session, args["actions"], args.get("properties"), JOB_ACTIONS)
    return {}


# -- txgraph extensions -------------------------------------------------------------------
@command("x-blockdev-replace")
def _x_blockdev_replace(ctx: CommandContext, args: dict[str, Any]) -> Any:
    with ctx.session.transaction() as tx:
        stage_blockdev_replace(ctx.session, tx, args)
    return {}


@command("x-txgraph-replace-edges")
def _x_replace_edges(ctx: CommandContext, args: dict[str, Any]) -> Any:
    with ctx.session.transaction() as tx:
        moved = stage_replace_edges(ctx.session, tx, args)
    return {"moved": [{"parent": _parent_name(ctx, p), "child-name": n} for p, n in moved]}


@command("x-txgraph-insert-filter")
def _x_insert_filter(ctx: CommandContext, args: dict[str, Any]) -> Any:
    with ctx.session.transaction() as tx:
        stage_insert_filter(ctx.session, tx, args)
    return {}


@command("x-txgraph-remove-filter")
def _x_remove_filter(ctx: CommandContext, args: dict[str, Any]) -> Any:
    with ctx.session.transaction() as tx:
        stage_remove_filter(ctx.session, tx, args)
    return {}


@command("x-txgraph-transaction")
def _x_transaction(ctx: CommandContext, args: dict[str, Any]) -> Any:
    run_transaction(
        ctx.session, args["actions"], args.get("properties"), JOB_ACTIONS, drain_all=False
    )
    return {}


def _parent_name(ctx: CommandContext, key: str) -> str:
    """A graph key as users name it: node-name, or the backend's id."""
    backend = ctx.session.graph.backends.get(key)
    return backend.name if backend is not None else key
