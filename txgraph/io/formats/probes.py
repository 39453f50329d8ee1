"""``bdrv_probe`` of each image format: a score for the first bytes (and the filename).

QEMU 7.2's ``bdrv_probe_all`` asks every driver and keeps the highest score
(the first driver to reach it wins a tie); raw answers 1, so an image nobody
claims is raw. The scores here are those of ``qcow2_probe``, ``qcow_probe``,
``qed_probe``, ``vdi_probe``, ``vpc_probe``, ``vhdx_probe``, ``vmdk_probe``,
``parallels_probe``, ``bochs_probe``, ``cloop_probe`` and ``dmg_probe``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

__all__ = ["probe_scores", "best_format"]


def _u32le(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", buf, off)[0])


def _u32be(buf: bytes, off: int) -> int:
    return int(struct.unpack_from(">I", buf, off)[0])


def _qcow2(buf: bytes, name: str) -> int:
    return 100 if len(buf) >= 8 and buf[:4] == b"QFI\xfb" and _u32be(buf, 4) >= 2 else 0


def _qcow(buf: bytes, name: str) -> int:
    return 100 if len(buf) >= 8 and buf[:4] == b"QFI\xfb" and _u32be(buf, 4) == 1 else 0


def _qed(buf: bytes, name: str) -> int:
    return 100 if len(buf) >= 64 and buf[:4] == b"QED\0" else 0


def _vdi(buf: bytes, name: str) -> int:
    return 100 if len(buf) >= 512 and _u32le(buf, 64) == 0xBEDA107F else 0


def _vpc(buf: bytes, name: str) -> int:
    return 100 if len(buf) >= 8 and buf[:8] == b"conectix" else 0


def _vhdx(buf: bytes, name: str) -> int:
    return 100 if len(buf) >= 8 and buf[:8] == b"vhdxfile" else 0


def _vmdk(buf: bytes, name: str) -> int:
    """Binary magics, or a text descriptor whose first real line is ``version=1|2|3``."""
    if len(buf) < 4:
        return 0
    if buf[:4] in (b"KDMV", b"COWD"):
        return 100
    p, end = 0, len(buf)
    while p < end:
        if buf[p : p + 1] == b"#":
            nl = buf.find(b"\n", p)
            p = end if nl < 0 else nl + 1
            continue
        if buf[p : p + 1] == b" ":
            while p < end and buf[p : p + 1] == b" ":
                p += 1
            if p < end and buf[p : p + 1] == b"\r":
                p += 1
            if p == end or buf[p : p + 1] != b"\n":
                return 0
            p += 1
            continue
        for v in (b"1", b"2", b"3"):
            if (
                buf[p : p + 10] == b"version=" + v + b"\n"
                or buf[p : p + 11] == b"version=" + v + b"\r\n"
            ):
                return 100
        return 0
    return 0


def _parallels(buf: bytes, name: str) -> int:
    if len(buf) < 64:
        return 0
    if buf[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt") and _u32le(buf, 16) == 2:
        return 100
    return 0


def _bochs(buf: bytes, name: str) -> int:
    if len(buf) < 512:
        return 0

    def cstr(off: int, size: int) -> bytes:
        return buf[off : off + size].split(b"\0", 1)[0]

    if (
        cstr(0, 32) == b"Bochs Virtual HD Image"
        and cstr(32, 16) == b"Redolog"
        and cstr(48, 16) == b"Growing"
        and _u32le(buf, 64) in (0x00020000, 0x00010000)
    ):
        return 100
    return 0


_CLOOP_MAGIC = (
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
)


def _cloop(buf: bytes, name: str) -> int:
    return 2 if len(buf) > len(_CLOOP_MAGIC) and buf.startswith(_CLOOP_MAGIC) else 0


def _dmg(buf: bytes, name: str) -> int:
    return 2 if len(name) > 4 and name.endswith(".dmg") else 0


#: in QEMU's driver registration order (it decides ties)
_PROBES: tuple[tuple[str, Callable[[bytes, str], int]], ...] = (
    ("bochs", _bochs),
    ("cloop", _cloop),
    ("dmg", _dmg),
    ("parallels", _parallels),
    ("qcow", _qcow),
    ("qcow2", _qcow2),
    ("qed", _qed),
    ("vdi", _vdi),
    ("vhdx", _vhdx),
    ("vmdk", _vmdk),
    ("vpc", _vpc),
)


def probe_scores(buf: bytes, filename: str = "") -> dict[str, int]:
    """Every driver's score for ``buf`` (the first 512 bytes) and ``filename``."""
    return {name: fn(buf, filename) for name, fn in _PROBES}


def best_format(buf: bytes, filename: str = "", known: frozenset[str] | None = None) -> str:
    """``bdrv_probe_all``: the highest score wins, raw (score 1) when nobody claims more."""
    best, score = "raw", 1
    for name, fn in _PROBES:
        if known is not None and name not in known:
            continue
        s = fn(buf, filename)
        if s > score:
            best, score = name, s
    return best
