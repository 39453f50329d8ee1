"""Query commands: flat and nested query-named-block-nodes, the debug graph."""

from __future__ import annotations

from tests.differential.scenarios._common import (
    add,
    cmd,
    delete,
    fnode,
    graph,
    null,
    qcow2_img,
    qnodes,
    raw_img,
    sc,
)

T = "queries"

SCENARIOS = [
    sc(
        "q_named_nodes_nested",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2", "tf")}),
            qnodes(False),
            qnodes(None),
            qnodes(True),
            graph(),
        ],
        setup=[
            qcow2_img("b0.qcow2", "2M"),
            qcow2_img("b1.qcow2", "2M", backing="b0.qcow2"),
            qcow2_img("t.qcow2", "3M", backing="b1.qcow2"),
        ],
        theme=T,
    ),
    sc(
        "q_empty_and_after_delete",
        [
            qnodes(True),
            qnodes(False),
            graph(),
            add({"driver": "raw", "node-name": "r", "file": null("n", size=4096)}),
            qnodes(False),
            delete("r"),
            qnodes(False),
            graph(),
        ],
        theme=T,
    ),
    sc(
        "q_query_misc",
        [
            cmd("query-block"),
            cmd("query-named-block-nodes", {"flat": "yes"}),
            cmd("query-named-block-nodes", {"bogus": 1}),
            cmd("x-debug-query-block-graph", {"x": 1}),
            cmd("no-such-command"),
        ],
        theme=T,
    ),
    sc(
        "q_nested_raw_and_filters",
        [
            add({"driver": "raw", "node-name": "r", "offset": 512, "file": fnode("a.raw")}),
            add(
                {
                    "driver": "copy-on-read",
                    "node-name": "c",
                    "file": {"driver": "qcow2", "node-name": "q", "file": fnode("t.qcow2")},
                }
            ),
            qnodes(False),
        ],
        setup=[raw_img("a.raw"), qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
    ),
]
