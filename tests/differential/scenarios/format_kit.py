"""Image builders for the format scenarios: qemu-img recipes, byte patches, hand-made images.

Shared by :mod:`formats` and :mod:`formats_hostile` (and the format data and
mutation tests): ``patch``/``truncate``/``rename`` run as setup ``Call``s,
``pin_cids`` makes vmdk CIDs deterministic, ``bochs_image`` and ``cloop_image``
build images qemu-img cannot create.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

from tests.differential.scenarios._common import Call, add, cmd, fnode, qemu_img, sc

__all__ = [
    "T",
    "patch",
    "convert_compressed",
    "pin_cids",
    "rename",
    "truncate",
    "fmt_node",
    "create",
    "reopen",
    "hostile",
    "bochs_image",
    "cloop_image",
    "vpc_fix_checksum",
]

T = "formats"


def patch(workdir: Path, path: str, offset: int, fmt: str, *values: Any) -> None:
    """Overwrite ``struct.pack(fmt, *values)`` at ``offset`` of ``{dir}/path``."""
    p = workdir / path
    data = bytearray(p.read_bytes())
    blob = struct.pack(fmt, *values)
    if len(data) < offset + len(blob):
        data.extend(bytes(offset + len(blob) - len(data)))
    data[offset : offset + len(blob)] = blob
    p.write_bytes(bytes(data))


def convert_compressed(workdir: Path, src: str, dst: str, fmt: str) -> None:
    """``qemu-img convert -c -O fmt``; qemu-img 7.2 exits 1 without a message after writing a
    compressed qcow completely (its final zero-length compressed write fails), so the exit
    status is not trusted, the result is checked with ``qemu-img compare`` instead."""
    import subprocess

    subprocess.run(
        ["qemu-img", "convert", "-c", "-O", fmt, str(workdir / src), str(workdir / dst)],
        capture_output=True,
        check=False,
    )
    subprocess.run(
        ["qemu-img", "compare", "-q", str(workdir / src), str(workdir / dst)],
        capture_output=True,
        check=True,
    )


def pin_cids(workdir: Path) -> None:
    """Replace the random CIDs qemu-img writes into every vmdk file of the directory by fixed
    8-digit values (so both peers see the same ``cid``/``parent-cid``). An embedded descriptor
    keeps its size: the NUL padding after its text absorbs the change of length."""
    files = sorted(workdir.glob("*.vmdk"))
    found: list[bytes] = []
    for f in files:
        for m in re.finditer(rb"CID=([0-9a-f]+)", f.read_bytes()):
            if m.group(1) != b"ffffffff" and m.group(1) not in found:
                found.append(m.group(1))
    mapping = {old: b"%08x" % (0x1000ABC + i) for i, old in enumerate(found)}
    for f in files:
        data = f.read_bytes()
        new = re.sub(
            rb"CID=([0-9a-f]+)", lambda m: b"CID=" + mapping.get(m.group(1), m.group(1)), data
        )
        delta = len(new) - len(data)
        if delta and data[:4] == b"KDMV":
            end = new.index(b"\0", 0x200)
            new = (
                new[:end] + new[end + delta :]
                if delta > 0
                else new[:end] + bytes(-delta) + new[end:]
            )
        f.write_bytes(new)


def rename(workdir: Path, old: str, new: str) -> None:
    (workdir / old).rename(workdir / new)


def truncate(workdir: Path, path: str, size: int) -> None:
    with open(workdir / path, "r+b") as f:
        f.truncate(size)


def fmt_node(drv: str, path: str, name: str, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"driver": drv, "node-name": name, "file": fnode(path)}
    d.update({k.replace("_", "-"): v for k, v in extra.items()})
    return d


def create(
    fmt: str, path: str, size: str = "4M", opts: str = "", backing: str = "", backing_fmt: str = ""
) -> Any:
    a = f"create -q -f {fmt}"
    if opts:
        a += f" -o {opts}"
    if backing:
        a += f" -b {backing}"
        if backing_fmt:
            a += f" -F {backing_fmt}"
    return qemu_img(f"{a} {{dir}}/{path} {size}")


def reopen(*options: dict[str, Any]) -> dict[str, Any]:
    return cmd("blockdev-reopen", {"options": list(options)})


def hostile(
    name: str,
    fmt: str,
    base: Any,
    patches: list[tuple[int, str, tuple[Any, ...]]],
    path: str | None = None,
) -> Any:
    """One scenario per patched header: the open must fail (or not) exactly as QEMU's."""
    path = path or f"h.{fmt}"
    setup = [base] + [Call(patch, (path, off, f, *vals)) for off, f, vals in patches]
    if fmt == "vmdk":
        setup.append(Call(pin_cids))
    return sc(f"fmt_{name}", [add(fmt_node(fmt, path, "h"))], setup=setup, theme=T)


def vpc_fix_checksum(workdir: Path, path: str, at: int = 0) -> None:
    """Recompute the footer checksum at ``at`` (``-512`` for the end) after a patch."""
    p = workdir / path
    data = bytearray(p.read_bytes())
    off = at if at >= 0 else len(data) + at
    data[off + 64 : off + 68] = bytes(4)
    data[off + 64 : off + 68] = struct.pack(">I", ~sum(data[off : off + 512]) & 0xFFFFFFFF)
    p.write_bytes(bytes(data))


def bochs_image(
    version: int = 0x00020000,
    extent: int = 4096,
    disk: int = 1 << 20,
    catalog: int | None = None,
    magic: bytes = b"Bochs Virtual HD Image",
    subtype: bytes = b"Growing",
) -> bytes:
    """A Bochs growing redolog (qemu-img cannot create one): extents 1 and 5 allocated,
    extent 1 with only sectors 0 and 2 present in its bitmap."""
    h = bytearray(512)
    h[0 : len(magic)] = magic
    h[32:39] = b"Redolog"
    h[48 : 48 + len(subtype)] = subtype
    cat = disk // max(extent, 512) if catalog is None else catalog
    struct.pack_into("<IIIII", h, 64, version, 512, cat, 1, extent)
    struct.pack_into("<Q", h, 84 if version == 0x00010000 else 88, disk)
    entries = [0xFFFFFFFF] * min(cat, 4096)
    if len(entries) > 5:
        entries[1], entries[5] = 0, 1
    body = struct.pack(f"<{len(entries)}I", *entries)
    blocks = 1 + max(extent, 512) // 512
    data = bytearray(blocks * 512 * 2)
    data[0] = 0b101
    data[blocks * 512 : blocks * 512 + 2] = b"\xff\x01"
    for i in range(len(data) // 512):
        if i % blocks:
            data[i * 512 : (i + 1) * 512] = bytes([0x40 + i % 64]) * 512
    return bytes(h) + body + bytes(data)


_CLOOP_MAGIC = (
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
)


def cloop_image(
    block_size: int = 4096,
    n_blocks: int = 5,
    offsets: list[int] | None = None,
    corrupt: bool = False,
) -> bytes:
    """A cloop image (qemu-img cannot create one): zlib blocks of patterns."""
    import zlib

    blocks = [
        zlib.compress(bytes([0x30 + i]) * min(block_size, 1 << 16))
        for i in range(min(n_blocks, 64))
    ]
    if corrupt and blocks:
        blocks[1] = b"\x78\x9c" + bytes(10)
    table_at = 136
    first = table_at + 8 * (n_blocks + 1)
    offs = [first]
    for b in blocks:
        offs.append(offs[-1] + len(b))
    if offsets is not None:
        offs = offsets
    head = _CLOOP_MAGIC.ljust(128, b"\0") + struct.pack(">II", block_size, n_blocks)
    return head + b"".join(struct.pack(">Q", o) for o in offs) + b"".join(blocks)
