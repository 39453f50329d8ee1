"""Scenarios txgraph is known to fail today, each with its root cause (strict xfail).

The coordinator removes an entry once the fix is merged; a fixed scenario shows as
XPASS(strict), i.e. a failure, until then.
"""

from __future__ import annotations

__all__ = ["KNOWN"]


_ZERO_PARTIAL = ("not in issue 7's list: a write-zeroes smaller than a cluster on an "
                 "unallocated qcow2 cluster is written as data "
                 "(txgraph/io/qcow2/writer.py:195-196); QEMU's qcow2_co_pwrite_zeroes "
                 "checks that the rest of the cluster reads as zero and makes it a zero "
                 "cluster (no data allocated)")

KNOWN: dict[str, str] = {
    "write_zeroes_subcluster": _ZERO_PARTIAL,
}
