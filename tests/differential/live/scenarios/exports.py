"""Exports, quorum children and blockdev-del with a guest attached.

block-export-add/-del (writable and read-only, two names on one node, a
filter node), x-blockdev-change on an exported quorum, and the in-use rules
of blockdev-del for nodes under an export.
"""

from __future__ import annotations

from tests.differential.harness import qemu_img
from tests.differential.live.scenarios.common import (
    QUERY,
    RAWS,
    R,
    View,
    W,
    add,
    cmd,
    export,
    export_del,
    fnode,
    hd,
    io,
    qcow2,
    sc,
)

T = "exports"


def qraw(i: int) -> dict[str, object]:
    return {"driver": "raw", "node-name": f"c{i}", "file": fnode(f"q{i}.raw", f"c{i}-file")}


QUORUM2 = [
    add(qraw(0)),
    add(qraw(1)),
    add(qraw(2)),
    add({"driver": "quorum", "node-name": "qu", "vote-threshold": 1, "children": ["c0", "c1"]}),
    export("e0", "qu"),
]

SCENARIOS = [
    sc(
        "write_zeroes_aligned",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io(
                "e0", "write -z 1M 64k", "write -z -u 0 128k", "write -z 3M 64k", "read -P 0 0 128k"
            ),
            View("e0"),
            QUERY,
        ],
        theme=T,
        doc="whole-cluster zero writes (with and without unmap) through the export",
    ),
    sc(
        "write_zeroes_subcluster",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io("e0", "write -z 1M 4k", "write -z -u 3M 4k", "read -P 0 1M 4k"),
            View("e0"),
        ],
        theme=T,
        doc="a zero write inside an unallocated cluster makes a zero cluster",
    ),
    sc(
        "export_add_del_readd",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io("e0", W),
            export_del("e0"),
            io("e0", R),
            View("e0"),
            export("e0", "hd0", name="again"),
            io("again", R, "write -P 0x06 64k 64k"),
            View("again"),
        ],
        theme=T,
        doc="a deleted export refuses connections; a new one sees the data",
    ),
    sc(
        "export_readonly_refuses_writes",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0", writable=False),
            io("e0", W),
            io("e0", "read -P 0x11 0 64k", ro=True),
            io("e0", "write -z 0 64k"),
            io("e0", "discard 0 64k"),
            View("e0"),
        ],
        theme=T,
        doc="qemu-io's read-write open of a read-only export fails alike",
    ),
    sc(
        "export_two_names_one_node",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            export("e1", "hd0", writable=False),
            io("e0", W),
            io("e1", R, ro=True),
            export_del("e0"),
            io("e1", R, ro=True),
            View("e1"),
        ],
        theme=T,
    ),
    sc(
        "export_of_readonly_node_as_writable",
        [
            add(hd("hd0", "base.qcow2", **{"read-only": True})),
            export("e0", "hd0"),
            export("e0", "hd0", writable=False),
            io("e0", "read -P 0x11 0 64k", ro=True),
            View("e0"),
        ],
        theme=T,
    ),
    sc(
        "export_on_filter_node",
        [
            cmd(
                "object-add",
                {"qom-type": "throttle-group", "id": "tg0", "limits": {"iops-total": 10000}},
            ),
            add(hd("hd0", "base.qcow2")),
            add({"driver": "throttle", "node-name": "thr", "throttle-group": "tg0", "file": "hd0"}),
            export("e0", "thr"),
            io("e0", W, R, "write -z 1M 64k", "read -P 0 1M 64k"),
            View("e0"),
        ],
        theme=T,
    ),
    sc(
        "export_bad_requests",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            export("e0", "hd0"),
            export("e1", "hd0", name="e0"),
            export("e2", "nosuch"),
            export_del("nosuch"),
            io("nosuch", R),
            io("e0", W),
            View("e0"),
        ],
        theme=T,
        doc="refused export requests change nothing for the guest",
    ),
    sc(
        "export_del_safe_mode_without_clients",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            export("e1", "hd0"),
            export_del("e1", None),
            export_del("e1", None),
            io("e0", W, R),
            View("e0"),
        ],
        theme=T,
        doc="QEMU's default (safe) mode on an export no guest ever connected to",
    ),
    sc(
        "export_del_hard_mode",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io("e0", W),
            export_del("e0"),
            cmd("blockdev-del", {"node-name": "hd0"}),
            QUERY,
        ],
        theme=T,
    ),
    sc(
        "blockdev_del_exported_node_refused",
        [
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            cmd("blockdev-del", {"node-name": "hd0"}),
            cmd("blockdev-del", {"node-name": "hd0-file"}),
            io("e0", W, R),
            export_del("e0"),
            cmd("blockdev-del", {"node-name": "hd0"}),
            add(hd("hd0", "base.qcow2")),
            export("e0", "hd0"),
            io("e0", R),
            View("e0"),
        ],
        theme=T,
        doc="blockdev-del of an exported node: in use; after export-del it goes",
    ),
    sc(
        "quorum_add_child_under_export",
        [
            *QUORUM2,
            io("e0", "read -P 0x55 0 64k", W),
            cmd("x-blockdev-change", {"parent": "qu", "node": "c2"}),
            io("e0", "write -P 0x07 64k 64k", "read -P 0x07 64k 64k", R),
            View("e0"),
            QUERY,
        ],
        setup=RAWS,
        theme=T,
        doc="the added child receives writes from then on",
    ),
    sc(
        "quorum_del_child_under_export",
        [
            *QUORUM2,
            cmd("x-blockdev-change", {"parent": "qu", "node": "c2"}),
            cmd("x-blockdev-change", {"parent": "qu", "child": "children.0"}),
            io("e0", W, R),
            View("e0"),
            cmd("x-blockdev-change", {"parent": "qu", "child": "children.1"}),
            io("e0", R),
        ],
        setup=RAWS,
        theme=T,
        doc="a removed child gets no more writes",
    ),
    sc(
        "quorum_majority_read",
        [
            add(qraw(0)),
            add(qraw(1)),
            add({"driver": "raw", "node-name": "c2", "file": fnode("other.raw", "c2-file")}),
            add(
                {
                    "driver": "quorum",
                    "node-name": "qu",
                    "vote-threshold": 2,
                    "children": ["c0", "c1", "c2"],
                }
            ),
            export("e0", "qu"),
            io("e0", "read -P 0x55 0 64k", W, R),
            View("e0"),
        ],
        setup=RAWS,
        theme=T,
        doc="2 of 3 agree: reads return the majority's data",
    ),
    sc(
        "qcow2_inside_qcow2_grows_its_container",
        [
            add(hd("inner", "inner.qcow2")),
            add({"driver": "qcow2", "node-name": "outer", "file": "inner"}),
            export("e0", "outer"),
            io("e0", "write -P 0x5a 0 1M", "read -P 0x5a 0 1M"),
            View("e0"),
            QUERY,
        ],
        setup=(
            qcow2("outer.qcow2", "4M"),
            qemu_img("convert -f raw -O qcow2 {dir}/outer.qcow2 {dir}/inner.qcow2"),
        ),
        theme=T,
        doc="a qcow2 image stored as the guest data of another: the outer one's cluster "
        "allocations write past the inner one's virtual size, which grows in memory "
        "(bdrv_co_write_req_finish)",
    ),
    sc(
        "qcow2_inside_qcow2_grows_its_l1_table",
        [
            add(hd("inner", "inner.qcow2")),
            add({"driver": "qcow2", "node-name": "outer", "file": "inner"}),
            export("e0", "outer"),
            io("e0", "write -P 0x5a 0 64k", "write -P 0xa5 1M 64k", "read -P 0xa5 1M 64k"),
            View("e0"),
            QUERY,
        ],
        setup=(
            qcow2("outer.qcow2", "4M"),
            qemu_img(
                "convert -f raw -O qcow2 -o cluster_size=512 {dir}/outer.qcow2 {dir}/inner.qcow2"
            ),
        ),
        theme=T,
        doc="the same with 512-byte clusters in the inner image: one L1 entry covers 32 KiB, "
        "so the writes past its end grow the L1 table too (qcow2_grow_l1_table, bumped by "
        "half each time)",
    ),
]
