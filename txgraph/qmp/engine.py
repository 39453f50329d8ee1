"""The in-process QMP engine: one dict in, one dict out.

``Engine.execute`` is what the socket server calls for every command after
capabilities negotiation, and what tests and the Python API call directly, so
both paths answer identically. It reproduces the dispatcher of QEMU's QMP
monitor (``qmp_dispatch``): unknown commands are ``CommandNotFound``, arguments
are validated against the QAPI schema before any side effect, and the ``id``
member is echoed verbatim.
"""

from __future__ import annotations

import logging
from typing import Any

from txgraph.errors import QMPError, TxgraphError
from txgraph.events import Subscriber
from txgraph.qmp.commands import COMMANDS, CommandContext

__all__ = ["Engine", "EventListener", "INTERNAL_ERROR"]

log = logging.getLogger(__name__)

#: The desc of the GenericError for a bug in txgraph: no Python text reaches a
#: client (QEMU has no such reply); the traceback goes to the log instead.
INTERNAL_ERROR = "Internal error in txgraph; see the server log"

#: receives each complete QMP event message (see :class:`txgraph.events.EventBus`)
EventListener = Subscriber


class Engine:
    """Dispatch QMP commands to txgraph operations on one live block graph.

    Events: the engine does not own a channel of its own; listeners subscribe
    to the session's :class:`~txgraph.events.EventBus`, which carries the
    block layer's, the data plane's and (later) the jobs' events alike.
    """

    def __init__(self, context: CommandContext | None = None) -> None:
        self.context = context if context is not None else CommandContext()
        self.events = self.context.session.events

    # -- events ------------------------------------------------------------------------
    def add_event_listener(self, listener: EventListener) -> None:
        self.events.subscribe(listener)

    def remove_event_listener(self, listener: EventListener) -> None:
        self.events.unsubscribe(listener)

    def emit_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Deliver a QMP event (with QEMU's ``timestamp`` shape) to every listener."""
        self.events.emit(name, data)

    # -- commands ----------------------------------------------------------------------
    def command_names(self) -> list[str]:
        return sorted(COMMANDS)

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run one QMP command message and return the full reply message."""
        reply: dict[str, Any]
        try:
            reply = {"return": self._dispatch(message)}
        except TxgraphError as err:
            reply = {"error": err.to_qmp()}
        except Exception:  # a bug must not take the server down; the graph was rolled back
            log.exception("QMP command %r failed unexpectedly", message.get("execute"))
            reply = {"error": {"class": "GenericError", "desc": INTERNAL_ERROR}}
        if "id" in message:
            reply["id"] = message["id"]
        return reply

    def _dispatch(self, message: dict[str, Any]) -> Any:
        from txgraph.qmp.qapi import check_message, validate_arguments

        name, arguments = check_message(message)
        handler = COMMANDS.get(name)
        if handler is None:
            raise QMPError(f"The command {name} has not been found", "CommandNotFound")
        typed = validate_arguments(name, arguments)
        # One command at a time against the session, and never beside a job's
        # completion (QEMU runs both in its main loop).
        with self.context.session.lock:
            jobs = self.context.session.jobs
            if jobs is not None:
                jobs.run_pending_exits()  # job_exit BHs that are due run first
            return handler(self.context, typed)
