"""Small builders shared by the scenario modules (keep scenarios declarative and short)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from tests.differential.harness import (
    Call,
    Chmod,
    MkDir,
    Raw,
    Scenario,
    SetupAction,
    Shell,
    Step,
    WriteFile,
    cmd,
    qemu_img,
    qemu_io,
)

__all__ = [
    "Call",
    "Chmod",
    "MkDir",
    "Raw",
    "Scenario",
    "Shell",
    "WriteFile",
    "cmd",
    "qemu_img",
    "qemu_io",
    "add",
    "delete",
    "obj_add",
    "obj_del",
    "tg",
    "qnodes",
    "graph",
    "null",
    "fnode",
    "qcow2_img",
    "raw_img",
    "sc",
    "strip_backing_format",
    "qcow2_header",
]


def add(args: dict[str, Any]) -> dict[str, Any]:
    """``blockdev-add`` with ``args``."""
    return cmd("blockdev-add", args)


def delete(name: str) -> dict[str, Any]:
    """``blockdev-del``."""
    return cmd("blockdev-del", {"node-name": name})


def obj_add(args: dict[str, Any]) -> dict[str, Any]:
    return cmd("object-add", args)


def obj_del(oid: str) -> dict[str, Any]:
    return cmd("object-del", {"id": oid})


def tg(oid: str, **limits: int) -> dict[str, Any]:
    """``object-add`` of a throttle-group with ``limits`` (underscores become dashes)."""
    lim = {k.replace("_", "-"): v for k, v in limits.items()} or {"iops-total": 1000}
    return obj_add({"qom-type": "throttle-group", "id": oid, "limits": lim})


def qnodes(flat: bool | None = True) -> dict[str, Any]:
    return cmd("query-named-block-nodes", None if flat is None else {"flat": flat})


def graph() -> dict[str, Any]:
    return cmd("x-debug-query-block-graph")


def null(name: str | None = None, drv: str = "null-co", **extra: Any) -> dict[str, Any]:
    """A null-co / null-aio node dict."""
    d: dict[str, Any] = {"driver": drv}
    if name is not None:
        d["node-name"] = name
    d.update({k.replace("_", "-"): v for k, v in extra.items()})
    return d


def fnode(path: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ``file`` protocol node dict on ``{dir}/path``."""
    d: dict[str, Any] = {"driver": "file", "filename": "{dir}/" + path}
    if name is not None:
        d["node-name"] = name
    d.update({k.replace("_", "-"): v for k, v in extra.items()})
    return d


def qcow2_img(
    path: str,
    size: str = "1M",
    backing: str | None = None,
    fmt: str | None = "qcow2",
    opts: str = "",
    unsafe: bool = False,
) -> Shell:
    """``qemu-img create -f qcow2`` (``backing`` is written into the header as given)."""
    a = ["create", "-f", "qcow2"]
    if opts:
        a += ["-o", opts]
    if backing is not None:
        a += ["-b", backing]
        if fmt:
            a += ["-F", fmt]
        if unsafe:
            a += ["-u"]
    a += ["{dir}/" + path, size]
    return Shell(("qemu-img", *a))


def raw_img(path: str, size: str = "1M") -> Shell:
    return Shell(("qemu-img", "create", "-f", "raw", "{dir}/" + path, size))


def sc(
    name: str,
    steps: list[Step],
    setup: list[SetupAction] | None = None,
    doc: str = "",
    theme: str = "",
    writes: bool = False,
) -> Scenario:
    return Scenario(
        name=name, steps=tuple(steps), setup=tuple(setup or ()), doc=doc, theme=theme, writes=writes
    )


# ---- byte-level image manipulation (for setups qemu-img refuses to make) -------------

_QCOW2_EXT_BACKING_FMT = 0xE2792ACA


def strip_backing_format(workdir: Path, path: str) -> None:
    """Remove the backing-format header extension of a qcow2 v3 image, so the backing is probed.

    qemu-img 7.2 refuses to create ``-b`` without ``-F``; old images without a format exist.
    The extension is turned into an unknown, ignored extension type of the same length.
    """
    p = workdir / path
    data = bytearray(p.read_bytes())
    hdr_len = struct.unpack_from(">I", data, 100)[0]
    off = hdr_len
    while off + 8 <= len(data):
        typ, ln = struct.unpack_from(">II", data, off)
        if typ == 0:
            break
        if typ == _QCOW2_EXT_BACKING_FMT:
            struct.pack_into(">I", data, off, 0x7478_6774)  # "txgt": unknown, skipped by readers
            p.write_bytes(bytes(data))
            return
        off += 8 + ((ln + 7) & ~7)
    raise RuntimeError(f"{path}: no backing format extension")


def qcow2_header(
    version: int = 3,
    cluster_bits: int = 16,
    size: int = 1 << 20,
    l1_size: int = 1,
    l1_offset: int = 0x30000,
    rt_offset: int = 0x10000,
    rt_clusters: int = 1,
    backing_offset: int = 0,
    backing_size: int = 0,
    header_length: int = 104,
    incompatible: int = 0,
    refcount_order: int = 4,
    nb_snapshots: int = 0,
    snapshots_offset: int = 0,
    crypt: int = 0,
    magic: bytes = b"QFI\xfb",
    total: int = 4 * 65536,
) -> bytes:
    """A hand-made qcow2 header padded with zeros to ``total`` bytes (hostile-input tests)."""
    h = bytearray(total)
    struct.pack_into(
        ">4sIQIIQIIQQIIQ",
        h,
        0,
        magic,
        version,
        backing_offset,
        backing_size,
        cluster_bits,
        size,
        crypt,
        l1_size,
        l1_offset,
        rt_offset,
        rt_clusters,
        nb_snapshots,
        snapshots_offset,
    )
    if version >= 3:
        struct.pack_into(">QQQII", h, 72, incompatible, 0, 0, refcount_order, header_length)
    return bytes(h)
