"""Permissions: conflicts, read-only vs writers, force-share, image locks (graph §2)."""

from __future__ import annotations

from tests.differential.scenarios._common import (
    Shell,
    add,
    cmd,
    delete,
    fnode,
    null,
    qcow2_img,
    raw_img,
    sc,
    tg,
)

T = "perms"


def _nbd(dirsock: str = "{dir}/nbd.sock") -> dict:
    return cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": dirsock}}})


def _export(eid: str, node: str, writable: bool) -> dict:
    return cmd(
        "block-export-add", {"type": "nbd", "id": eid, "node-name": node, "writable": writable}
    )


SCENARIOS = [
    sc(
        "perm_two_qcow2_one_file",
        [
            add(fnode("a.qcow2", "f")),
            add({"driver": "qcow2", "node-name": "q1", "file": "f"}),
            add({"driver": "qcow2", "node-name": "q2", "file": "f"}),
            add({"driver": "qcow2", "node-name": "q3", "read-only": True, "file": "f"}),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q4",
                    "read-only": True,
                    "force-share": True,
                    "file": "f",
                }
            ),
            add({"driver": "raw", "node-name": "r", "file": "f"}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="a second format node on a file used by a rw qcow2 conflicts (force-share on the parent does not help)",
    ),
    sc(
        "perm_two_ro_qcow2_one_file",
        [
            add(fnode("a.qcow2", "f")),
            add({"driver": "qcow2", "node-name": "q1", "read-only": True, "file": "f"}),
            add({"driver": "qcow2", "node-name": "q2", "read-only": True, "file": "f"}),
            add({"driver": "qcow2", "node-name": "q3", "file": "f"}),
            delete("q1"),
            delete("q2"),
            add({"driver": "qcow2", "node-name": "q3", "file": "f"}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "perm_force_share_on_child",
        [
            add(fnode("a.qcow2", "f", read_only=True, force_share=True)),
            add({"driver": "qcow2", "node-name": "q1", "read-only": True, "file": "f"}),
            add({"driver": "qcow2", "node-name": "q2", "read-only": True, "file": "f"}),
            add({"driver": "qcow2", "node-name": "q3", "file": "f"}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "perm_rw_qcow2_on_ro_file",
        [
            add(fnode("a.qcow2", "f", read_only=True)),
            add({"driver": "qcow2", "node-name": "q", "file": "f"}),
            add({"driver": "raw", "node-name": "r", "file": "f"}),
            add({"driver": "qcow2", "node-name": "q2", "read-only": True, "file": "f"}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="RO/RW mismatch is only refused when a user needs the permission",
    ),
    sc(
        "perm_rw_qcow2_referenced_as_backing",
        [
            add({"driver": "qcow2", "node-name": "b", "file": fnode("b.qcow2", "bf")}),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "backing": "b",
                    "file": fnode("t.qcow2", "tf"),
                }
            ),
            add({"driver": "qcow2", "node-name": "b2", "read-only": True, "file": "bf"}),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2")],
        theme=T,
    ),
    sc(
        "perm_image_lock_same_file",
        [
            add({"driver": "qcow2", "node-name": "q1", "file": fnode("a.qcow2")}),
            add({"driver": "qcow2", "node-name": "q2", "file": fnode("a.qcow2")}),
            add(
                {"driver": "qcow2", "node-name": "q3", "read-only": True, "file": fnode("a.qcow2")}
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q4",
                    "read-only": True,
                    "force-share": True,
                    "file": fnode("a.qcow2"),
                }
            ),
            add({"driver": "qcow2", "node-name": "q5", "file": fnode("a.qcow2", locking="off")}),
            add({"driver": "raw", "node-name": "r", "file": fnode("a.qcow2")}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="two file nodes on one image conflict via OFD locks",
    ),
    sc(
        "perm_lock_backing_held",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2")}),
            add({"driver": "qcow2", "node-name": "b", "file": fnode("b.qcow2")}),
            add(
                {"driver": "qcow2", "node-name": "b2", "read-only": True, "file": fnode("b.qcow2")}
            ),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
        doc='a second rw qcow2 on a file held by a header backing: Failed to get "write" lock',
    ),
    sc(
        "perm_quorum_children_shared",
        [
            add(null("a")),
            add(null("b")),
            add(
                {"driver": "quorum", "node-name": "q", "vote-threshold": 1, "children": ["a", "b"]}
            ),
            add({"driver": "raw", "node-name": "r", "file": "a"}),
            add({"driver": "qcow2", "node-name": "x", "file": "b"}),
        ],
        theme=T,
    ),
    sc(
        "perm_throttle_chain",
        [
            tg("g"),
            add({"driver": "qcow2", "node-name": "q", "file": fnode("a.qcow2")}),
            add({"driver": "throttle", "node-name": "t1", "throttle-group": "g", "file": "q"}),
            add({"driver": "throttle", "node-name": "t2", "throttle-group": "g", "file": "t1"}),
            add({"driver": "copy-on-read", "node-name": "c", "file": "q"}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "perm_export_writers",
        [
            _nbd(),
            add({"driver": "qcow2", "node-name": "q", "file": fnode("a.qcow2", "qf")}),
            _export("e1", "q", True),
            add({"driver": "raw", "node-name": "ro", "read-only": True, "file": fnode("b.raw")}),
            _export("e2", "ro", True),
            _export("e3", "ro", False),
            add({"driver": "raw", "node-name": "r2", "file": "qf"}),
            delete("q"),
            cmd("block-export-del", {"id": "e1"}),
        ],
        setup=[qcow2_img("a.qcow2"), raw_img("b.raw")],
        theme=T,
        doc="writable export needs a rw node; a node with an export is in use",
    ),
    sc(
        "perm_export_under_filter_conflict",
        [
            _nbd(),
            add({"driver": "raw", "node-name": "r", "file": fnode("a.qcow2", "f")}),
            _export("e1", "r", True),
            add({"driver": "qcow2", "node-name": "q", "file": "f"}),
            add({"driver": "blkdebug", "node-name": "d", "image": "f"}),
            add({"driver": "quorum", "node-name": "qq", "vote-threshold": 1, "children": ["f"]}),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
    ),
    sc(
        "perm_direct_io_alignment_at_open",
        [
            _nbd(),
            # a hole at offset 0: the 1-byte O_DIRECT probe read succeeds, so the node
            # gets the safe alignment (4096) and its 197120 bytes are not a multiple
            add(
                {
                    "driver": "raw",
                    "node-name": "h",
                    "file": fnode("hole.raw", "hf", cache={"direct": True}),
                }
            ),
            _export("e1", "h", True),
            _export("e2", "h", False),
            # data at offset 0: 1 byte is refused, 512 is the alignment; 197120 is a multiple
            add(
                {
                    "driver": "raw",
                    "node-name": "d",
                    "file": fnode("data.raw", "df", cache={"direct": True}),
                }
            ),
            _export("e3", "d", True),
            # a multiple of 4096 is fine with the safe alignment too
            add(
                {
                    "driver": "raw",
                    "node-name": "k",
                    "file": fnode("page.raw", "kf", cache={"direct": True}),
                }
            ),
            _export("e4", "k", True),
        ],
        setup=[
            # truncate, not qemu-img create: QEMU allocates a new image's first block
            # (allocate_first_block) precisely so that this probe finds the disk's alignment
            Shell(("truncate", "-s", "197120", "{dir}/hole.raw")),
            raw_img("data.raw", "197120"),
            Shell(("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4k", "{dir}/data.raw")),
            raw_img("page.raw", "196608"),
        ],
        theme=T,
        doc="rule P5: a writer without resize on a cache.direct=on file whose length is not a "
        "multiple of its probed request alignment is refused",
    ),
    sc(
        "perm_direct_io_alignment_after_reopen",
        [
            _nbd(),
            add({"driver": "raw", "node-name": "d", "file": fnode("data.raw", "df")}),
            _export("e1", "d", True),
            cmd("block-export-del", {"id": "e1"}),
            # the reopen itself is checked with the old alignment and succeeds...
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "raw", "node-name": "d", "cache": {"direct": True}, "file": "df"}
                    ]
                },
            ),
            # ...but it probed through the old buffered descriptor: the safe value, 4096
            _export("e2", "d", True),
            _export("e3", "d", False),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {
                            "driver": "raw",
                            "node-name": "d",
                            "cache": {"direct": False},
                            "file": "df",
                        }
                    ]
                },
            ),
            cmd("block-export-del", {"id": "e3"}),
            _export("e4", "d", True),
        ],
        setup=[
            raw_img("data.raw", "197120"),
            Shell(("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 4k", "{dir}/data.raw")),
        ],
        theme=T,
        doc="rule P5 after a reopen that switches cache.direct on: QEMU 7.2 probes the new "
        "alignment through the previous descriptor",
    ),
    sc(
        "perm_filter_above_copy_before_write",
        [
            add({"driver": "qcow2", "node-name": "disk", "file": fnode("a.qcow2", "f")}),
            add({"driver": "null-co", "node-name": "tgt", "size": 1048576}),
            add(
                {
                    "driver": "copy-before-write",
                    "node-name": "cbw0",
                    "file": "disk",
                    "target": "tgt",
                }
            ),
            tg("tg0"),
            # the throttle has no parents, so it passes nothing down; still the filter below
            # now has a parent and unshares write on its file (cbw_child_perm)
            add(
                {"driver": "throttle", "node-name": "thr", "throttle-group": "tg0", "file": "cbw0"}
            ),
            delete("thr"),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="copy-before-write's child edges depend on whether it has parents at all "
        "(found by plan synthesis)",
    ),
    sc(
        "perm_direct_io_alignment_before_a_conflict",
        [
            _nbd(),
            add({"driver": "raw", "node-name": "n0", "file": fnode("a.qcow2", "f")}),
            _export("e0", "f", True),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "raw", "node-name": "n0", "cache": {"direct": True}, "file": "f"}
                    ]
                },
            ),
            # bdrv_open_inherit's probing BlockBackend on n0 re-checks f, which now has a
            # 4096-byte alignment and a writer without resize: P5, before the P3 conflict
            # the qcow2's own edge would cause
            add({"driver": "qcow2", "node-name": "q", "file": "n0", "backing": None}),
            add({"driver": "raw", "node-name": "n1", "file": fnode("b.qcow2", "g")}),
            _export("e1", "g", True),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "raw", "node-name": "n1", "cache": {"direct": True}, "file": "g"}
                    ]
                },
            ),
            # with a length that is a multiple of 4096 the conflict is what is left
            add({"driver": "qcow2", "node-name": "q2", "file": "n1", "backing": None}),
        ],
        setup=[
            qcow2_img("a.qcow2"),
            qcow2_img("b.qcow2"),
            Shell(("truncate", "-s", "200704", "{dir}/b.qcow2")),
        ],
        theme=T,
        doc="rule P5 is checked by the probe's refresh of the file's subtree (fuzz fa971d53d5)",
    ),
    sc(
        "perm_snapshot_drops_what_moved_parents_needed",
        [
            add({"driver": "raw", "node-name": "n0", "file": fnode("a.qcow2", "f")}),
            add({"driver": "copy-on-read", "node-name": "cor", "file": "n0"}),
            add({"driver": "qcow2", "node-name": "ovl", "file": "f"}),
            cmd("blockdev-snapshot", {"node": "n0", "overlay": "ovl"}),
            cmd("x-debug-query-block-graph"),
        ],
        setup=[qcow2_img("a.qcow2")],
        theme=T,
        doc="the copy-on-read filter moves from n0 to the overlay; n0, now only a backing, "
        "keeps no write-unchanged on its file: a node that lost a parent is recomputed by "
        "the overlay's refresh (fuzz 19f7100dee)",
    ),
]
