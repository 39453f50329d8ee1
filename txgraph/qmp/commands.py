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
