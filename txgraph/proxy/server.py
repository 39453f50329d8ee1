"""The proxy's QMP socket: txgraph's QMP server, offering what the upstream QEMU offers.

:class:`ProxyServer` is :class:`txgraph.qmp.server.QMPServer` (greeting,
negotiation, ids, parse errors, events, several clients) with two differences
that make it answer as the QEMU behind it: the greeting offers the upstream's
capabilities (QEMU 7.2 and qemu-storage-daemon offer ``oob``), and a client that
enabled ``oob`` may send ``exec-oob``, which goes to QEMU unchanged (QEMU
answers it: in a storage daemon every command says ``The command X does not
support OOB``). A client without ``oob`` gets QEMU's ``QMP input member
'exec-oob' is unexpected`` from the shared message check. Not reproduced: an
out-of-band reply overtaking the in-band commands queued before it (the proxy
runs every command in order through its pipeline).

``_oob`` (the clients that enabled oob) belongs to the event-loop thread, like
the server's client set; nothing else touches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from txgraph.proxy.engine import ProxyEngine
from txgraph.qmp.server import QMPServer

__all__ = ["ProxyServer", "run_proxy"]


class ProxyServer(QMPServer):
    """A QMP server in front of a :class:`ProxyEngine` (see module doc)."""

    def __init__(self, engine: ProxyEngine) -> None:
        super().__init__(engine)
        offered = engine.upstream.greeting.get("QMP", {}).get("capabilities", [])
        self.capabilities = tuple(str(c) for c in offered)
        self._oob: set[Any] = set()

    def _capabilities(self, client: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        reply = super()._capabilities(client, arguments)
        if "oob" in arguments.get("enable", []):
            self._oob.add(client)
        return reply

    def _reply(self, client: Any, message: Any) -> dict[str, Any]:
        if isinstance(message, dict) and "exec-oob" in message and client in self._oob:
            return self._run_engine(message)
        return super()._reply(client, message)


async def _serve(path: str, engine: ProxyEngine) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    server = ProxyServer(engine)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await server.start(path)
        await server.serve_forever()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.close()


def run_proxy(path: str, engine: ProxyEngine) -> None:
    """Serve until SIGTERM/SIGINT (the socket file is removed on the way out).

    :raise txgraph.qmp.server.ServeError: the socket cannot be created.
    """
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_serve(path, engine))
