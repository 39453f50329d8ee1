"""blockdev-del rules and throttle-group objects (graph §3.3, options §5.3)."""

from __future__ import annotations

from tests.differential.scenarios._common import (
    add,
    cmd,
    delete,
    fnode,
    null,
    obj_add,
    obj_del,
    qcow2_img,
    sc,
    tg,
)

T = "delete"

SCENARIOS = [
    sc(
        "del_not_found",
        [
            delete("nothere"),
            delete(""),
            add(null("n")),
            delete("n"),
            delete("n"),
        ],
        theme=T,
    ),
    sc(
        "del_in_use_by_node",
        [
            add(null("f")),
            add({"driver": "raw", "node-name": "r", "file": "f"}),
            delete("f"),
            delete("r"),
            delete("f"),
        ],
        theme=T,
    ),
    sc(
        "del_used_as_backing",
        [
            add({"driver": "qcow2", "node-name": "b", "file": fnode("b.qcow2", "bf")}),
            add({"driver": "qcow2", "node-name": "t", "backing": "b", "file": fnode("t.qcow2")}),
            delete("b"),
            delete("bf"),
            delete("t"),
            delete("b"),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2")],
        theme=T,
    ),
    sc(
        "del_not_owned_by_monitor",
        [
            add({"driver": "qcow2", "node-name": "q", "file": fnode("a.qcow2", "qf")}),
            delete("qf"),
            add(
                {
                    "driver": "raw",
                    "node-name": "r",
                    "file": {"driver": "raw", "node-name": "m", "file": null("leaf")},
                }
            ),
            delete("m"),
            delete("leaf"),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "del_header_backing_busy",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2")}),
            delete("{#block1}"),
            delete("{#block2}"),
            delete("{#block0}"),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t2",
                    "backing": {
                        "node-name": "bb",
                        "driver": "qcow2",
                        "file": fnode("b.qcow2", "bbf"),
                    },
                    "file": fnode("t2.qcow2"),
                }
            ),
            delete("bb"),
            delete("bbf"),
        ],
        setup=[
            qcow2_img("b.qcow2"),
            qcow2_img("t.qcow2", backing="b.qcow2"),
            qcow2_img("t2.qcow2"),
        ],
        theme=T,
        doc="busy (op blocker) is checked before monitor ownership",
    ),
    sc(
        "del_cascade_inline_children",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2", "tf")}),
            delete("t"),
            add(fnode("t.qcow2", "tf")),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "children": [
                        null("c0"),
                        {"driver": "raw", "node-name": "c1", "file": null("c1f")},
                    ],
                }
            ),
            delete("q"),
            add(null("c1f")),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
    ),
    sc(
        "del_monitor_owned_children_survive",
        [
            add(null("leaf")),
            add({"driver": "raw", "node-name": "mid", "file": "leaf"}),
            add({"driver": "raw", "node-name": "top", "file": "mid"}),
            delete("top"),
            delete("leaf"),
            delete("mid"),
            delete("leaf"),
        ],
        theme=T,
    ),
    sc(
        "del_shared_inline_child",
        [
            add({"driver": "raw", "node-name": "r1", "file": null("c")}),
            add({"driver": "raw", "node-name": "r2", "file": "c"}),
            delete("r1"),
            delete("c"),
            delete("r2"),
            add(null("c")),
        ],
        theme=T,
        doc="an inline child referenced by another parent survives its creator",
    ),
    sc(
        "del_quorum_child",
        [
            add(null("a")),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "children": ["a", null("b")],
                }
            ),
            delete("a"),
            delete("b"),
            delete("q"),
            delete("a"),
        ],
        theme=T,
    ),
    sc(
        "del_with_export",
        [
            cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "{dir}/s.sock"}}}),
            add(null("n")),
            cmd("block-export-add", {"type": "nbd", "id": "e", "node-name": "n"}),
            delete("n"),
            cmd("block-export-del", {"id": "e"}),
            delete("n"),
        ],
        theme=T,
    ),
    sc(
        "obj_tg_duplicate_and_del",
        [
            tg("tg0"),
            tg("tg0"),
            obj_del("tg0"),
            obj_del("tg0"),
            obj_del("nothere"),
            tg("tg0", bps_total=1000),
        ],
        theme=T,
    ),
    sc(
        "obj_tg_in_use",
        [
            tg("tg0"),
            add({"driver": "throttle", "node-name": "t", "throttle-group": "tg0", "file": null()}),
            obj_del("tg0"),
            delete("t"),
            obj_del("tg0"),
            add({"driver": "throttle", "node-name": "t", "throttle-group": "tg0", "file": null()}),
        ],
        theme=T,
    ),
    sc(
        "obj_tg_bad_limits",
        [
            tg("a", iops_total=-1),
            tg("b", iops_total=100, iops_read=10),
            tg("c", iops_total=100, iops_total_max=10),
            tg("d", iops_total_max=10),
            tg("e", bps_total=1 << 60),
            obj_add({"qom-type": "throttle-group", "id": "f", "limits": {"bogus": 1}}),
            obj_add({"qom-type": "throttle-group", "id": "1bad"}),
            obj_add({"qom-type": "throttle-group", "id": "g", "x-iops-total": 50}),
            obj_add({"qom-type": "nonexistent-type", "id": "h"}),
            tg("ok", iops_total=10, iops_total_max=20, iops_total_max_length=5),
        ],
        theme=T,
    ),
    sc(
        "obj_tg_shared_by_two_nodes",
        [
            tg("g"),
            add(
                {"driver": "throttle", "node-name": "t1", "throttle-group": "g", "file": null("n1")}
            ),
            add(
                {"driver": "throttle", "node-name": "t2", "throttle-group": "g", "file": null("n2")}
            ),
            delete("t1"),
            obj_del("g"),
            delete("t2"),
            obj_del("g"),
        ],
        theme=T,
    ),
]
