"""Defaults and basic options of every driver (reference qemu-options.md §4.3, §1)."""

from __future__ import annotations

from tests.differential.scenarios._common import (
    add,
    delete,
    fnode,
    null,
    obj_del,
    qcow2_img,
    qemu_img,
    qnodes,
    raw_img,
    sc,
    tg,
)

T = "drivers"

SCENARIOS = [
    sc(
        "drv_file_defaults",
        [
            add(fnode("a.raw", "f")),
        ],
        setup=[raw_img("a.raw", "1M")],
        theme=T,
    ),
    sc(
        "drv_file_options",
        [
            add(fnode("a.raw", "f1", aio="threads", locking="off", drop_cache=False)),
            add(fnode("a.raw", "f2", locking="on")),
            add(fnode("a.raw", "f3", aio="native")),
            add(fnode("a.raw", "f4", aio="native", cache={"direct": True})),
            add(fnode("a.raw", "f5", locking="auto", x_check_cache_dropped=True)),
        ],
        setup=[raw_img("a.raw", "64k")],
        theme=T,
    ),
    sc(
        "drv_null_co_defaults",
        [
            add(null("n")),
            add(null("n2", size=4096, read_zeroes=True, latency_ns=10)),
            add(null("n3", size=0)),
        ],
        theme=T,
    ),
    sc(
        "drv_null_aio_defaults",
        [
            add(null("n", drv="null-aio")),
            add(null("n2", drv="null-aio", size=512, read_zeroes=False)),
        ],
        theme=T,
    ),
    sc(
        "drv_raw_plain",
        [
            add({"driver": "raw", "node-name": "r", "file": fnode("a.raw")}),
        ],
        setup=[raw_img("a.raw", "1M")],
        theme=T,
    ),
    sc(
        "drv_raw_offset_size",
        [
            add(
                {
                    "driver": "raw",
                    "node-name": "r1",
                    "offset": 512,
                    "size": 4096,
                    "file": fnode("a.raw", "f"),
                }
            ),
            add({"driver": "raw", "node-name": "r2", "offset": 65536, "file": "f"}),
            add({"driver": "raw", "node-name": "r3", "size": 8192, "file": "f"}),
            add({"driver": "raw", "node-name": "r4", "offset": 2 << 20, "file": "f"}),
            add({"driver": "raw", "node-name": "r5", "offset": 4096, "size": 2 << 20, "file": "f"}),
            add({"driver": "raw", "node-name": "r6", "offset": 100, "size": 1000, "file": "f"}),
            add({"driver": "raw", "node-name": "r7", "offset": -1, "file": "f"}),
        ],
        setup=[raw_img("a.raw", "1M")],
        theme=T,
    ),
    sc(
        "drv_qcow2_defaults",
        [
            add({"driver": "qcow2", "node-name": "q", "file": fnode("a.qcow2", "qf")}),
        ],
        setup=[qcow2_img("a.qcow2", "4M")],
        theme=T,
    ),
    sc(
        "drv_qcow2_variants",
        [
            add({"driver": "qcow2", "node-name": "v2", "file": fnode("v2.qcow2")}),
            add({"driver": "qcow2", "node-name": "c4k", "file": fnode("c4k.qcow2")}),
            add({"driver": "qcow2", "node-name": "c2m", "file": fnode("c2m.qcow2")}),
            add({"driver": "qcow2", "node-name": "lazy", "file": fnode("lazy.qcow2")}),
            add({"driver": "qcow2", "node-name": "rc1", "file": fnode("rc1.qcow2")}),
            add({"driver": "qcow2", "node-name": "xl2", "file": fnode("xl2.qcow2")}),
            add({"driver": "qcow2", "node-name": "pre", "file": fnode("pre.qcow2")}),
        ],
        setup=[
            qcow2_img("v2.qcow2", opts="compat=0.10"),
            qcow2_img("c4k.qcow2", opts="cluster_size=4096"),
            qcow2_img("c2m.qcow2", "8M", opts="cluster_size=2M"),
            qcow2_img("lazy.qcow2", opts="lazy_refcounts=on"),
            qcow2_img("rc1.qcow2", opts="refcount_bits=1"),
            qcow2_img("xl2.qcow2", opts="extended_l2=on"),
            qcow2_img("pre.qcow2", opts="preallocation=metadata"),
        ],
        theme=T,
    ),
    sc(
        "drv_qcow2_runtime_options",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q1",
                    "file": fnode("a.qcow2"),
                    "lazy-refcounts": True,
                    "cache-size": 1048576,
                    "pass-discard-request": True,
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q2",
                    "read-only": True,
                    "file": fnode("b.qcow2"),
                    "l2-cache-entry-size": 131072,
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q3",
                    "read-only": True,
                    "file": fnode("b.qcow2"),
                    "l2-cache-size": 1048576,
                    "cache-size": 524288,
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q4",
                    "read-only": True,
                    "file": fnode("b.qcow2"),
                    "overlap-check": "none",
                    "cache-clean-interval": 0,
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2"), qcow2_img("b.qcow2")],
        theme=T,
    ),
    sc(
        "drv_throttle_basic",
        [
            tg("tg0", iops_total=100, bps_total=1048576),
            add(
                {"driver": "throttle", "node-name": "t", "throttle-group": "tg0", "file": null("n")}
            ),
            add({"driver": "throttle", "node-name": "t2", "throttle-group": "tg0", "file": "t"}),
            obj_del("tg0"),
            delete("t2"),
            delete("t"),
            obj_del("tg0"),
            obj_del("tg0"),
        ],
        theme=T,
        doc="throttle nodes over a group; object-del of a group in use",
    ),
    sc(
        "drv_throttle_bad_group",
        [
            add({"driver": "throttle", "node-name": "t", "throttle-group": "nope", "file": null()}),
            add({"driver": "throttle", "node-name": "t", "file": null()}),
            add({"driver": "throttle", "node-name": "t", "throttle-group": "", "file": null()}),
            add({"driver": "throttle", "node-name": "t", "throttle-group": "tg0"}),
            add(null("n")),
            add({"driver": "throttle", "node-name": "t", "throttle-group": "n", "file": "n"}),
        ],
        theme=T,
    ),
    sc(
        "drv_quorum_basic",
        [
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 2,
                    "children": [null("c0"), null("c1"), null("c2")],
                }
            ),
            add({"driver": "quorum", "node-name": "q1", "vote-threshold": 1, "children": [null()]}),
            add(
                {
                    "driver": "quorum",
                    "node-name": "qb",
                    "vote-threshold": 2,
                    "blkverify": True,
                    "children": [null(), null()],
                }
            ),
            add(
                {
                    "driver": "quorum",
                    "node-name": "qr",
                    "vote-threshold": 1,
                    "read-pattern": "fifo",
                    "rewrite-corrupted": False,
                    "children": [null(), null()],
                }
            ),
        ],
        theme=T,
    ),
    sc(
        "drv_quorum_bad",
        [
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 4,
                    "children": [null(), null()],
                }
            ),
            add({"driver": "quorum", "node-name": "q", "vote-threshold": 0, "children": [null()]}),
            add({"driver": "quorum", "node-name": "q", "vote-threshold": 1, "children": []}),
            add({"driver": "quorum", "node-name": "q", "children": [null()]}),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "blkverify": True,
                    "children": [null(), null(), null()],
                }
            ),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "rewrite-corrupted": True,
                    "read-pattern": "fifo",
                    "children": [null(), null()],
                }
            ),
            # fifo: blkverify is not even checked (fuzz 5e24214b52), with rewrite too
            add(
                {
                    "driver": "quorum",
                    "node-name": "qf",
                    "vote-threshold": 1,
                    "blkverify": True,
                    "rewrite-corrupted": True,
                    "read-pattern": "fifo",
                    "children": [null(), null()],
                }
            ),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 2,
                    "children": [null("d"), null("d")],
                }
            ),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q3",
                    "vote-threshold": 2,
                    "children": [null("d"), null("d")],
                }
            ),
            add(null("ok")),
        ],
        theme=T,
    ),
    sc(
        "drv_quorum_references",
        [
            add(null("a")),
            add(null("b")),
            add(null("c")),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 2,
                    "children": ["a", "b", "c"],
                }
            ),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q2",
                    "vote-threshold": 1,
                    "children": ["a", null("x")],
                }
            ),
            delete("a"),
            delete("q"),
            delete("q2"),
            delete("a"),
        ],
        theme=T,
    ),
    sc(
        "drv_quorum_child_driver_required",
        [
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "children": [
                        {"file": fnode("a.qcow2")},
                        {"driver": "raw", "file": fnode("b.raw")},
                    ],
                }
            ),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "children": [
                        {"driver": "qcow2", "file": fnode("a.qcow2")},
                        {"driver": "raw", "file": fnode("b.raw")},
                    ],
                }
            ),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q2",
                    "vote-threshold": 1,
                    "children": [null(size=1048576), {"driver": "raw", "file": fnode("b.raw")}],
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2"), raw_img("b.raw")],
        theme=T,
        doc="QAPI needs a driver per quorum child; children of different sizes fail",
    ),
    sc(
        "drv_copy_on_read",
        [
            add(
                {
                    "driver": "copy-on-read",
                    "node-name": "cor",
                    "file": {"driver": "qcow2", "node-name": "q", "file": fnode("a.qcow2")},
                }
            ),
            add({"driver": "copy-on-read", "node-name": "cor2", "read-only": True, "file": null()}),
            add(
                {"driver": "copy-on-read", "node-name": "cor3", "file": null(), "bottom": "nothere"}
            ),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "drv_blkdebug",
        [
            add({"driver": "blkdebug", "node-name": "d1", "image": null("i1")}),
            add({"driver": "blkdebug", "node-name": "d2", "align": 4096, "image": null()}),
            add({"driver": "blkdebug", "node-name": "d3", "config": "/dev/null", "image": null()}),
            add(
                {
                    "driver": "blkdebug",
                    "node-name": "d4",
                    "image": null(),
                    "max-transfer": 65536,
                    "opt-write-zero": 4096,
                }
            ),
            add({"driver": "blkdebug", "node-name": "d5", "align": 3, "image": null()}),
            add(
                {
                    "driver": "blkdebug",
                    "node-name": "d6",
                    "config": "{dir}/nothere.cfg",
                    "image": null(),
                }
            ),
            add({"driver": "blkdebug", "node-name": "d7"}),
        ],
        theme=T,
    ),
    sc(
        "drv_blkdebug_blkverify_backing_filenames",
        [
            add({"driver": "qcow2", "node-name": "t1", "file": fnode("t1.qcow2")}),
            add({"driver": "qcow2", "node-name": "t2", "file": fnode("t2.qcow2")}),
            add({"driver": "qcow2", "node-name": "t3", "file": fnode("t3.qcow2")}),
            add({"driver": "qcow2", "node-name": "t4", "file": fnode("t4.qcow2")}),
            add({"driver": "qcow2", "node-name": "t5", "file": fnode("t5.qcow2")}),
            qnodes(),
        ],
        setup=[
            qcow2_img("b.qcow2"),
            qcow2_img("t1.qcow2", backing="blkdebug::{dir}/b.qcow2", unsafe=True),
            qcow2_img("t2.qcow2", backing="blkdebug:", unsafe=True),
            qcow2_img("t3.qcow2", backing="blkverify:{dir}/b.qcow2", unsafe=True),
            qcow2_img("t4.qcow2", backing="blkdebug:{dir}/no.cfg:{dir}/b.qcow2", unsafe=True),
            raw_img("r.raw"),
            # (raw and test must read alike: QEMU's blkverify exits the process on a mismatch)
            qcow2_img(
                "t5.qcow2", backing="blkverify:{dir}/r.raw:{dir}/r.raw", fmt="raw", unsafe=True
            ),
        ],
        doc="blkdebug_parse_filename / blkverify_parse_filename on header backing strings",
        theme=T,
    ),
    sc(
        "drv_blkverify_preallocate_compress",
        [
            add({"driver": "blkverify", "node-name": "bv", "test": null("t"), "raw": null("r")}),
            add({"driver": "preallocate", "node-name": "pa", "file": fnode("a.raw")}),
            add(
                {
                    "driver": "compress",
                    "node-name": "cmp",
                    "file": {"driver": "qcow2", "node-name": "q", "file": fnode("b.qcow2")},
                }
            ),
            add({"driver": "compress", "node-name": "cmp2", "file": null()}),
        ],
        setup=[raw_img("a.raw", "64k"), qcow2_img("b.qcow2")],
        theme=T,
    ),
    sc(
        "drv_qcow2_on_qcow2_raw_file",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q",
                    "file": {"driver": "raw", "node-name": "r", "file": fnode("a.qcow2")},
                }
            ),
            add(
                {
                    "driver": "raw",
                    "node-name": "r2",
                    "read-only": True,
                    "file": {"driver": "qcow2", "file": fnode("b.qcow2")},
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2"), qcow2_img("b.qcow2")],
        theme=T,
    ),
    sc(
        "drv_file_on_qemu_img_created_sizes",
        [
            add(fnode("odd.raw", "odd")),
            add({"driver": "raw", "node-name": "r", "file": fnode("zero.raw")}),
            add({"driver": "qcow2", "node-name": "q", "file": fnode("big.qcow2")}),
        ],
        setup=[raw_img("odd.raw", "1000"), raw_img("zero.raw", "0"), qcow2_img("big.qcow2", "1T")],
        theme=T,
    ),
    sc(
        "drv_qcow2_image_with_data",
        [
            add({"driver": "qcow2", "node-name": "q", "read-only": True, "file": fnode("a.qcow2")}),
            add(
                {
                    "driver": "raw",
                    "node-name": "r",
                    "read-only": True,
                    "file": fnode("a.qcow2", "af"),
                }
            ),
        ],
        setup=[qcow2_img("a.qcow2", "2M"), qemu_img("snapshot -c snap1 {dir}/a.qcow2")],
        theme=T,
        doc="internal snapshot in the image; format-specific data and actual-size must match",
    ),
]
