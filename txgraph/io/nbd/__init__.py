"""NBD: protocol constants, an export server and a client (used by the ``nbd`` driver)."""

from __future__ import annotations

from txgraph.io.nbd.client import NbdClient, NbdError
from txgraph.io.nbd.server import NbdServer

__all__ = ["NbdClient", "NbdError", "NbdServer"]
