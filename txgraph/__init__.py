"""txgraph: a reconfiguration engine with a formal transaction model for QEMU block graphs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
