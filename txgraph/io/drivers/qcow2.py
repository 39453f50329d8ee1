"""Registers the qcow2 format driver (implemented in :mod:`txgraph.io.qcow2`)."""

from __future__ import annotations

from txgraph.io.qcow2.driver import Qcow2Node
from txgraph.io.registry import register

__all__ = ["Qcow2Node"]

register("qcow2")(Qcow2Node)
