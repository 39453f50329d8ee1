"""Node names: validity, length, `#` prefix, duplicates, auto names (reference §5)."""

from __future__ import annotations

from tests.differential.scenarios._common import add, delete, fnode, null, qcow2_img, sc

T = "names"

SCENARIOS = [
    sc(
        "names_valid_chars",
        [
            add(null("a")),
            add(null("Z9-._x")),
            add(null("x" + "-" * 20)),
            add(null("A.b_c-D")),
        ],
        theme=T,
        doc="letters, digits, '-', '.', '_' after a leading letter are accepted",
    ),
    sc(
        "names_invalid_chars",
        [
            add(null("1abc")),
            add(null("a b")),
            add(null("a/b")),
            add(null("a:b")),
            add(null("-a")),
            add(null("_a")),
            add(null("é")),
            add(null("a,b")),
        ],
        theme=T,
        doc="each bad name is refused with Invalid node-name and nothing is created",
    ),
    sc(
        "names_empty_string",
        [
            add(null("")),
            add(
                {"driver": "raw", "node-name": "ok", "file": {"driver": "null-co", "node-name": ""}}
            ),
            add(
                {
                    "driver": "raw",
                    "node-name": "ok",
                    "file": {"driver": "null-co", "node-name": "1x"},
                }
            ),
        ],
        theme=T,
    ),
    sc(
        "names_length_31_32",
        [
            add(null("a" * 31)),
            add(null("b" * 32)),
            add(null("c" * 64)),
            add(null("1" * 40)),
        ],
        theme=T,
        doc="31 chars ok, 32 too long; ill-formed and too long reports ill-formed first",
    ),
    sc(
        "names_hash_prefix",
        [
            add(null("#block123")),
            add(null("#foo")),
            add(null("#")),
        ],
        theme=T,
    ),
    sc(
        "names_duplicate",
        [
            add(null("n1")),
            add(null("n1")),
            add(null("n1", drv="null-aio")),
        ],
        theme=T,
    ),
    sc(
        "names_duplicate_inside_tree",
        [
            add({"driver": "qcow2", "node-name": "x", "file": fnode("a.qcow2", "x")}),
            add({"driver": "qcow2", "node-name": "y", "file": fnode("a.qcow2", "f")}),
            delete("y"),
            add(
                {
                    "driver": "raw",
                    "node-name": "r",
                    "file": {"driver": "raw", "node-name": "m", "file": fnode("a.qcow2", "m")},
                }
            ),
            add({"driver": "qcow2", "node-name": "x", "file": fnode("a.qcow2", "xf")}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="a clash between nodes of one add tree fails and leaves nothing behind",
    ),
    sc(
        "names_duplicate_with_existing_child",
        [
            add({"driver": "qcow2", "node-name": "q", "file": fnode("a.qcow2", "qf")}),
            add(null("qf")),
            add({"driver": "raw", "node-name": "r", "file": null("q")}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "names_missing_root",
        [
            add({"driver": "null-co"}),
            add({"driver": "qcow2", "file": fnode("a.qcow2", "f")}),
            add({"driver": "raw", "file": fnode("a.qcow2")}),
            add(null("after")),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="a named child does not rescue an unnamed root",
    ),
    sc(
        "names_auto_counter",
        [
            add({"driver": "qcow2", "node-name": "q1", "file": fnode("a.qcow2")}),
            add({"driver": "raw", "node-name": "r1", "file": null()}),
            add({"driver": "raw", "node-name": "bad", "file": {"driver": "nonexistent-drv"}}),
            add({"driver": "raw", "node-name": "bad", "file": fnode("missing.img")}),
            add({"driver": "raw", "node-name": "r2", "file": null()}),
            add({"driver": "raw", "node-name": "r3", "file": {"driver": "raw", "file": null()}}),
            delete("r1"),
            add({"driver": "raw", "node-name": "r4", "file": null()}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="auto names take a process-global counter; failed opens may consume numbers",
    ),
    sc(
        "names_auto_reference",
        [
            add({"driver": "raw", "node-name": "r1", "file": null()}),
            add({"driver": "raw", "node-name": "r2", "file": "{#block0}"}),
            add({"driver": "raw", "node-name": "r3", "file": "#block0"}),
            delete("r1"),
            delete("r2"),
        ],
        theme=T,
        doc="an auto-named inline child can be referenced by its generated name",
    ),
    sc(
        "names_reference_not_found",
        [
            add({"driver": "raw", "node-name": "r", "file": "nothere"}),
            add({"driver": "raw", "node-name": "r", "file": ""}),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "file": fnode("a.qcow2"),
                    "backing": "nothere",
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "names_reuse_after_delete",
        [
            add(null("n")),
            delete("n"),
            add(null("n", drv="null-aio")),
            add({"driver": "raw", "node-name": "r", "file": null("c")}),
            delete("r"),
            add(null("c")),
        ],
        theme=T,
    ),
]
