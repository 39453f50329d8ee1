"""A generated step the fuzzer's generator draws rarely: a backing cut by reopen.

The safe-policy property tests mix it into the fuzzer's sequences, since the
data-loss rules (S1/S2, V1) are about exactly such steps.
"""

from __future__ import annotations

import random
from typing import Any

from txgraph.fuzz.generate import Resources

__all__ = ["backing_cut"]


def backing_cut(rng: random.Random, res: Resources, drop: float) -> dict[str, Any] | None:
    """A reopen that drops (with probability ``drop``) or moves the backing link of a
    live qcow2 node; None while there is none."""
    qcow2 = sorted(n for n, (drv, kids) in res.live.items() if drv == "qcow2" and "file" in kids)
    if not qcow2:
        return None
    name = rng.choice(qcow2)
    target = None if rng.random() < drop else rng.choice(sorted(res.live))
    entry = {
        "driver": "qcow2",
        "node-name": name,
        "file": res.live[name][1]["file"],
        "backing": target,
    }
    return {"execute": "blockdev-reopen", "arguments": {"options": [entry]}}
