"""Scenarios txgraph is known to fail today, each with its root cause (strict xfail).

The coordinator removes an entry once the fix is merged; a fixed scenario shows as
XPASS(strict), i.e. a failure, until then.
"""

from __future__ import annotations

__all__ = ["KNOWN"]

_EXPORT = ("issue 7: exports do not follow graph changes: the NBD server keeps serving "
           "NbdExport.node_name fixed at add_export (txgraph/io/nbd/server.py:57,160) and "
           "query-block-exports reports the frozen Export.node_name "
           "(txgraph/ops/exports.py:34,132) although the export's backend edge moved")
_DZ = ("issue 7: detect-zeroes is not honoured by the data plane: ops/reopen.py:346 and "
       "ops/open.py:238 set it in the model only, nothing under txgraph/io reads it, so "
       "zero buffers are written as data (txgraph/io/qcow2/driver.py:246)")
_COR_ZERO = ("issue 7: copy-on-read copies an all-zero unallocated range as data "
             "(txgraph/io/drivers/copy_on_read.py:101 top.write) where QEMU's "
             "bdrv_co_do_copy_on_readv writes zeroes for a zero buffer")
_SHUTDOWN = ("not in issue 7's list: `txgraph serve` exits on SIGINT without closing the "
             "session (txgraph/cli.py:52 run_server, txgraph/qmp/server.py:207 swallows "
             "KeyboardInterrupt, Session.close never runs), so cached qcow2 L2/refcount "
             "updates of unflushed writes are lost; QSD's bdrv_close_all flushes them")
_REPLACE_EXPORT = ("issue 7: x-blockdev-replace parent-type export looks the export up by "
                   "Backend.name (txgraph/ops/replace.py:146) but block-export-add creates "
                   "its backend without a name (txgraph/ops/exports.py:82): "
                   "\"Export 'vm0' not found\"")

_ZERO_PARTIAL = ("not in issue 7's list: a write-zeroes smaller than a cluster on an "
                 "unallocated qcow2 cluster is written as data "
                 "(txgraph/io/qcow2/writer.py:195-196); QEMU's qcow2_co_pwrite_zeroes "
                 "checks that the rest of the cluster reads as zero and makes it a zero "
                 "cluster (no data allocated)")

KNOWN: dict[str, str] = {
    "write_zeroes_subcluster": _ZERO_PARTIAL,
    "snap_under_writable_export": _EXPORT,
    "snap_sync_under_writable_export": _EXPORT,
    "snap_under_readonly_export": _EXPORT,
    "snap_twice_chain_of_three": _EXPORT,
    "snap_sync_existing_mode": _EXPORT,
    "snap_of_backing_chain_top": _EXPORT,
    "transaction_two_snapshots_two_exports": _EXPORT,
    "transaction_snapshot_sync_and_snapshot": _EXPORT,
    "snap_then_delete_overlay_refused": _EXPORT,
    "ext_insert_filter_above_exported_node": _EXPORT,
    "ext_transaction_snapshot_and_filter": _EXPORT,
    "ext_snapshot_then_remove_filter": _EXPORT,
    "ext_replace_export_vs_readd": _REPLACE_EXPORT,
    "reopen_detect_zeroes_unmap": _DZ,
    "reopen_detect_zeroes_on": _DZ,
    "reopen_detect_zeroes_reset": _DZ,
    "shutdown_keeps_unflushed_cor_copies": _SHUTDOWN,
    "ext_insert_cor_vs_reopen": _COR_ZERO,
}
