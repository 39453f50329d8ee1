"""The QMP command registry: the table, the ``@command`` decorator and the context.

The command modules (:mod:`txgraph.qmp.commands`, ``commands_reconfig``,
``commands_plan``) register their handlers here; keeping the registry apart
from them is what lets them import it without importing each other.

Lock discipline: the table is filled at import time and only read afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from txgraph import __version__ as _txgraph_version
from txgraph.ops.session import Session

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
            session = Session()
        self.session = session

    def emit_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """A QMP event into the one channel, the session's :class:`~txgraph.events.EventBus`."""
        self.session.emit_event(name, data)
