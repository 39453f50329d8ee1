"""External snapshots under live exports: blockdev-snapshot, -sync, transaction.

QEMU moves every parent of the snapshotted node, exports included, onto the
overlay (``external_snapshot_commit`` -> ``bdrv_append`` -> ``bdrv_replace_node``),
so guest writes after the snapshot land in the overlay and the old node turns
read-only; reads of unwritten areas come from the backing.
"""

from __future__ import annotations

from tests.differential.live.scenarios.common import (
    CHAIN,
    QUERY,
    R,
    View,
    W,
    add,
    cmd,
    export,
    hd,
    io,
    overlay,
    sc,
    snap,
    snap_sync,
)

T = "snapshot"

SCENARIOS = [
    sc(
        "snap_under_writable_export",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io("e0", "write -P 0x01 1M 64k", "read -P 0x11 0 64k"),
            overlay("ov"),
            snap("hd0", "ov"),
            io("e0", W, R, "read -P 0x01 1M 64k", "read -P 0x22 2M 64k"),
            View("e0"),
            QUERY,
        ],
        theme=T,
        doc="issue 7 reproducer: guest writes after the snapshot land in the overlay",
    ),
    sc(
        "snap_sync_under_writable_export",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io("e0", "write -P 0x02 3M 64k"),
            snap_sync("hd0", "s1.qcow2", "s1"),
            io("e0", W, R, "read -P 0x02 3M 64k", "flush"),
            View("e0"),
        ],
        theme=T,
    ),
    sc(
        "snap_after_two_cluster_write",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io("e0", "write -P 0x15 1600k 128k"),
            overlay("ov"),
            snap("hd0", "ov"),
            View("e0"),
        ],
        theme=T,
        doc="a two-cluster write, then a snapshot (found by the live machine)",
    ),
    sc(
        "snap_sync_after_zero_writes",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io("e0", "write -z 576k 64k", "write -z -u 704k 64k"),
            snap_sync("hd0", "s1.qcow2", "s1"),
            io("e0", R),
            View("e0"),
        ],
        theme=T,
        doc="whole-cluster zero writes, then a snapshot-sync (found by the live machine)",
    ),
    sc(
        "snap_under_readonly_export",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0", writable=False),
            io("e0", "read -P 0x11 0 64k", ro=True),
            overlay("ov"),
            snap("hd0", "ov"),
            io("e0", "read -P 0x11 0 64k", "read -P 0x22 2M 64k", ro=True),
            io("e0", W),
            View("e0"),
        ],
        theme=T,
        doc="a read-only export follows too; writes stay refused",
    ),
    sc(
        "snap_twice_chain_of_three",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            snap_sync("hd0", "s1.qcow2", "s1"),
            io("e0", "write -P 0x0a 0 64k"),
            snap_sync("s1", "s2.qcow2", "s2"),
            io("e0", "write -P 0x0b 64k 64k", "read -P 0x0a 0 64k", "read -P 0x0b 64k 64k"),
            View("e0"),
            QUERY,
        ],
        theme=T,
    ),
    sc(
        "snap_sync_existing_mode",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            snap_sync("hd0", "ov.qcow2", "s1", mode="existing"),
            io("e0", W, R, "read -P 0x11 64k 64k"),
            View("e0"),
        ],
        theme=T,
        doc="mode=existing opens ov.qcow2 (its header has no backing) as overlay",
    ),
    sc(
        "snap_of_backing_chain_top",
        [
            add(hd("top", "top.qcow2")),
            export("e0", "top"),
            io("e0", "read -P 0x44 512k 64k", "read -P 0x11 0 64k"),
            overlay("ov"),
            snap("top", "ov"),
            io("e0", "write -P 0x0c 512k 64k", "read -P 0x0c 512k 64k", "read -P 0x44 576k 64k"),
            View("e0"),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "transaction_two_snapshots_two_exports",
        [
            add(hd("hd0", "base.qcow2")),
            add(hd("hd1", "solo.qcow2")),
            export("e0", "hd0"),
            export("e1", "hd1"),
            overlay("ov0", "ov.qcow2"),
            overlay("ov1", "ov2.qcow2"),
            cmd(
                "transaction",
                {
                    "actions": [
                        {"type": "blockdev-snapshot", "data": {"node": "hd0", "overlay": "ov0"}},
                        {"type": "blockdev-snapshot", "data": {"node": "hd1", "overlay": "ov1"}},
                    ]
                },
            ),
            io("e0", W, R),
            io("e1", "write -P 0xcd 0 64k", "read -P 0x77 64k 64k"),
            View("e0"),
            View("e1"),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "transaction_snapshot_aborted",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            overlay("ov0"),
            cmd(
                "transaction",
                {
                    "actions": [
                        {"type": "blockdev-snapshot", "data": {"node": "hd0", "overlay": "ov0"}},
                        {"type": "abort", "data": {}},
                    ]
                },
            ),
            io("e0", W, R),
            View("e0"),
        ],
        theme=T,
        doc="an aborted snapshot changes nothing: writes still land in base.qcow2",
    ),
    sc(
        "transaction_snapshot_sync_and_snapshot",
        [
            add(hd("hd0", "base.qcow2")),
            add(hd("hd1", "solo.qcow2")),
            export("e0", "hd0"),
            export("e1", "hd1"),
            overlay("ov1", "ov2.qcow2"),
            cmd(
                "transaction",
                {
                    "actions": [
                        {
                            "type": "blockdev-snapshot-sync",
                            "data": {
                                "node-name": "hd0",
                                "snapshot-file": "{dir}/s0.qcow2",
                                "snapshot-node-name": "s0",
                                "format": "qcow2",
                            },
                        },
                        {"type": "blockdev-snapshot", "data": {"node": "hd1", "overlay": "ov1"}},
                    ]
                },
            ),
            io("e0", W, R),
            io("e1", W, R),
            View("e0"),
            View("e1"),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "snap_then_delete_overlay_refused",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            overlay("ov"),
            snap("hd0", "ov"),
            cmd("blockdev-del", {"node-name": "ov"}),
            cmd("blockdev-del", {"node-name": "hd0"}),
            io("e0", W, R),
            View("e0"),
        ],
        theme=T,
        doc="the exported overlay and its backing are in use",
    ),
]
