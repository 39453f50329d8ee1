"""txgraph's QMPServer on its own event loop in a background thread (for wire tests)."""

from __future__ import annotations

import asyncio
import threading

from txgraph.qmp.engine import Engine
from txgraph.qmp.server import QMPServer

__all__ = ["ServerThread"]


class ServerThread:
    """Start with ``ServerThread(path)``; ``stop()`` closes the server and the loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.engine = Engine()
        self.loop = asyncio.new_event_loop()
        self.server = QMPServer(self.engine)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start(path))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
