"""blockdev-reopen under live exports: options, backing and file (filter insertion).

Run-time options must be honoured after a reopen exactly as after an open
(``bdrv_reopen_commit`` copies ``detect_zeroes``, ``open_flags``): zero writes
under ``detect-zeroes: unmap`` allocate nothing, a read-only node refuses the
write permission an export holds, a ``backing`` change is seen by the next
guest read, and a filter put in by re-pointing ``file`` sees every request.
"""

from __future__ import annotations

from tests.differential.live.scenarios.common import (
    CHAIN,
    CHAIN3,
    QUERY,
    RAWS,
    R,
    View,
    W,
    add,
    cmd,
    export,
    fnode,
    hd,
    io,
    reopen,
    sc,
)

T = "reopen"
TG = cmd(
    "object-add",
    {
        "qom-type": "throttle-group",
        "id": "tg0",
        "limits": {"iops-total": 10000, "bps-total": 100 << 20},
    },
)
HD0 = hd("hd0", "base.qcow2")
#: the reopen entry that keeps hd0's file as it is
HD0_KEEP = {"driver": "qcow2", "node-name": "hd0", "file": "hd0-file"}
#: raw "fmt" over qcow2 "top" (over base): an exported parent whose file can be re-pointed
FMT_OVER_TOP = [
    add(hd("top", "top.qcow2")),
    add({"driver": "raw", "node-name": "fmt", "file": "top"}),
    export("e0", "fmt"),
]

SCENARIOS = [
    sc(
        "reopen_detect_zeroes_unmap",
        [
            add(HD0),
            export("e0", "hd0"),
            io("e0", "write -P 0 3M 64k"),
            reopen({**HD0_KEEP, "detect-zeroes": "unmap", "discard": "unmap"}),
            io("e0", "write -P 0 3200k 64k", "write -P 0 0 64k", "read -P 0 0 64k"),
            View("e0"),
            QUERY,
        ],
        theme=T,
        doc="issue 7 reproducer: zero writes after the reopen allocate no data",
    ),
    sc(
        "reopen_detect_zeroes_on",
        [
            add(HD0),
            export("e0", "hd0"),
            reopen({**HD0_KEEP, "detect-zeroes": "on"}),
            io("e0", "write -P 0 3M 128k", "write -P 0 64k 64k", "read -P 0 3M 128k"),
            View("e0"),
        ],
        theme=T,
        doc="detect-zeroes=on turns zero writes into write-zeroes (no unmap)",
    ),
    sc(
        "reopen_detect_zeroes_reset",
        [
            add({**HD0, "detect-zeroes": "unmap", "discard": "unmap"}),
            export("e0", "hd0"),
            io("e0", "write -P 0 3M 64k"),
            reopen(HD0_KEEP),
            io("e0", "write -P 0 3200k 64k"),
            View("e0"),
            QUERY,
        ],
        theme=T,
        doc="an omitted detect-zeroes resets to off: the second zero write allocates",
    ),
    sc(
        "reopen_discard_unmap",
        [
            add(HD0),
            export("e0", "hd0"),
            io("e0", "discard 0 64k", "read -P 0x11 64k 64k"),
            reopen({**HD0_KEEP, "discard": "unmap"}),
            io("e0", "discard 128k 128k", "write -z -u 2M 64k", "read -P 0 2M 64k"),
            View("e0"),
        ],
        theme=T,
    ),
    sc(
        "reopen_cache_and_flush",
        [
            add(HD0),
            export("e0", "hd0"),
            reopen({**HD0_KEEP, "cache": {"no-flush": True}}),
            io("e0", W, "flush", R),
            reopen({**HD0_KEEP, "cache": {"direct": False, "no-flush": False}}),
            io("e0", "write -P 0xac 64k 64k", "flush"),
            View("e0"),
            QUERY,
        ],
        theme=T,
    ),
    sc(
        "reopen_read_only_refused_under_writable_export",
        [
            add(HD0),
            export("e0", "hd0"),
            reopen({**HD0_KEEP, "read-only": True}),
            io("e0", W, R),
            View("e0"),
        ],
        theme=T,
        doc="the export's write permission blocks the read-only switch",
    ),
    sc(
        "reopen_read_only_under_readonly_export",
        [
            add(HD0),
            export("e0", "hd0", writable=False),
            reopen({**HD0_KEEP, "read-only": True}),
            io("e0", "read -P 0x11 0 64k", ro=True),
            io("e0", W),
            reopen(HD0_KEEP),
            export("e1", "hd0"),
            io("e1", W, R),
            View("e0"),
            QUERY,
        ],
        theme=T,
        doc="read-only and back; a writable export is possible again afterwards",
    ),
    sc(
        "reopen_backing_cut",
        [
            add(hd("top", "top.qcow2")),
            export("e0", "top"),
            io("e0", "read -P 0x11 0 64k", "read -P 0x44 512k 64k"),
            reopen({"driver": "qcow2", "node-name": "top", "file": "top-file", "backing": None}),
            io("e0", "read -P 0 0 64k", "read -P 0x44 512k 64k", W, R),
            View("e0"),
        ],
        setup=CHAIN,
        theme=T,
        doc="backing: null cuts the chain; reads of base data give zeros",
    ),
    sc(
        "reopen_backing_repoint",
        [
            add(hd("top", "top.qcow2")),
            add(hd("alt", "ov.qcow2")),
            export("e0", "top"),
            io("e0", "write -P 0x0d 3M 64k"),
            reopen({"driver": "qcow2", "node-name": "top", "file": "top-file", "backing": "alt"}),
            io("e0", "read -P 0 0 64k", "read -P 0x44 512k 64k", "read -P 0x0d 3M 64k"),
            View("e0"),
            QUERY,
        ],
        setup=CHAIN,
        theme=T,
        doc="the backing moves to an empty image",
    ),
    sc(
        "reopen_backing_attach",
        [
            add(hd("b", "base.qcow2", **{"read-only": True})),
            add({**hd("top", "ov.qcow2"), "backing": None}),
            export("e0", "top"),
            io("e0", "read -P 0 0 64k"),
            reopen({"driver": "qcow2", "node-name": "top", "file": "top-file", "backing": "b"}),
            io("e0", "read -P 0x11 0 64k", "read -P 0x22 2M 64k", W, R),
            View("e0"),
        ],
        setup=CHAIN,
        theme=T,
        doc="a backing attached by reopen is read through at once",
    ),
    sc(
        "reopen_file_throttle_insert",
        [
            TG,
            add(HD0),
            export("e0", "hd0"),
            io("e0", "write -P 0x03 1M 64k"),
            add(
                {
                    "driver": "throttle",
                    "node-name": "thr",
                    "throttle-group": "tg0",
                    "file": "hd0-file",
                }
            ),
            reopen({"driver": "qcow2", "node-name": "hd0", "file": "thr"}),
            io("e0", W, R, "read -P 0x03 1M 64k"),
            View("e0"),
            QUERY,
        ],
        theme=T,
    ),
    sc(
        "reopen_file_throttle_remove",
        [
            TG,
            add(HD0),
            add(
                {
                    "driver": "throttle",
                    "node-name": "thr",
                    "throttle-group": "tg0",
                    "file": "hd0-file",
                }
            ),
            reopen({"driver": "qcow2", "node-name": "hd0", "file": "thr"}),
            export("e0", "hd0"),
            io("e0", W),
            reopen(HD0_KEEP),
            cmd("blockdev-del", {"node-name": "thr"}),
            io("e0", R, "write -P 0x04 64k 64k"),
            View("e0"),
        ],
        theme=T,
    ),
    sc(
        "reopen_cor_insert",
        [
            *FMT_OVER_TOP,
            add({"driver": "copy-on-read", "node-name": "cor", "file": "top"}),
            reopen({"driver": "raw", "node-name": "fmt", "file": "cor"}),
            io("e0", "read -P 0x11 0 256k", "read -P 0x22 2M 64k"),
            View("e0"),
            io("e0", "flush"),
        ],
        setup=CHAIN,
        theme=T,
        doc="issue 7 reproducer: reads through the COR filter copy base data into top.qcow2",
    ),
    sc(
        "reopen_cor_insert_with_bottom",
        [
            add(hd("up", "up.qcow2")),
            add({"driver": "raw", "node-name": "fmt", "file": "up"}),
            export("e0", "fmt"),
            add(
                {"driver": "copy-on-read", "node-name": "cor", "file": "up", "bottom": "{#block1}"}
            ),
            reopen({"driver": "raw", "node-name": "fmt", "file": "cor"}),
            io("e0", "read -P 0x11 0 64k", "read -P 0x44 512k 64k", "read -P 0x88 3M 64k"),
            View("e0"),
            io("e0", "flush"),
        ],
        setup=CHAIN3,
        theme=T,
        doc="bottom=top.qcow2's node: its data is copied up, base's not",
    ),
    sc(
        "reopen_cor_remove",
        [
            *FMT_OVER_TOP,
            add({"driver": "copy-on-read", "node-name": "cor", "file": "top"}),
            reopen({"driver": "raw", "node-name": "fmt", "file": "cor"}),
            io("e0", "read -P 0x11 0 64k"),
            reopen({"driver": "raw", "node-name": "fmt", "file": "top"}),
            cmd("blockdev-del", {"node-name": "cor"}),
            io("e0", "read -P 0x11 64k 64k", W),
            View("e0"),
        ],
        setup=CHAIN,
        theme=T,
        doc="after removal reads no longer copy",
    ),
    sc(
        "shutdown_keeps_unflushed_cor_copies",
        [
            *FMT_OVER_TOP,
            add({"driver": "copy-on-read", "node-name": "cor", "file": "top"}),
            reopen({"driver": "raw", "node-name": "fmt", "file": "cor"}),
            io("e0", "read -P 0x11 256k 64k", ro=True),
        ],
        setup=CHAIN,
        theme=T,
        doc="no guest flush: the daemon's clean shutdown must keep "
        "the copied cluster (QSD's bdrv_close_all flushes)",
    ),
    sc(
        "reopen_file_repoint_raw",
        [
            add(fnode("q0.raw", "f0")),
            add(fnode("other.raw", "f1")),
            add({"driver": "raw", "node-name": "fmt", "file": "f0"}),
            export("e0", "fmt"),
            io("e0", "read -P 0x55 0 64k"),
            reopen({"driver": "raw", "node-name": "fmt", "file": "f1"}),
            io("e0", "read -P 0x66 0 64k", W),
            View("e0"),
        ],
        setup=RAWS,
        theme=T,
        doc="the export's format node reads a different file at once",
    ),
    sc(
        "reopen_throttle_group_change",
        [
            TG,
            cmd(
                "object-add",
                {"qom-type": "throttle-group", "id": "tg1", "limits": {"iops-total": 5000}},
            ),
            add(HD0),
            add({"driver": "throttle", "node-name": "thr", "throttle-group": "tg0", "file": "hd0"}),
            export("e0", "thr"),
            io("e0", W),
            reopen(
                {"driver": "throttle", "node-name": "thr", "throttle-group": "tg1", "file": "hd0"}
            ),
            io("e0", R, "write -P 0x05 64k 64k"),
            View("e0"),
            QUERY,
        ],
        theme=T,
    ),
]
