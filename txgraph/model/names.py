"""Node names: validity, the shared namespace, and QEMU-style auto names.

Reproduces util/id.c (``id_wellformed``, ``id_generate``) and the checks of
``bdrv_assign_node_name`` (reference/qemu-options.md §5.1).
"""

from __future__ import annotations

import random
import re

__all__ = ["MAX_NODE_NAME", "id_wellformed", "AutoNamer"]

#: ``sizeof(bs->node_name) - 1``: a 32-character name is "too long".
MAX_NODE_NAME = 31

_WELLFORMED = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*\Z")


def id_wellformed(name: str) -> bool:
    """A user-chosen id starts with a letter and continues with letters, digits, ``-._``."""
    return bool(_WELLFORMED.match(name))


class AutoNamer:
    """``id_generate(ID_BLOCK)``: ``#block`` + a process-wide counter + two random digits.

    The counter is never rolled back, not even when the open that consumed a
    name fails, exactly as in QEMU; differential tests rely on that to compare
    auto names once the random digits are stripped.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.counter = 0
        self._rng = random.Random(seed)

    def next(self) -> str:
        name = f"#block{self.counter}{self._rng.randrange(100):02d}"
        self.counter += 1
        return name
