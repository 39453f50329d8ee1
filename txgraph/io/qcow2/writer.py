"""Placeholder until the write path lands."""
from __future__ import annotations
import errno as E
from typing import Any
from txgraph.errors import IOFailure


class Qcow2Writer:
    def __init__(self, node: Any) -> None:
        self.node = node

    def write(self, *a: Any) -> None:
        raise IOFailure("Operation not supported", E.ENOTSUP)

    write_zeroes = discard = write

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def mark_corrupt_on_disk(self) -> None:
        pass
