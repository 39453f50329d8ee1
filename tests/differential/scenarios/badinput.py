"""Bad input of every kind: QAPI errors, missing/odd files, hostile qcow2 headers."""

from __future__ import annotations

import struct

from tests.differential.scenarios._common import (
    Chmod,
    MkDir,
    Raw,
    WriteFile,
    add,
    cmd,
    fnode,
    null,
    qcow2_header,
    qcow2_img,
    raw_img,
    sc,
)

T = "badinput"


def _hdr(**kw: int) -> bytes:
    return qcow2_header(**kw)  # type: ignore[arg-type]


def _with_backing_name(name: bytes) -> bytes:
    h = bytearray(qcow2_header(backing_offset=0x1000, backing_size=len(name)))
    h[0x1000 : 0x1000 + len(name)] = name
    return bytes(h)


def _with_refcount(data: bytes) -> bytes:
    """Give a hand-made header a plausible refcount table/block (clusters 0..3 referenced)."""
    h = bytearray(data)
    struct.pack_into(">Q", h, 0x10000, 0x20000)
    for i in range(4):
        struct.pack_into(">H", h, 0x20000 + 2 * i, 1)
    return bytes(h)


SCENARIOS = [
    sc(
        "bad_unknown_driver",
        [
            add({"driver": "nosuch", "node-name": "x"}),
            add({"driver": "raw", "node-name": "x", "file": {"driver": "nosuch"}}),
            add({"driver": "", "node-name": "x"}),
        ],
        theme=T,
    ),
    sc(
        "bad_unknown_members",
        [
            add({"driver": "null-co", "node-name": "x", "bogus": 1}),
            add({"driver": "raw", "node-name": "x", "file": {"driver": "null-co", "bogus": 1}}),
            add({"driver": "file", "node-name": "x", "filename": "{dir}/a.raw", "size": 5}),
            add({"driver": "null-co", "node-name": "x", "cache": {}}),
            add({"driver": "null-co", "node-name": "x", "cache": {"writeback": True}}),
            add({"driver": "raw", "node-name": "x", "file": {"driver": "null-co", "cache": {}}}),
            cmd("blockdev-add", {}),
            cmd("blockdev-add"),
        ],
        setup=[raw_img("a.raw")],
        theme=T,
    ),
    sc(
        "bad_wrong_types",
        [
            add({"driver": "null-co", "node-name": "x", "read-only": "yes"}),
            add({"driver": "null-co", "node-name": "x", "size": "1024"}),
            add({"driver": "null-co", "node-name": 7}),
            add({"driver": "null-co", "node-name": "x", "detect-zeroes": "maybe"}),
            add({"driver": "null-co", "node-name": "x", "discard": "sometimes"}),
            add({"driver": "null-co", "node-name": "x", "cache": {"direct": 1}}),
            add({"driver": "raw", "node-name": "x", "file": 12}),
            add({"driver": "raw", "node-name": "x", "file": None}),
            add({"driver": "qcow2", "node-name": "x", "file": ["a"]}),
            add(
                {"driver": "quorum", "node-name": "x", "vote-threshold": "1", "children": [null()]}
            ),
            add({"driver": "quorum", "node-name": "x", "vote-threshold": 1, "children": "a"}),
            cmd("blockdev-add", ["driver", "null-co"]),  # type: ignore[arg-type]
        ],
        theme=T,
    ),
    sc(
        "bad_missing_required",
        [
            add({"driver": "file", "node-name": "x"}),
            add({"driver": "raw", "node-name": "x"}),
            add({"driver": "qcow2", "node-name": "x"}),
            add({"driver": "blkverify", "node-name": "x", "test": null()}),
            add({"driver": "quorum", "node-name": "x", "vote-threshold": 1}),
            add({"node-name": "x"}),
            add({"driver": "raw", "node-name": "x", "file": {"node-name": "y"}}),
            add({"driver": "raw", "node-name": "x", "file": {"filename": "{dir}/a.raw"}}),
        ],
        setup=[raw_img("a.raw")],
        theme=T,
    ),
    sc(
        "bad_missing_files",
        [
            add(fnode("nothere.raw", "x")),
            add({"driver": "qcow2", "node-name": "x", "file": fnode("nothere.qcow2")}),
            add(fnode("nodir/x.raw", "x")),
            add({"driver": "file", "node-name": "x", "filename": ""}),
            add({"driver": "file", "node-name": "x", "filename": "relative-nothere.raw"}),
            add(null("ok")),
        ],
        theme=T,
    ),
    sc(
        "bad_not_a_qcow2",
        [
            add({"driver": "qcow2", "node-name": "x", "file": fnode("a.raw")}),
            add({"driver": "qcow2", "node-name": "x", "file": null()}),
            add({"driver": "qcow2", "node-name": "x", "file": fnode("empty.raw")}),
            add({"driver": "qcow2", "node-name": "x", "read-only": True, "file": fnode("a.raw")}),
        ],
        setup=[raw_img("a.raw"), raw_img("empty.raw", "0")],
        theme=T,
    ),
    sc(
        "bad_directory",
        [
            add(fnode("d", "x")),
            add(fnode("d", "x", read_only=True)),
            add({"driver": "qcow2", "node-name": "x", "file": fnode("d")}),
            add({"driver": "host_device", "node-name": "x", "filename": "{dir}/d"}),
        ],
        setup=[MkDir("d")],
        theme=T,
    ),
    sc(
        "bad_unreadable_file",
        [
            add(fnode("a.raw", "x")),
            add({"driver": "qcow2", "node-name": "y", "file": fnode("b.qcow2")}),
        ],
        setup=[raw_img("a.raw"), qcow2_img("b.qcow2"), Chmod("a.raw", 0), Chmod("b.qcow2", 0o444)],
        theme=T,
        doc="mode 000/0444 (under root both still open: the oracle decides)",
    ),
    sc(
        "bad_qcow2_truncated",
        [
            add({"driver": "qcow2", "node-name": "a", "file": fnode("t50")}),
            add({"driver": "qcow2", "node-name": "b", "file": fnode("t72")}),
            add({"driver": "qcow2", "node-name": "c", "file": fnode("t104")}),
            add({"driver": "qcow2", "node-name": "d", "read-only": True, "file": fnode("t104")}),
        ],
        setup=[
            WriteFile("t50", _hdr()[:50]),
            WriteFile("t72", _hdr(version=2)[:72]),
            WriteFile("t104", _hdr()[:104]),
        ],
        theme=T,
    ),
    sc(
        "bad_qcow2_header_fields",
        [
            add({"driver": "qcow2", "node-name": "v1", "read-only": True, "file": fnode("v1")}),
            add({"driver": "qcow2", "node-name": "v4", "read-only": True, "file": fnode("v4")}),
            add({"driver": "qcow2", "node-name": "cb8", "read-only": True, "file": fnode("cb8")}),
            add({"driver": "qcow2", "node-name": "cb22", "read-only": True, "file": fnode("cb22")}),
            add({"driver": "qcow2", "node-name": "hl", "read-only": True, "file": fnode("hl")}),
            add({"driver": "qcow2", "node-name": "inc", "read-only": True, "file": fnode("inc")}),
            add({"driver": "qcow2", "node-name": "ro7", "read-only": True, "file": fnode("ro7")}),
            add({"driver": "qcow2", "node-name": "cr", "read-only": True, "file": fnode("cr")}),
        ],
        setup=[
            WriteFile("v1", _hdr(version=1)),
            WriteFile("v4", _hdr(version=4)),
            WriteFile("cb8", _hdr(cluster_bits=8)),
            WriteFile("cb22", _hdr(cluster_bits=22)),
            WriteFile("hl", _hdr(header_length=50)),
            WriteFile("inc", _hdr(incompatible=1 << 40)),
            WriteFile("ro7", _hdr(refcount_order=7)),
            WriteFile("cr", _hdr(crypt=7)),
        ],
        theme=T,
    ),
    sc(
        "bad_qcow2_tables",
        [
            add(
                {"driver": "qcow2", "node-name": "l1big", "read-only": True, "file": fnode("l1big")}
            ),
            add({"driver": "qcow2", "node-name": "l1un", "read-only": True, "file": fnode("l1un")}),
            add({"driver": "qcow2", "node-name": "rtun", "read-only": True, "file": fnode("rtun")}),
            add(
                {"driver": "qcow2", "node-name": "rtbig", "read-only": True, "file": fnode("rtbig")}
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "l1small",
                    "read-only": True,
                    "file": fnode("l1small"),
                }
            ),
            add({"driver": "qcow2", "node-name": "snap", "read-only": True, "file": fnode("snap")}),
            add({"driver": "qcow2", "node-name": "huge", "read-only": True, "file": fnode("huge")}),
            add(
                {"driver": "qcow2", "node-name": "okish", "read-only": True, "file": fnode("okish")}
            ),
        ],
        setup=[
            WriteFile("l1big", _hdr(l1_size=1 << 30)),
            WriteFile("l1un", _hdr(l1_offset=0x30001)),
            WriteFile("rtun", _hdr(rt_offset=0x10003)),
            WriteFile("rtbig", _hdr(rt_clusters=1 << 26)),
            WriteFile("l1small", _hdr(size=1 << 40, l1_size=1)),
            WriteFile("snap", _hdr(nb_snapshots=70000, snapshots_offset=0x30000)),
            WriteFile("huge", _hdr(size=1 << 62)),
            WriteFile("okish", _with_refcount(_hdr())),
        ],
        theme=T,
    ),
    sc(
        "bad_qcow2_backing_name",
        [
            add({"driver": "qcow2", "node-name": "a", "read-only": True, "file": fnode("long")}),
            add({"driver": "qcow2", "node-name": "b", "read-only": True, "file": fnode("past")}),
            add({"driver": "qcow2", "node-name": "c", "read-only": True, "file": fnode("ok")}),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "d",
                    "read-only": True,
                    "backing": None,
                    "file": fnode("ok"),
                }
            ),
        ],
        setup=[
            WriteFile("long", _with_backing_name(b"x" * 1100)),
            WriteFile("past", qcow2_header(backing_offset=1 << 30, backing_size=10)),
            WriteFile("ok", _with_refcount(_with_backing_name(b"nothere.img"))),
        ],
        theme=T,
    ),
    sc(
        "bad_raw_wire_json",
        [
            Raw('{"execute": 1}\n'),
            Raw('{"execute": "query-version", "arguments": 1}\n'),
            Raw(
                '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "w"}, '
                '"extra": 1}\n'
            ),
            add(null("w")),
        ],
        theme=T,
        doc="minimal wire-level checks (wire tests are owned elsewhere)",
    ),
    sc(
        "bad_atomic_failure_leaves_nothing",
        [
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "children": [
                        null("c0"),
                        {"driver": "raw", "node-name": "c1", "file": null("c1f")},
                        {"driver": "qcow2", "node-name": "c2", "file": fnode("nothere")},
                    ],
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "file": fnode("t.qcow2", "tf"),
                    "backing": {
                        "driver": "qcow2",
                        "node-name": "b",
                        "file": fnode("nothere", "bf"),
                    },
                }
            ),
            add(null("c0")),
            add(null("c1f")),
            add(null("tf")),
        ],
        setup=[qcow2_img("t.qcow2")],
        theme=T,
    ),
]
