"""Scenarios txgraph is known to fail today, each with its root cause (strict xfail).

The coordinator removes an entry once the fix is merged; a fixed scenario shows as
XPASS(strict), i.e. a failure, until then.
"""

from __future__ import annotations

__all__ = ["KNOWN"]


KNOWN: dict[str, str] = {
    "qcow2_inside_qcow2_grows_its_container": (
        "txgraph's qcow2 refuses writes past its virtual size with EIO; QEMU allows them "
        "for a parent holding RESIZE and grows the node's length in memory "
        "(bdrv_co_write_req_finish), the L1 table growing for the new clusters"
    ),
}
