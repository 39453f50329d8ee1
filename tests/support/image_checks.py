"""Offline checks of image files with ``qemu-img``, reduced to what must match across runs.

Run after the daemon that used the images has shut down. For each image:

* ``qemu-img info --output=json`` without the volatile fields (``actual-size``, which
  depends on the host file system, and paths, replaced by ``{dir}``);
* ``qemu-img map --output=json`` without host offsets (``offset``), adjacent extents
  with equal attributes merged (QEMU merges only extents contiguous on the host too,
  so the split depends on the allocation order, not on what is allocated);
* ``qemu-img check --output=json`` (qcow2): errors, leaks, corruptions, allocated and
  compressed clusters; fragmentation and the image end offset depend on the allocation order;
* a checksum of the image's guest view (``qemu-img convert`` to raw, backing included).

:func:`file_blocks` is the host file's own layout: its length and the byte ranges that
have disk blocks at all (allocated, whether written or only reserved).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["image_report", "workdir_report", "file_blocks", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".qcow2", ".raw", ".img")
_TIMEOUT = 60.0
_CHECK_FIELDS = (
    "check-errors",
    "leaks",
    "corruptions",
    "allocated-clusters",
    "compressed-clusters",
    "total-clusters",
    "leaks-fixed",
    "corruptions-fixed",
)


def _canon(v: Any, workdir: str) -> Any:
    if isinstance(v, str):
        return v.replace(os.path.realpath(workdir), "{dir}").replace(workdir, "{dir}")
    if isinstance(v, list):
        return [_canon(x, workdir) for x in v]
    if isinstance(v, dict):
        return {k: _canon(x, workdir) for k, x in v.items()}
    return v


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT)


def _strip_info(info: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in info.items() if k not in ("actual-size",)}
    if isinstance(out.get("backing-image"), dict):
        out["backing-image"] = _strip_info(out["backing-image"])
    return out


def _merge_map(extents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``qemu-img map`` extents without ``offset``, equal neighbours merged."""
    merged: list[dict[str, Any]] = []
    for e in extents:
        e = {k: v for k, v in e.items() if k != "offset"}
        if merged:
            last = merged[-1]
            same = all(
                last.get(k) == e.get(k) for k in set(last) | set(e) if k not in ("start", "length")
            )
            if same and last["start"] + last["length"] == e["start"]:
                last["length"] += e["length"]
                continue
        merged.append(e)
    return merged


def _digest(path: Path, fmt: str) -> str:
    with tempfile.TemporaryDirectory(prefix="tximg-") as tmp:
        out = os.path.join(tmp, "img.raw")
        res = _run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), out])
        if res.returncode != 0:
            return "error: " + res.stderr.strip()
        h = hashlib.sha256()
        with open(out, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


def image_report(path: Path, workdir: str) -> dict[str, Any]:
    """Info, map, check and data digest of one image (see the module docstring)."""
    res = _run(["qemu-img", "info", "--output=json", str(path)])
    if res.returncode != 0:
        return {"info-error": _canon(res.stderr.strip(), workdir)}
    info = json.loads(res.stdout)
    fmt = str(info.get("format"))
    report: dict[str, Any] = {"info": _canon(_strip_info(info), workdir)}
    res = _run(["qemu-img", "map", "--output=json", "-f", fmt, str(path)])
    report["map"] = (
        _merge_map(json.loads(res.stdout))
        if res.returncode == 0
        else "error: " + _canon(res.stderr.strip(), workdir)
    )
    if fmt == "qcow2":
        res = _run(["qemu-img", "check", "--output=json", "-f", fmt, str(path)])
        try:
            check = json.loads(res.stdout)
            report["check"] = {k: check[k] for k in _CHECK_FIELDS if k in check}
        except ValueError:
            report["check"] = "error: " + _canon(res.stderr.strip(), workdir)
        report["check-rc"] = res.returncode
    report["data"] = _canon(_digest(path, fmt), workdir)
    return report


def workdir_report(workdir: Path) -> dict[str, Any]:
    """:func:`image_report` of every image file directly in ``workdir``, by file name."""
    return {
        p.name: image_report(p, str(workdir))
        for p in sorted(workdir.iterdir())
        if p.suffix in IMAGE_SUFFIXES and p.is_file()
    }


#: ``FS_IOC_FIEMAP``; ``struct fiemap`` (32 bytes) and ``struct fiemap_extent`` (56 bytes)
_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_FLAG_SYNC = 0x1
_FIEMAP_EXTENT_LAST = 0x1
_FIEMAP_HEADER = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQ16xI12x")
_EXTENTS_PER_CALL = 128


def file_blocks(path: str | Path) -> tuple[int, list[tuple[int, int]]]:
    """The file's length and the logical byte ranges backed by disk blocks (``FIEMAP``
    after a sync, adjacent extents merged): what ``ls -l`` shows and where ``du``'s
    blocks lie. A range reserved with ``fallocate`` and never written counts as backed;
    where on the disk the blocks are (fragmentation) does not count."""
    ranges: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        start, last = 0, False
        while not last:
            buf = bytearray(_FIEMAP_HEADER.size + _EXTENTS_PER_CALL * _FIEMAP_EXTENT.size)
            _FIEMAP_HEADER.pack_into(buf, 0, start, (1 << 64) - 1 - start, _FIEMAP_FLAG_SYNC, 0,
                                     _EXTENTS_PER_CALL, 0)  # fmt: skip
            try:
                fcntl.ioctl(fd, _FS_IOC_FIEMAP, buf)
            except OSError:  # no FIEMAP (tmpfs): there, allocated pages are SEEK_DATA's
                return size, _seek_data_ranges(fd, size)
            mapped = _FIEMAP_HEADER.unpack_from(buf, 0)[3]
            if mapped == 0:
                break
            for i in range(mapped):
                logical, _physical, length, flags = _FIEMAP_EXTENT.unpack_from(
                    buf, _FIEMAP_HEADER.size + i * _FIEMAP_EXTENT.size
                )
                if ranges and ranges[-1][1] == logical:
                    ranges[-1] = (ranges[-1][0], logical + length)
                else:
                    ranges.append((logical, logical + length))
                start = logical + length
                last = bool(flags & _FIEMAP_EXTENT_LAST)
    finally:
        os.close(fd)
    return size, ranges


def _seek_data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The data ranges ``SEEK_DATA``/``SEEK_HOLE`` report up to ``size``."""
    ranges: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole up to the end
            break
        pos = os.lseek(fd, start, os.SEEK_HOLE)
        ranges.append((start, pos))
    return ranges
