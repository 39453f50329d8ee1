"""Driver registry: QEMU driver name -> data-plane class.

Driver modules register themselves with :func:`register`; the Runtime looks
classes up by the node's ``driver`` option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from txgraph.io.driver import DriverNode

__all__ = ["DRIVERS", "register", "driver_class"]

DRIVERS: dict[str, type[DriverNode]] = {}

T = TypeVar("T", bound=type[DriverNode])


def register(*names: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        for name in names:
            DRIVERS[name] = cls
        return cls

    return deco


def driver_class(name: str) -> type[DriverNode] | None:
    # Importing the package registers every built-in driver.
    import txgraph.io.drivers  # noqa: F401

    return DRIVERS.get(name)
