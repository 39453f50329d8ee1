"""The QMP command table: QMP names mapped to txgraph operations.

Each handler receives the shared :class:`CommandContext` and the arguments
already validated (and typed) against the QAPI schema, and returns the
``return`` value of the reply. Handlers raise :class:`txgraph.errors.TxgraphError`
subclasses carrying QEMU's error text. The registry itself is
:mod:`txgraph.qmp.command_table`; importing this module registers every
command (the reconfiguration and plan commands live in their own modules).
"""

from __future__ import annotations

from typing import Any

from txgraph.ops.blockdev import blockdev_add, blockdev_del
from txgraph.ops.exports import (
    nbd_server_start,
    nbd_server_stop,
    query_block_exports,
    stage_block_export_add,
    stage_block_export_del,
)
from txgraph.ops.objects import object_add, object_del
from txgraph.ops.query import block_graph, named_block_nodes, query_block
from txgraph.ops.reopen import blockdev_reopen
from txgraph.qmp import commands_jobs, commands_plan, commands_reconfig
from txgraph.qmp.command_table import COMMANDS, QEMU_VERSION, CommandContext, command

__all__ = ["COMMANDS", "CommandContext", "command", "QEMU_VERSION"]

#: the command modules that register into COMMANDS besides this one
_REGISTERED_ELSEWHERE = (commands_reconfig, commands_plan, commands_jobs)


@command("query-version")
def _query_version(ctx: CommandContext, args: dict[str, Any]) -> Any:
    return QEMU_VERSION


@command("query-commands")
def _query_commands(ctx: CommandContext, args: dict[str, Any]) -> Any:
    # qmp_capabilities is a command too, answered by the connection layer.
    return [{"name": name} for name in sorted({*COMMANDS, "qmp_capabilities"})]


# -- block graph commands ------------------------------------------------------------------
@command("blockdev-add")
def _blockdev_add(ctx: CommandContext, args: dict[str, Any]) -> Any:
    blockdev_add(ctx.session, args)
    return {}


@command("blockdev-del")
def _blockdev_del(ctx: CommandContext, args: dict[str, Any]) -> Any:
    blockdev_del(ctx.session, args["node-name"])
    return {}


@command("object-add")
def _object_add(ctx: CommandContext, args: dict[str, Any]) -> Any:
    object_add(ctx.session, args)
    return {}


@command("object-del")
def _object_del(ctx: CommandContext, args: dict[str, Any]) -> Any:
    object_del(ctx.session, args["id"])
    return {}


@command("qom-list")
def _qom_list(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.qom import qom_list

    return qom_list(ctx.session, args["path"])


@command("qom-get")
def _qom_get(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.qom import qom_get

    return qom_get(ctx.session, args["path"], args["property"])


@command("query-named-block-nodes")
def _query_named_block_nodes(ctx: CommandContext, args: dict[str, Any]) -> Any:
    return named_block_nodes(ctx.session, bool(args.get("flat", False)))


@command("x-debug-query-block-graph")
def _query_block_graph(ctx: CommandContext, args: dict[str, Any]) -> Any:
    return block_graph(ctx.session)


@command("query-block")
def _query_block(ctx: CommandContext, args: dict[str, Any]) -> Any:
    # Only monitor-named BlockBackends (devices, -drive) are listed; exports'
    # backends are anonymous, so a storage daemon without devices has none.
    return query_block(ctx.session)


@command("blockdev-reopen")
def _blockdev_reopen(ctx: CommandContext, args: dict[str, Any]) -> Any:
    warnings = blockdev_reopen(ctx.session, args["options"])
    ctx.session.last_warnings = [w.to_json() for w in warnings]
    for warning in warnings:
        # An extension event: QMP clients ignore events they do not know.
        ctx.emit_event("X_TXGRAPH_REOPEN_WARNING", warning.to_json())
    return {}


# -- exports -------------------------------------------------------------------------------
@command("nbd-server-start")
def _nbd_server_start(ctx: CommandContext, args: dict[str, Any]) -> Any:
    nbd_server_start(ctx.session, args)
    return {}


@command("nbd-server-stop")
def _nbd_server_stop(ctx: CommandContext, args: dict[str, Any]) -> Any:
    nbd_server_stop(ctx.session)
    return {}


@command("block-export-add")
def _block_export_add(ctx: CommandContext, args: dict[str, Any]) -> Any:
    with ctx.session.transaction() as tx:
        stage_block_export_add(ctx.session, tx, args)
    return {}


@command("block-export-del")
def _block_export_del(ctx: CommandContext, args: dict[str, Any]) -> Any:
    with ctx.session.transaction() as tx:
        stage_block_export_del(ctx.session, tx, args)
    return {}


@command("query-block-exports")
def _query_block_exports(ctx: CommandContext, args: dict[str, Any]) -> Any:
    return query_block_exports(ctx.session)
