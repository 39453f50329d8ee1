"""The QMP command table: QMP names mapped to txgraph operations.

Each handler receives the shared :class:`CommandContext` and the arguments
already validated (and typed) against the QAPI schema, and returns the
``return`` value of the reply. Handlers raise :class:`txgraph.errors.TxgraphError`
subclasses carrying QEMU's error text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from txgraph import __version__ as _txgraph_version

__all__ = ["COMMANDS", "CommandContext", "command", "QEMU_VERSION"]

#: The version txgraph answers with: the QEMU release whose behaviour it reproduces.
QEMU_VERSION: dict[str, Any] = {
    "qemu": {"micro": 22, "minor": 2, "major": 7},
    "package": f"txgraph {_txgraph_version}",
}

Handler = Callable[["CommandContext", dict[str, Any]], Any]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of QMP command ``name``."""

    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn

    return register


class CommandContext:
    """Everything a command may touch: the live graph, the data plane, objects.

    Filled in by :mod:`txgraph.ops`; kept here as a plain holder so the QMP
    layer does not need to know how the engine is assembled.
    """

    def __init__(self, session: Any = None) -> None:
        if session is None:
            from txgraph.ops.session import Session

            session = Session()
        self.session = session
        self.emit_event: Callable[[str, dict[str, Any] | None], None] = lambda name, data=None: None


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
    from txgraph.ops.blockdev import blockdev_add

    blockdev_add(ctx.session, args)
    return {}


@command("blockdev-del")
def _blockdev_del(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.blockdev import blockdev_del

    blockdev_del(ctx.session, args["node-name"])
    return {}


@command("object-add")
def _object_add(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.objects import object_add

    object_add(ctx.session, args)
    return {}


@command("object-del")
def _object_del(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.objects import object_del

    object_del(ctx.session, args["id"])
    return {}


@command("query-named-block-nodes")
def _query_named_block_nodes(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.query import named_block_nodes

    return named_block_nodes(ctx.session, bool(args.get("flat", False)))


@command("x-debug-query-block-graph")
def _query_block_graph(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.query import block_graph

    return block_graph(ctx.session)


@command("query-block")
def _query_block(ctx: CommandContext, args: dict[str, Any]) -> Any:
    # Only monitor-named BlockBackends (devices, -drive) are listed; exports'
    # backends are anonymous, so a storage daemon without devices has none.
    from txgraph.ops.query import query_block

    return query_block(ctx.session)


# Reconfiguration commands (reopen, snapshots, quorum changes, replace, filters,
# transaction) register themselves in their own module.
import txgraph.qmp.commands_reconfig  # noqa: E402,F401


@command("blockdev-reopen")
def _blockdev_reopen(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.reopen import blockdev_reopen

    warnings = blockdev_reopen(ctx.session, args["options"])
    ctx.session.last_warnings = [w.to_json() for w in warnings]
    for warning in warnings:
        # An extension event: QMP clients ignore events they do not know.
        ctx.emit_event("X_TXGRAPH_REOPEN_WARNING", warning.to_json())
    return {}


# -- exports -------------------------------------------------------------------------------
@command("nbd-server-start")
def _nbd_server_start(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.exports import nbd_server_start

    nbd_server_start(ctx.session, args)
    return {}


@command("nbd-server-stop")
def _nbd_server_stop(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.exports import nbd_server_stop

    nbd_server_stop(ctx.session)
    return {}


@command("block-export-add")
def _block_export_add(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.exports import stage_block_export_add

    with ctx.session.transaction() as tx:
        stage_block_export_add(ctx.session, tx, args)
    return {}


@command("block-export-del")
def _block_export_del(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.exports import stage_block_export_del

    with ctx.session.transaction() as tx:
        stage_block_export_del(ctx.session, tx, args)
    return {}


@command("query-block-exports")
def _query_block_exports(ctx: CommandContext, args: dict[str, Any]) -> Any:
    from txgraph.ops.exports import query_block_exports

    return query_block_exports(ctx.session)
