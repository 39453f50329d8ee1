"""Option inheritance to implicitly created children; none for references (options §3)."""

from __future__ import annotations

from tests.differential.scenarios._common import (
    add,
    fnode,
    null,
    qcow2_img,
    raw_img,
    sc,
    tg,
)

T = "inherit"

SCENARIOS = [
    sc(
        "inh_readonly_to_file",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "read-only": True,
                    "file": fnode("a.qcow2", "qf"),
                }
            ),
            add({"driver": "raw", "node-name": "r", "read-only": True, "file": fnode("b.raw")}),
        ],
        setup=[qcow2_img("a.qcow2"), raw_img("b.raw")],
        theme=T,
    ),
    sc(
        "inh_cache_to_file",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "cache": {"direct": True, "no-flush": True},
                    "file": fnode("a.qcow2", "qf"),
                }
            ),
            add(
                {
                    "driver": "raw",
                    "node-name": "r",
                    "cache": {"no-flush": True},
                    "file": fnode("b.raw", "rf"),
                }
            ),
            add(
                {
                    "driver": "raw",
                    "node-name": "s",
                    "cache": {"direct": True},
                    "file": fnode("c.raw", "sf", cache={"direct": False, "no-flush": True}),
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2"), raw_img("b.raw"), raw_img("c.raw")],
        theme=T,
    ),
    sc(
        "inh_child_explicit_wins",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "read-only": True,
                    "cache": {"direct": True},
                    "file": fnode("a.qcow2", "qf", read_only=False, cache={"direct": False}),
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "inh_force_share_to_file",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q0",
                    "read-only": True,
                    "force-share": True,
                    "cache": {"direct": True, "no-flush": True},
                    "discard": "unmap",
                    "detect-zeroes": "on",
                    "file": fnode("a.qcow2", "q0f"),
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q1",
                    "read-only": True,
                    "force-share": True,
                    "file": fnode("a.qcow2", "q1f"),
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="force-share is inherited by the inline file: the file edge shares everything",
    ),
    sc(
        "inh_force_share_child_rw",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "read-only": True,
                    "force-share": True,
                    "file": fnode("a.qcow2", "qf", read_only=False),
                }
            ),
            add({"driver": "raw", "node-name": "r", "force-share": True, "file": fnode("a.qcow2")}),
            add(
                {"driver": "raw", "node-name": "r", "force-share": False, "file": fnode("a.qcow2")}
            ),
            add(
                {
                    "driver": "raw",
                    "node-name": "r2",
                    "read-only": True,
                    "file": fnode("a.qcow2", force_share=True),
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "inh_discard_detect_zeroes",
        [
            add(fnode("a.raw", "f1", detect_zeroes="unmap")),
            add(fnode("a.raw", "f2", detect_zeroes="unmap", discard="unmap")),
            add(fnode("a.raw", "f3", detect_zeroes="unmap", discard="on")),
            add(fnode("a.raw", "f4", detect_zeroes="on", discard="ignore")),
            add(
                {
                    "driver": "raw",
                    "node-name": "r1",
                    "discard": "ignore",
                    "file": fnode("a.raw", "r1f", detect_zeroes="unmap"),
                }
            ),
            add(
                {
                    "driver": "raw",
                    "node-name": "r2",
                    "file": fnode("a.raw", "r2f", detect_zeroes="unmap", discard="ignore"),
                }
            ),
            add(
                {
                    "driver": "raw",
                    "node-name": "r3",
                    "detect-zeroes": "unmap",
                    "file": fnode("a.raw"),
                }
            ),
            add(
                {
                    "driver": "raw",
                    "node-name": "r4",
                    "detect-zeroes": "unmap",
                    "discard": "off",
                    "file": fnode("a.raw"),
                }
            ),
        ],
        setup=[raw_img("a.raw")],
        theme=T,
        doc="children default discard=unmap whatever the parent says; detect-zeroes not inherited",
    ),
    sc(
        "inh_detect_zeroes_not_inherited",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "detect-zeroes": "on",
                    "file": fnode("t.qcow2"),
                }
            ),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
    ),
    sc(
        "inh_backing_forced_ro",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "cache": {"direct": True, "no-flush": True},
                    "file": fnode("t.qcow2", "tf"),
                }
            ),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
        doc="the header backing and its file: ro, cache inherited",
    ),
    sc(
        "inh_backing_explicit_rw",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "file": fnode("t.qcow2", "tf"),
                    "backing": {
                        "driver": "qcow2",
                        "node-name": "b",
                        "read-only": False,
                        "file": fnode("b.qcow2", "bf"),
                    },
                }
            ),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
    ),
    sc(
        "inh_backing_ro_parent_rw_child_file",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "read-only": True,
                    "force-share": True,
                    "file": fnode("t.qcow2", "tf"),
                }
            ),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
        doc="force-share copied to the COW child and its file",
    ),
    sc(
        "inh_reference_no_inherit",
        [
            add(fnode("a.raw", "rf")),
            add(
                {
                    "driver": "raw",
                    "node-name": "rr",
                    "read-only": True,
                    "force-share": True,
                    "cache": {"direct": True, "no-flush": True},
                    "file": "rf",
                }
            ),
            add({"driver": "qcow2", "node-name": "b", "file": fnode("b.qcow2", "bf")}),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "read-only": True,
                    "file": fnode("t.qcow2"),
                    "backing": "b",
                }
            ),
        ],
        setup=[raw_img("a.raw"), qcow2_img("b.qcow2"), qcow2_img("t.qcow2")],
        theme=T,
        doc="referenced children keep their own options, a rw qcow2 stays rw as backing",
    ),
    sc(
        "inh_quorum_children",
        [
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "read-only": True,
                    "cache": {"direct": True},
                    "children": [
                        null("c0"),
                        {"driver": "raw", "node-name": "c1", "file": fnode("a.raw", "c1f")},
                    ],
                }
            ),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "read-only": True,
                    "cache": {"direct": True},
                    "children": [
                        null("c0", size=1048576),
                        {"driver": "raw", "node-name": "c1", "file": fnode("a.raw", "c1f")},
                    ],
                }
            ),
        ],
        setup=[raw_img("a.raw")],
        theme=T,
    ),
    sc(
        "inh_filter_children",
        [
            tg("tg0"),
            add(
                {
                    "driver": "throttle",
                    "node-name": "thr",
                    "throttle-group": "tg0",
                    "read-only": True,
                    "cache": {"direct": True, "no-flush": True},
                    "file": {"driver": "qcow2", "node-name": "q", "file": fnode("a.qcow2", "qf")},
                }
            ),
            add(
                {
                    "driver": "copy-on-read",
                    "node-name": "cor",
                    "cache": {"direct": True},
                    "file": {"driver": "raw", "node-name": "r", "file": fnode("b.raw", "rf")},
                }
            ),
            add(
                {
                    "driver": "blkdebug",
                    "node-name": "dbg",
                    "read-only": True,
                    "image": {"driver": "raw", "node-name": "dr", "file": fnode("b.raw", "drf")},
                }
            ),
            add(
                {
                    "driver": "blkverify",
                    "node-name": "bv",
                    "read-only": True,
                    "cache": {"no-flush": True},
                    "test": null("vt"),
                    "raw": null("vr"),
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2"), raw_img("b.raw")],
        theme=T,
    ),
    sc(
        "inh_auto_read_only",
        [
            add(
                {
                    "driver": "raw",
                    "node-name": "r",
                    "auto-read-only": True,
                    "file": fnode("a.raw", "rf"),
                }
            ),
            add(fnode("a.raw", "f2", auto_read_only=True, read_only=True)),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "auto-read-only": True,
                    "file": fnode("t.qcow2", "qf"),
                }
            ),
        ],
        setup=[raw_img("a.raw"), qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
    ),
    sc(
        "inh_json_backing_rw_direct",
        [
            add({"driver": "qcow2", "node-name": "j0", "file": fnode("j.qcow2", "j0f")}),
        ],
        setup=[
            raw_img("base.raw"),
            qcow2_img(
                "j.qcow2",
                backing='json:{"driver":"raw","read-only":false,'
                '"cache":{"direct":true},"file":{"driver":"file","filename":"{dir}/base.raw"}}',
                fmt="raw",
                unsafe=True,
            ),
        ],
        theme=T,
        doc="a json: backing string in the header can ask for a rw, O_DIRECT backing",
    ),
    sc(
        "inh_json_backing_sets_options",
        [
            add(
                {"driver": "qcow2", "node-name": "j0", "read-only": True, "file": fnode("j.qcow2")}
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "j1",
                    "read-only": True,
                    "file": fnode("k.qcow2"),
                    "backing": {
                        "driver": "raw",
                        "node-name": "kb",
                        "read-only": True,
                        "file": fnode("r.raw"),
                    },
                }
            ),
        ],
        setup=[
            qcow2_img("base.qcow2"),
            raw_img("r.raw"),
            qcow2_img(
                "j.qcow2",
                backing='json:{"driver":"qcow2","cache":{"no-flush":true},'
                '"detect-zeroes":"on","file":{"driver":"file","filename":"{dir}/base.qcow2"}}',
                fmt="qcow2",
                unsafe=True,
            ),
            qcow2_img(
                "k.qcow2",
                backing='json:{"driver":"raw","offset":512,'
                '"file":{"driver":"file","filename":"{dir}/r.raw"}}',
                fmt="raw",
                unsafe=True,
            ),
        ],
        theme=T,
    ),
]
