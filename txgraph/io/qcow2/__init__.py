"""qcow2 support: header validation, compiled L2 map, refcounts/allocation, the driver.

The driver class itself lives in :mod:`txgraph.io.qcow2.driver` and is
registered by the thin module :mod:`txgraph.io.drivers.qcow2`.
"""

from __future__ import annotations

from txgraph.io.qcow2.header import Qcow2Header, Snapshot, read_qcow2_header

__all__ = ["Qcow2Header", "Snapshot", "read_qcow2_header"]
