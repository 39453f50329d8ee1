"""txgraph: a reconfiguration engine with a formal transaction model for QEMU block graphs.

The public surface, most used first:

- :class:`Engine` — ``execute(qmp_message) -> reply``, answering like qemu-storage-daemon 7.2;
- :class:`Session` — the live state a command works on (graph, data plane, objects);
- :class:`Transaction` — the undo log every command stages its changes in;
- :class:`BlockGraph` — the graph model; :func:`check` — the invariant checker, which
  returns a :class:`Verdict` of :class:`Violation` entries;
- :class:`TxgraphError` and its subclasses — every deliberate error, with QEMU's text.

Everything named in ``__all__`` is imported here statically, so type checkers and
editors see the real classes (not ``Any``). The price is that ``import txgraph``
loads the engine (networkx included; z3 stays lazy): about 0.2 s of import time
(``python -X importtime -c 'import txgraph'``, 3 ms with the former lazy loader).
tests/unit/api/test_exports.py keeps the list, the documentation and what static
analysers see in step.
"""

from __future__ import annotations

# Defined before the imports below: plan/ and qmp/ read it while this package is
# still initialising (``from txgraph import __version__``).
__version__ = "0.1.0"

from txgraph.checker import Verdict, Violation, check
from txgraph.errors import (
    BlockError,
    InvariantViolation,
    IOFailure,
    OpenError,
    PermissionConflict,
    QAPIError,
    QMPError,
    TxgraphError,
)
from txgraph.model.graph import BlockGraph
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction
from txgraph.qmp.engine import Engine

__all__ = [
    "__version__",
    "Engine",
    "Session",
    "Transaction",
    "BlockGraph",
    "check",
    "Verdict",
    "Violation",
    "TxgraphError",
    "QMPError",
    "QAPIError",
    "BlockError",
    "OpenError",
    "PermissionConflict",
    "InvariantViolation",
    "IOFailure",
]
