"""dmg scenarios: hand-made UDIF images (qemu-img cannot create dmg), open rules, hostile trailers.

:func:`dmg_image` writes a UDIF image from Apple's layout: the data fork (chunks
of zeroes, raw data, zlib and bzip2 - Debian's QEMU 7.2 has no dmg-bz2 module,
so a bzip2 chunk's sectors read as EIO), a mish block describing them, kept
either in a binary resource fork or base64 in an XML property list, and the
512-byte ``koly`` trailer at the end.
"""

from __future__ import annotations

import base64
import bz2
import struct
import zlib
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
from tests.differential.scenarios.format_kit import T, create, fmt_node, reopen

__all__ = ["DMG", "dmg_image"]

UDZE, UDRW, UDIG, UDZO, UDBZ, UDCM, UDLE = 0, 1, 2, 0x80000005, 0x80000006, 0x7FFFFFFE, 0xFFFFFFFF


def _chunks(bzip: bool) -> list[tuple[int, int, bytes]]:
    """(type, sector count, stored bytes) of the default image: 64 sectors in 6 chunks."""
    raw = bytes(range(256)) * 16  # 8 sectors
    pattern = b"".join(bytes([0x40 + i]) * 512 for i in range(16))
    out = [
        (UDRW, 8, raw),
        (UDZE, 8, b""),
        (UDZO, 16, zlib.compress(pattern)),
        (UDIG, 8, b""),
        (UDZO, 8, zlib.compress(b"\x77" * 4096)),
        (UDBZ if bzip else UDRW, 16, bz2.compress(b"\x99" * 8192) if bzip else b"\x99" * 8192),
        (UDCM, 0, b""),
        (UDLE, 0, b""),
    ]
    return out


def _mish(chunks: list[tuple[int, int, bytes]], first_sector: int = 0) -> tuple[bytes, bytes]:
    """The mish block and the data fork it describes."""
    fork = bytearray()
    entries = bytearray()
    sector = 0
    for kind, count, data in chunks:
        entries += struct.pack(">IIQQQQ", kind, 0, sector, count, len(fork), len(data))
        fork += data
        sector += count
    head = bytearray(204)
    head[0:4] = b"mish"
    struct.pack_into(">IQQQ", head, 4, 1, first_sector, sector, 0)
    struct.pack_into(">I", head, 200, len(chunks))
    return bytes(head + entries), bytes(fork)


def dmg_image(
    xml: bool = False,
    bzip: bool = True,
    sectors: int | None = None,
    koly: dict[int, int] | None = None,
    mish_patch: dict[int, tuple[str, int]] | None = None,
    odd_tail: int = 0,
) -> bytes:
    """A UDIF image; ``koly`` overrides u64 trailer fields by offset, ``mish_patch`` packs
    ``(fmt, value)`` into the mish block, ``odd_tail`` appends bytes after the trailer."""
    mish, fork = _mish(_chunks(bzip))
    mish = bytearray(mish)
    for off, (fmt, value) in (mish_patch or {}).items():
        struct.pack_into(">" + fmt, mish, off, value)
    body = bytearray(fork)
    if xml:
        text = (
            b'<?xml version="1.0"?>\n<plist version="1.0"><dict><key>blkx</key><array><dict>'
            b"<key>Data</key>\n<data>\n\t"
            + base64.b64encode(bytes(mish))
            + b"\n</data></dict></array></dict></plist>\n"
        )
        xml_off, xml_len, rsrc_off, rsrc_len = len(body), len(text), 0, 0
        body += text
    else:
        res = struct.pack(">I", len(mish)) + bytes(mish)
        hdr = struct.pack(">IIII", 256, 256 + len(res), len(res), 0).ljust(256, b"\0")
        rsrc_off, rsrc_len, xml_off, xml_len = len(body), len(hdr) + len(res), 0, 0
        body += hdr + res
    trailer = bytearray(512)
    trailer[0:4] = b"koly"
    struct.pack_into(">III", trailer, 4, 4, 512, 1)
    fields = {
        0x18: 0,
        0x20: len(fork),
        0x28: rsrc_off,
        0x30: rsrc_len,
        0xD8: xml_off,
        0xE0: xml_len,
    }
    fields[0x1EC] = 64 if sectors is None else sectors
    fields.update(koly or {})
    for off, value in fields.items():
        struct.pack_into(">Q", trailer, off, value)
    return bytes(body + trailer) + bytes(odd_tail)


def _dmg(name: str, **kw: Any) -> Any:
    return sc(
        f"fmt_dmg_{name}",
        [add({**fmt_node("dmg", "h.dmg", "h"), "read-only": True})],
        setup=[WriteFile("h.dmg", dmg_image(**kw))],
        theme=T,
    )


DMG = [
    sc(
        "fmt_dmg_modes",
        [
            add(fmt_node("dmg", "d.dmg", "rw")),
            add({**fmt_node("dmg", "d.dmg", "auto"), "auto-read-only": True}),
            add(
                {
                    "driver": "dmg",
                    "node-name": "ro",
                    "read-only": True,
                    "file": fnode("x.dmg", "rof"),
                }
            ),
            reopen({"driver": "dmg", "node-name": "ro", "file": "rof", "read-only": True}),
            delete("auto"),
        ],
        setup=[WriteFile("d.dmg", dmg_image()), WriteFile("x.dmg", dmg_image(xml=True))],
        theme=T,
    ),
    sc(
        "fmt_dmg_probed_by_name",
        [
            add(
                {"driver": "qcow2", "node-name": "t", "file": fnode("top.qcow2"), "read-only": True}
            ),
        ],
        setup=[
            WriteFile("d.dmg", dmg_image()),
            create("qcow2", "top.qcow2", "32k", backing="d.dmg", backing_fmt="raw"),
            Call(strip_backing_format, ("top.qcow2",)),
        ],
        theme=T,
    ),
    _dmg("xml", xml=True),
    _dmg("odd_length", odd_tail=100),
    _dmg("tiny", sectors=0, koly={0x28: 0, 0x30: 0, 0xD8: 0, 0xE0: 0}),
    _dmg("data_fork_past_koly", koly={0x18: 1 << 40}),
    _dmg("rsrc_past_koly", koly={0x28: 1 << 40}),
    _dmg("rsrc_too_long", koly={0x30: 1 << 40}),
    _dmg("xml_past_koly", xml=True, koly={0xD8: 1 << 40}),
    _dmg("negative_size", koly={0x1EC: 1 << 63}),
    _dmg("huge_size", koly={0x1EC: (1 << 50)}),
    _dmg("no_forks", koly={0x30: 0, 0xE0: 0}),
    _dmg("chunk_sectors_too_many", mish_patch={204 + 40 * 2 + 0x10: ("Q", 200000)}),
    _dmg("chunk_length_too_big", mish_patch={204 + 0x20: ("Q", (64 << 20) + 1)}),
    _dmg("zero_chunk_unbounded", mish_patch={204 + 40 + 0x10: ("Q", 1 << 40)}),
    _dmg("not_mish", mish_patch={0: ("I", 0x6D697369)}),
    sc(
        "fmt_dmg_short",
        [add({**fmt_node("dmg", "s.dmg", "h"), "read-only": True})],
        setup=[WriteFile("s.dmg", b"koly" * 100)],
        theme=T,
    ),
    sc(
        "fmt_dmg_no_koly",
        [add({**fmt_node("dmg", "s.dmg", "h"), "read-only": True})],
        setup=[WriteFile("s.dmg", bytes(4096))],
        theme=T,
    ),
]
