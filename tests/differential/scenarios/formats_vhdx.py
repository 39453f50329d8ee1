"""vhdx scenarios: open (dynamic, fixed, options), reopen, probing, a pending log, hostile headers.

Images are made by the real ``qemu-img``; hostile ones are patched byte by byte
and their CRC-32C checksums recomputed (:func:`vhdx_fix`), so the header,
region table and metadata checks behind the checksums are reached. A pending
log is written by txgraph's log writer without its flush (:func:`vhdx_pending_log`):
QSD must then refuse it read-only and replay it read-write, as txgraph.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from tests.differential.scenarios._common import (
    Call,
    WriteFile,
    add,
    delete,
    fnode,
    sc,
    strip_backing_format,
)
from tests.differential.scenarios.format_kit import T, create, fmt_node, patch, reopen

__all__ = ["VHDX", "vhdx_fix", "vhdx_pending_log"]

_MIB = 1 << 20
#: the layout qemu-img 7.2 writes (1 MiB log): header 1/2, region table 1, BAT, metadata
H1, H2, RT, BAT, MD = 64 << 10, 128 << 10, 192 << 10, 2 * _MIB, 3 * _MIB
ITEMS = MD + (64 << 10)


def vhdx_fix(workdir: Path, path: str) -> None:
    """Recompute the CRC-32C of both headers and both region tables after a patch."""
    from txgraph.io.formats.vhdx_log import with_checksum

    p = workdir / path
    data = bytearray(p.read_bytes())
    for off, size in ((H1, 4096), (H2, 4096), (RT, 65536), (RT + 65536, 65536)):
        data[off : off + size] = with_checksum(bytes(data[off : off + size]))
    p.write_bytes(bytes(data))


def vhdx_pending_log(workdir: Path, path: str, pattern: int = 0x5A) -> None:
    """Allocate block 0 with ``pattern`` at 4 KiB and leave its BAT update in the log only
    (``vhdx_log_write`` without ``vhdx_log_flush``): a crash between the two."""
    from txgraph.io.formats import vhdx_log
    from txgraph.io.runtime import Runtime

    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(workdir / path)}, {}, False)
    rt.open_node("m", "vhdx", {}, {"file": "f"}, False)
    node: Any = rt._nodes["m"]
    node.user_visible_write()
    block = (node.file_length() + _MIB - 1) // _MIB * _MIB
    node.grow(block + node.block_size)
    node.file.write(block + 4096, bytes([pattern]) * 4096)
    node.file.flush()
    vhdx_log.log_write(node, struct.pack("<Q", block | 6), node.bat_offset)
    node.file.flush()
    for name in ("m", "f"):
        rt._nodes[name].close()


def _img(path: str = "h.vhdx", size: str = "3M", opts: str = "block_size=1M") -> Any:
    return create("vhdx", path, size, opts=opts)


def _hostile(name: str, patches: list[tuple[int, str, tuple[Any, ...]]], fix: bool = True) -> Any:
    setup: list[Any] = [_img()] + [Call(patch, ("h.vhdx", o, f, *v)) for o, f, v in patches]
    if fix:
        setup.append(Call(vhdx_fix, ("h.vhdx",)))
    return sc(
        f"fmt_vhdx_{name}",
        [
            add(fmt_node("vhdx", "h.vhdx", "h", read_only=True)),
            delete("h"),
            add(fmt_node("vhdx", "h.vhdx", "w")),
        ],
        setup=setup,
        theme=T,
    )


_GUID_OTHER = bytes(range(16))

VHDX_HOSTILE = [
    _hostile("bad_signature", [(0, "8s", (b"vhdxfilf",))], fix=False),
    _hostile("header1_bad_crc", [(H1 + 8, "<Q", (7,))], fix=False),
    _hostile("both_headers_bad_crc", [(H1 + 8, "<Q", (7,)), (H2 + 8, "<Q", (9,))], fix=False),
    _hostile("header_version2", [(H1 + 66, "<H", (2,)), (H2 + 66, "<H", (2,))]),
    _hostile("headers_equal_seq", [(H1 + 8, "<Q", (5,)), (H2 + 8, "<Q", (5,))]),
    _hostile("header2_newer_bad_sig", [(H2, "4s", (b"heaD",)), (H2 + 8, "<Q", (1 << 40,))]),
    _hostile(
        "log_offset_unaligned", [(H1 + 72, "<Q", (_MIB + 4096,)), (H2 + 72, "<Q", (_MIB + 4096,))]
    ),
    _hostile("log_offset_zero", [(H1 + 72, "<Q", (0,)), (H2 + 72, "<Q", (0,))]),
    _hostile("log_version1", [(H1 + 64, "<H", (1,)), (H2 + 64, "<H", (1,))]),
    _hostile(
        "log_length_unaligned",
        [
            (H1 + 48, "16s", (_GUID_OTHER,)),
            (H2 + 48, "16s", (_GUID_OTHER,)),
            (H1 + 68, "<I", (4096,)),
            (H2 + 68, "<I", (4096,)),
        ],
    ),
    _hostile(
        "log_guid_no_entries", [(H1 + 48, "16s", (_GUID_OTHER,)), (H2 + 48, "16s", (_GUID_OTHER,))]
    ),
    _hostile("region_bad_crc", [(RT + 100, "B", (1,))], fix=False),
    _hostile("region_bad_sig", [(RT, "4s", (b"regj",))]),
    _hostile("region_count_2048", [(RT + 8, "<I", (2048,))]),
    _hostile("region_count_3", [(RT + 8, "<I", (3,))]),
    _hostile("region_overlap_log", [(RT + 32, "<Q", (_MIB,))]),
    _hostile(
        "region_bat_twice", [(RT + 48, "16s", (bytes.fromhex("6677c22d23f600429d64115e9bfd4a08"),))]
    ),
    _hostile("region_unknown_required", [(RT + 16, "B", (0x99,)), (RT + 44, "<I", (1,))]),
    _hostile("region_unknown_optional", [(RT + 16, "B", (0x99,))]),
    _hostile("metadata_bad_sig", [(MD, "8s", (b"metadatX",))]),
    _hostile("metadata_count_big", [(MD + 10, "<H", (2047,))]),
    _hostile("metadata_item_unknown", [(MD + 32, "B", (0x42,))]),
    _hostile("metadata_item_unknown_optional", [(MD + 32, "B", (0x42,)), (MD + 56, "<I", (0,))]),
    _hostile(
        "metadata_item_twice",
        [(MD + 64, "16s", (bytes.fromhex("3767a1ca36fa434db3b633f0aa44e76b"),))],
    ),
    _hostile("has_parent", [(ITEMS + 4, "<I", (2,))]),
    _hostile("block_size_small", [(ITEMS, "<I", (1 << 19,))]),
    _hostile("block_size_not_pow2", [(ITEMS, "<I", (3 * _MIB,))]),
    _hostile("logical_sector_1k", [(ITEMS + 32, "<I", (1024,))]),
    _hostile("logical_sector_4k", [(ITEMS + 32, "<I", (4096,))]),
    _hostile("virtual_size_huge", [(ITEMS + 8, "<Q", (1 << 40,))]),
    _hostile("virtual_size_odd", [(ITEMS + 8, "<Q", (3 * _MIB + 1000,))]),
    _hostile("metadata_offset_past_max", [(RT + 64, "<Q", (0xB1 << 56 | MD,))]),
    _hostile("bat_length_2g", [(RT + 40, "<I", (0x80000000,))]),
    _hostile(
        "log_offset_past_max",
        [
            (H1 + 72, "<Q", (0xFFF << 52,)),
            (H2 + 72, "<Q", (0xFFF << 52,)),
            (H1 + 48, "16s", (_GUID_OTHER,)),
            (H2 + 48, "16s", (_GUID_OTHER,)),
        ],
    ),
    _hostile("bat_past_eof", [(BAT, "<Q", (6 | 100 * _MIB,))]),
    _hostile("bat_in_metadata", [(BAT, "<Q", (6 | MD,))]),
    _hostile("bat_in_header", [(BAT, "<Q", (6 | 0,))]),
    _hostile("bat_partially_present", [(BAT, "<Q", (7,))]),
    sc(
        "fmt_vhdx_short_file",
        [add(fmt_node("vhdx", "s.vhdx", "h"))],
        setup=[WriteFile("s.vhdx", b"vhdxfile")],
        theme=T,
    ),
]

VHDX = [
    sc(
        "fmt_vhdx_open",
        [
            add(fmt_node("vhdx", "a.vhdx", "d")),
            add(fmt_node("vhdx", "f.vhdx", "f")),
            add(fmt_node("vhdx", "s.vhdx", "s", read_only=True)),
            add(fmt_node("vhdx", "z.vhdx", "z")),
            delete("z"),
        ],
        setup=[
            create("vhdx", "a.vhdx", "5M"),
            create("vhdx", "f.vhdx", "3M", opts="subformat=fixed"),
            create("vhdx", "s.vhdx", "3M", opts="block_size=1M,log_size=2M,block_state_zero=off"),
            create("vhdx", "z.vhdx", "0"),
        ],
        theme=T,
    ),
    sc(
        "fmt_vhdx_reopen",
        [
            add({"driver": "vhdx", "node-name": "v", "file": fnode("a.vhdx", "vf")}),
            reopen({"driver": "vhdx", "node-name": "v", "file": "vf", "read-only": True}),
            reopen({"driver": "vhdx", "node-name": "v", "file": "vf", "read-only": False}),
        ],
        setup=[create("vhdx", "a.vhdx", "1M")],
        theme=T,
    ),
    sc(
        "fmt_vhdx_unknown_option",
        [add({**fmt_node("vhdx", "a.vhdx", "v"), "log-size": 1048576})],
        setup=[create("vhdx", "a.vhdx", "1M")],
        theme=T,
    ),
    sc(
        "fmt_vhdx_probed_backing",
        [add(fmt_node("qcow2", "top.qcow2", "t"))],
        setup=[
            create("vhdx", "b.vhdx", "2M"),
            create("qcow2", "top.qcow2", "2M", backing="b.vhdx", backing_fmt="vhdx"),
            Call(strip_backing_format, ("top.qcow2",)),
        ],
        theme=T,
    ),
    sc(
        "fmt_vhdx_pending_log",
        [
            add(fmt_node("vhdx", "l.vhdx", "ro", read_only=True)),
            add(fmt_node("vhdx", "l.vhdx", "rw")),
            delete("rw"),
            add(fmt_node("vhdx", "l.vhdx", "ro2", read_only=True)),
        ],
        setup=[_img("l.vhdx"), Call(vhdx_pending_log, ("l.vhdx",))],
        theme=T,
        writes=True,
    ),
    *VHDX_HOSTILE,
]
