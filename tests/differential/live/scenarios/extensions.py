"""txgraph's extension commands against their QEMU-recipe equivalents.

Each :class:`Split` step runs the QEMU 7.2 recipe on qemu-storage-daemon
(blockdev-add + blockdev-reopen of the parent, export del+add, transaction
with snapshots) and the one extension command on txgraph; guest view, state
and final images must be the same afterwards.
"""

from __future__ import annotations

from typing import Any

from tests.differential.live.scenarios.common import (
    CHAIN,
    QUERY,
    R,
    Split,
    View,
    W,
    add,
    cmd,
    export,
    export_del,
    hd,
    io,
    overlay,
    reopen,
    sc,
    snap,
)

T = "extensions"
TG = cmd("object-add", {"qom-type": "throttle-group", "id": "tg0", "limits": {"iops-total": 10000}})
THR: dict[str, Any] = {"driver": "throttle", "node-name": "thr", "throttle-group": "tg0"}
HD0 = hd("hd0", "base.qcow2")
FMT = [
    add(hd("top", "top.qcow2")),
    add({"driver": "raw", "node-name": "fmt", "file": "top"}),
    export("e0", "fmt"),
]


def insert(node: str, filt: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return cmd("x-txgraph-insert-filter", {"node": node, "filter": filt, **extra})


SCENARIOS = [
    sc(
        "ext_insert_filter_vs_reopen",
        [
            TG,
            add(HD0),
            export("e0", "hd0"),
            io("e0", "write -P 0x08 1M 64k"),
            Split(
                (
                    add({**THR, "file": "hd0-file"}),
                    reopen({"driver": "qcow2", "node-name": "hd0", "file": "thr"}),
                ),
                (insert("hd0-file", THR),),
                "insert throttle under hd0",
            ),
            io("e0", W, R, "read -P 0x08 1M 64k"),
            View("e0"),
            QUERY,
        ],
        theme=T,
    ),
    sc(
        "ext_remove_filter_vs_reopen",
        [
            TG,
            add(HD0),
            add({**THR, "file": "hd0-file"}),
            reopen({"driver": "qcow2", "node-name": "hd0", "file": "thr"}),
            export("e0", "hd0"),
            io("e0", W),
            Split(
                (
                    reopen({"driver": "qcow2", "node-name": "hd0", "file": "hd0-file"}),
                    cmd("blockdev-del", {"node-name": "thr"}),
                ),
                (cmd("x-txgraph-remove-filter", {"node": "thr"}),),
                "remove throttle",
            ),
            io("e0", R, "write -P 0x09 64k 64k"),
            View("e0"),
        ],
        theme=T,
    ),
    sc(
        "ext_insert_cor_vs_reopen",
        [
            *FMT,
            Split(
                (
                    add({"driver": "copy-on-read", "node-name": "cor", "file": "top"}),
                    reopen({"driver": "raw", "node-name": "fmt", "file": "cor"}),
                ),
                (insert("top", {"driver": "copy-on-read", "node-name": "cor"}),),
                "insert COR",
            ),
            io("e0", "read -P 0x11 0 128k"),
            View("e0"),
            io("e0", "flush"),
        ],
        setup=CHAIN,
        theme=T,
        doc="reads through the inserted COR filter copy up alike",
    ),
    sc(
        "ext_insert_filter_above_exported_node",
        [
            TG,
            add(HD0),
            export("e0", "hd0"),
            Split(
                (add({**THR, "file": "hd0"}), export_del("e0"), export("e0", "thr")),
                (insert("hd0", THR),),
                "filter between export and hd0",
            ),
            io("e0", W, R),
            View("e0"),
            cmd("query-block-exports"),
        ],
        theme=T,
        doc="the export moves onto the filter (QSD: export re-created on it)",
    ),
    sc(
        "ext_replace_export_vs_readd",
        [
            add(HD0),
            add(hd("hd1", "ov.qcow2")),
            export("vm0", "hd0"),
            io("vm0", W),
            Split(
                (export_del("vm0"), export("vm0", "hd1")),
                (
                    cmd(
                        "x-blockdev-replace",
                        {"parent-type": "export", "export-id": "vm0", "new-child": "hd1"},
                    ),
                ),
                "export onto hd1",
            ),
            io("vm0", "read -P 0 0 64k", "write -P 0x0e 64k 64k"),
            View("vm0"),
        ],
        theme=T,
        doc="issue 7 reproducer: x-blockdev-replace parent-type export",
    ),
    sc(
        "ext_replace_driver_child_vs_reopen",
        [
            add(HD0),
            add(hd("alt", "ov.qcow2")),
            add({"driver": "raw", "node-name": "fmt", "file": "hd0"}),
            export("e0", "fmt"),
            Split(
                (reopen({"driver": "raw", "node-name": "fmt", "file": "alt"}),),
                (
                    cmd(
                        "x-blockdev-replace",
                        {
                            "parent-type": "driver",
                            "node-name": "fmt",
                            "child": "file",
                            "new-child": "alt",
                        },
                    ),
                ),
                "fmt.file -> alt",
            ),
            io("e0", "read -P 0 0 64k", W, R),
            View("e0"),
        ],
        theme=T,
    ),
    sc(
        "ext_replace_edges_vs_reopen",
        [
            add(HD0),
            add(hd("alt", "ov.qcow2")),
            add({"driver": "raw", "node-name": "fmt", "file": "hd0"}),
            export("e0", "fmt"),
            Split(
                (reopen({"driver": "raw", "node-name": "fmt", "file": "alt"}),),
                (
                    cmd(
                        "x-txgraph-replace-edges",
                        {"edges": [{"parent": "fmt", "child-name": "file"}], "new-child": "alt"},
                    ),
                ),
                "edges -> alt",
            ),
            io("e0", W, R),
            View("e0"),
        ],
        theme=T,
    ),
    sc(
        "ext_transaction_snapshot_and_filter",
        [
            TG,
            add(HD0),
            export("e0", "hd0"),
            overlay("ov"),
            Split(
                (
                    cmd(
                        "transaction",
                        {
                            "actions": [
                                {
                                    "type": "blockdev-snapshot",
                                    "data": {"node": "hd0", "overlay": "ov"},
                                }
                            ]
                        },
                    ),
                    add({**THR, "file": "ov-file"}),
                    reopen({"driver": "qcow2", "node-name": "ov", "file": "thr", "backing": "hd0"}),
                ),
                (
                    cmd(
                        "x-txgraph-transaction",
                        {
                            "actions": [
                                {
                                    "type": "blockdev-snapshot",
                                    "data": {"node": "hd0", "overlay": "ov"},
                                },
                                {
                                    "type": "x-txgraph-insert-filter",
                                    "data": {"node": "ov-file", "filter": THR},
                                },
                            ]
                        },
                    ),
                ),
                "snapshot + filter in one transaction",
            ),
            io("e0", W, R, "read -P 0x11 64k 64k"),
            View("e0"),
            QUERY,
        ],
        theme=T,
    ),
    sc(
        "ext_snapshot_then_remove_filter",
        [
            TG,
            add(HD0),
            add({**THR, "file": "hd0-file"}),
            reopen({"driver": "qcow2", "node-name": "hd0", "file": "thr"}),
            export("e0", "hd0"),
            overlay("ov"),
            snap("hd0", "ov"),
            io("e0", W),
            Split(
                (
                    reopen(
                        {
                            "driver": "qcow2",
                            "node-name": "hd0",
                            "file": "hd0-file",
                            "read-only": True,
                        }
                    ),
                    cmd("blockdev-del", {"node-name": "thr"}),
                ),
                (cmd("x-txgraph-remove-filter", {"node": "thr"}),),
                "remove filter below backing",
            ),
            io("e0", R, "read -P 0x11 64k 64k"),
            View("e0"),
        ],
        theme=T,
    ),
]
