"""blockdev-reopen: resets, children, backing/file changes, typed comparison, atomicity.

Each scenario is checked against the live qemu-storage-daemon 7.2; the
behaviours covered are those reference/qemu-options.md §6 lists (queue
building, prepare order, reset rules, the iotest-245 oracle table).
"""

from __future__ import annotations

from typing import Any

from tests.differential.scenarios._common import (
    add,
    cmd,
    delete,
    fnode,
    null,
    qcow2_img,
    qnodes,
    raw_img,
    sc,
    tg,
)

T = "reopen"


def reopen(*options: dict[str, Any]) -> dict[str, Any]:
    return cmd("blockdev-reopen", {"options": list(options)})


def hd(i: int, **extra: Any) -> dict[str, Any]:
    """qcow2 ``hd<i>`` over an inline file node ``hd<i>-file``."""
    d: dict[str, Any] = {
        "driver": "qcow2",
        "node-name": f"hd{i}",
        "file": fnode(f"hd{i}.qcow2", f"hd{i}-file"),
    }
    d.update(extra)
    return d


CHAIN = [
    qcow2_img("hd0.qcow2"),
    qcow2_img("hd1.qcow2", backing="hd0.qcow2"),
    qcow2_img("hd2.qcow2"),
]

SCENARIOS = [
    sc(
        "reopen_same_options_and_resets",
        [
            add(hd(0)),
            reopen(hd(0)),
            reopen(hd(0, **{"read-only": True})),
            qnodes(),
            reopen(hd(0)),
            qnodes(),
            reopen(hd(0, cache={"direct": True, "no-flush": True})),
            qnodes(),
            reopen(hd(0)),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
        doc="omitted read-only/cache reset to their defaults",
    ),
    sc(
        "reopen_detect_zeroes_and_discard",
        [
            add(hd(0)),
            reopen(hd(0, **{"detect-zeroes": "on"})),
            reopen(hd(0, **{"detect-zeroes": "unmap"})),
            reopen(hd(0, **{"detect-zeroes": "unmap", "discard": "unmap"})),
            qnodes(),
            reopen(hd(0, **{"detect-zeroes": "unmap"})),
            reopen(hd(0, discard="ignore")),
            reopen(hd(0, **{"detect-zeroes": "unmap"})),
            reopen(hd(0)),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
        doc="discard is retained when omitted; detect-zeroes resets to off",
    ),
    sc(
        "reopen_bad_targets",
        [
            add(hd(0)),
            reopen(hd(0, **{"node-name": "not-found"})),
            reopen(hd(0, **{"node-name": ""})),
            reopen(hd(0, driver="raw")),
            reopen(hd(0, file="not-found")),
            reopen(hd(0, file="")),
            reopen({"driver": "qcow2", "file": "hd0-file"}),
            reopen(hd(0, file=fnode("hd0.qcow2", "other"))),
            reopen(
                hd(
                    0,
                    file={"driver": "file", "node-name": "hd0-file", "filename": "{dir}/hd1.qcow2"},
                )
            ),
            reopen(hd(0, file=fnode("hd0.qcow2", "hd0-file", locking="off"))),
            reopen(hd(0, file=fnode("hd0.qcow2", "hd0-file", aio="native"))),
            reopen(hd(0, file="hd0-file")),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "reopen_backing_missing_and_null",
        [
            add(hd(1)),
            reopen(hd(1)),
            reopen(hd(1, backing="{#block1}")),
            reopen(hd(1, backing="not-found")),
            reopen(hd(1, backing={"driver": "qcow2", "file": fnode("hd0.qcow2")})),
            reopen(hd(1, backing={"driver": "raw", "file": fnode("hd0.qcow2")})),
            reopen(hd(1, backing=None)),
            qnodes(),
            reopen(hd(1)),
            add(hd(0)),
            reopen(hd(1, backing="hd0")),
            qnodes(),
            delete("hd0"),
            reopen(hd(1, backing=None)),
            delete("hd0"),
        ],
        setup=CHAIN,
        theme=T,
        doc="backing must be restated while the header names one",
    ),
    sc(
        "reopen_missing_backing_no_header",
        [
            add(hd(0)),
            add(hd(2)),
            reopen(hd(0)),
            reopen(hd(0, backing="hd2")),
            reopen(hd(0)),
            reopen(hd(0, backing=None)),
            reopen(hd(0)),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "reopen_cycles",
        [
            add(hd(0, backing=None)),
            add(hd(1, backing=None)),
            add(hd(2, backing=None)),
            reopen(hd(1, backing="hd1")),
            reopen(hd(1, backing="hd0")),
            reopen(hd(2, backing="hd1")),
            reopen(hd(0, backing="hd2")),
            reopen(hd(0, backing="hd2-file")),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "reopen_reference_children_keep_ro",
        [
            add(hd(1, backing=hd(0))),
            reopen(hd(1, **{"read-only": True}, backing=hd(0))),
            qnodes(),
            reopen({"driver": "qcow2", "node-name": "hd1", "file": "hd1-file", "backing": "hd0"}),
            reopen(
                {
                    "driver": "qcow2",
                    "node-name": "hd1",
                    "read-only": False,
                    "file": "hd1-file",
                    "backing": "hd0",
                }
            ),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
        doc="reference-form children keep their old read-only value",
    ),
    sc(
        "reopen_child_dicts_win",
        [
            add(hd(1, backing=hd(0))),
            reopen(
                hd(
                    1,
                    **{"read-only": True, "cache": {"direct": True}},
                    file=fnode("hd1.qcow2", "hd1-file", **{"read-only": False}),
                    backing=hd(0, **{"read-only": False}),
                )
            ),
            qnodes(),
            reopen(hd(1, **{"read-only": True}, backing=hd(0))),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "reopen_child_directly_ro_under_rw_parent",
        [
            add(hd(0)),
            reopen(fnode("hd0.qcow2", "hd0-file", **{"read-only": True})),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "reopen_same_node_twice",
        [
            add(hd(0)),
            reopen(hd(0, **{"read-only": True}), hd(0)),
            qnodes(),
            reopen(hd(0), hd(0, **{"read-only": True})),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
        doc="duplicate entries merge; the later one wins",
    ),
    sc(
        "reopen_atomic_over_the_list",
        [
            add(hd(0)),
            add(hd(2)),
            reopen(hd(0, **{"read-only": True}), hd(2, driver="raw")),
            qnodes(),
            reopen(hd(0, **{"read-only": True}), {"driver": "qcow2", "node-name": "nope"}),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
        doc="a failing entry rolls back the valid first one",
    ),
    sc(
        "reopen_swap_files",
        [
            add(hd(0)),
            add(hd(2)),
            reopen(hd(0, file="hd2-file")),
            reopen(hd(0, file="hd2-file"), hd(2, file="hd0-file")),
            qnodes(),
            reopen(hd(0, file="hd0-file"), hd(2, file="hd2-file")),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
        doc="only a simultaneous swap avoids the permission conflict",
    ),
    sc(
        "reopen_force_share_never_reopens",
        [
            add(
                {
                    "driver": "raw",
                    "node-name": "fs",
                    "read-only": True,
                    "force-share": True,
                    "file": fnode("r.raw", "fsf"),
                }
            ),
            reopen({"driver": "raw", "node-name": "fs", "read-only": True, "file": "fsf"}),
            reopen(
                {
                    "driver": "raw",
                    "node-name": "fs",
                    "read-only": True,
                    "force-share": True,
                    "file": "fsf",
                }
            ),
            reopen(
                {
                    "driver": "raw",
                    "node-name": "fs",
                    "read-only": True,
                    "force-share": False,
                    "file": "fsf",
                }
            ),
            reopen(
                {"driver": "file", "node-name": "fsf", "filename": "{dir}/r.raw", "read-only": True}
            ),
        ],
        setup=[raw_img("r.raw")],
        theme=T,
        doc="force-share compares a string with a bool",
    ),
    sc(
        "reopen_raw_offset_and_file",
        [
            add(fnode("r.raw", "rf")),
            add(fnode("s.raw", "sf")),
            add({"driver": "raw", "node-name": "r", "file": "rf"}),
            reopen({"driver": "raw", "node-name": "r", "offset": 512, "file": "rf"}),
            qnodes(),
            reopen({"driver": "raw", "node-name": "r", "file": "rf"}),
            reopen({"driver": "raw", "node-name": "r", "file": "sf"}),
            qnodes(),
            delete("rf"),
            reopen({"driver": "raw", "node-name": "r", "file": "rf"}),
        ],
        setup=[raw_img("r.raw"), raw_img("s.raw")],
        theme=T,
    ),
    sc(
        "reopen_file_locking_and_cache_dropped",
        [
            add(fnode("r.raw", "f", locking="off", **{"x-check-cache-dropped": True})),
            reopen(fnode("r.raw", "f", locking="off", **{"x-check-cache-dropped": False})),
            reopen(fnode("r.raw", "f", locking="off")),
            reopen(fnode("r.raw", "f", locking="on")),
            reopen(fnode("r.raw", "f")),
            add(fnode("s.raw", "g", **{"drop-cache": False})),
            reopen(fnode("s.raw", "g")),
            reopen(fnode("s.raw", "g", **{"drop-cache": True})),
        ],
        setup=[raw_img("r.raw"), raw_img("s.raw")],
        theme=T,
    ),
    sc(
        "reopen_null_options_frozen",
        [
            add(null("n", size=1024)),
            reopen(null("n", size=1024)),
            reopen(null("n", size=1 << 30)),
            reopen(null("n")),
            add(null("m")),
            reopen(null("m", **{"read-only": True})),
            qnodes(),
        ],
        theme=T,
    ),
    sc(
        "reopen_qcow2_cache_options",
        [
            add(hd(0)),
            reopen(hd(0, **{"l2-cache-entry-size": 131072})),
            reopen(hd(0, **{"l2-cache-size": 1048576, "cache-size": 524288})),
            reopen(hd(0, **{"l2-cache-size": 524288, "cache-size": 1048576})),
            reopen(hd(0, **{"pass-discard-request": True})),
            reopen(hd(0)),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "reopen_unsupported_drivers",
        [
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "children": [null("c0"), null("c1")],
                }
            ),
            reopen(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "children": ["c0", "c1"],
                }
            ),
            reopen(null("c0", **{"read-only": True})),
            add({"driver": "copy-on-read", "node-name": "cor", "file": null("cf")}),
            reopen({"driver": "copy-on-read", "node-name": "cor", "file": "cf"}),
            add(hd(0)),
            reopen(hd(0, backing="q")),
        ],
        setup=CHAIN,
        theme=T,
    ),
    sc(
        "reopen_throttle_group_change",
        [
            tg("group0"),
            tg("group1"),
            add(
                {
                    "driver": "throttle",
                    "node-name": "thr",
                    "throttle-group": "group0",
                    "file": null("tn"),
                }
            ),
            reopen(
                {"driver": "throttle", "node-name": "thr", "throttle-group": "group0", "file": "tn"}
            ),
            reopen(
                {
                    "driver": "throttle",
                    "node-name": "thr",
                    "throttle-group": "notfound",
                    "file": "tn",
                }
            ),
            reopen(
                {"driver": "throttle", "node-name": "thr", "throttle-group": "group1", "file": "tn"}
            ),
            reopen(
                {
                    "driver": "throttle",
                    "node-name": "thr",
                    "throttle-group": "group1",
                    "backing": "tn",
                    "file": "tn",
                }
            ),
            qnodes(),
        ],
        theme=T,
    ),
    sc(
        "reopen_insert_throttle_filter",
        [
            tg("group0"),
            add(hd(0)),
            add(
                {
                    "driver": "throttle",
                    "node-name": "throttle0",
                    "throttle-group": "group0",
                    "file": "hd0-file",
                }
            ),
            reopen(hd(0, file="throttle0")),
            qnodes(),
            reopen(hd(0, file="hd0-file")),
            delete("throttle0"),
            qnodes(),
        ],
        setup=CHAIN,
        theme=T,
        doc="the 7.2 filter insertion recipe: add the filter, repoint file",
    ),
    sc(
        "reopen_backing_reference_detect_zeroes",
        [
            add(hd(2, **{"detect-zeroes": "on"})),
            add(hd(1, **{"detect-zeroes": "on"}, backing="hd2")),
            add(hd(0, **{"detect-zeroes": "on"}, backing="hd1")),
            reopen({"driver": "qcow2", "node-name": "hd0", "file": "hd0-file", "backing": "hd1"}),
            qnodes(),
        ],
        setup=[qcow2_img("hd0.qcow2"), qcow2_img("hd1.qcow2"), qcow2_img("hd2.qcow2")],
        theme=T,
    ),
]
