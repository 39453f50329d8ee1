"""txgraph: a reconfiguration engine with a formal transaction model for QEMU block graphs.

The public surface, most used first:

- :class:`Engine` — ``execute(qmp_message) -> reply``, answering like qemu-storage-daemon 7.2;
- :class:`Session` — the live state a command works on (graph, data plane, objects);
- :class:`BlockGraph` — the graph model; :func:`check` — the invariant checker;
- :class:`TxgraphError` and its subclasses — every deliberate error, with QEMU's text.

Attributes are imported lazily so ``import txgraph`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Engine": "txgraph.qmp.engine",
    "Session": "txgraph.ops.session",
    "Transaction": "txgraph.ops.undo_log",
    "BlockGraph": "txgraph.model.graph",
    "check": "txgraph.checker",
    "Verdict": "txgraph.checker",
    "TxgraphError": "txgraph.errors",
    "BlockError": "txgraph.errors",
    "OpenError": "txgraph.errors",
    "QAPIError": "txgraph.errors",
    "InvariantViolation": "txgraph.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'txgraph' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
