"""Image formats beyond raw and qcow2: open, probe, backing, hostile headers, reopen.

Images are made by the real ``qemu-img`` (and patched byte by byte for hostile
headers); both peers must answer blockdev-add alike, down to the error text,
and report the same nodes, graph and image facts (cluster-size, dirty-flag,
format-specific, backing names).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from tests.differential.scenarios._common import (
    Call, WriteFile, add, cmd, delete, fnode, qcow2_img, qemu_img, qemu_io, raw_img, sc,
    strip_backing_format,
)

T = "formats"


def patch(workdir: Path, path: str, offset: int, fmt: str, *values: Any) -> None:
    """Overwrite ``struct.pack(fmt, *values)`` at ``offset`` of ``{dir}/path``."""
    p = workdir / path
    data = bytearray(p.read_bytes())
    blob = struct.pack(fmt, *values)
    if len(data) < offset + len(blob):
        data.extend(bytes(offset + len(blob) - len(data)))
    data[offset:offset + len(blob)] = blob
    p.write_bytes(bytes(data))


def convert_compressed(workdir: Path, src: str, dst: str, fmt: str) -> None:
    """``qemu-img convert -c -O fmt``; qemu-img 7.2 exits 1 without a message after writing a
    compressed qcow completely (its final zero-length compressed write fails), so the exit
    status is not trusted, the result is checked with ``qemu-img compare`` instead."""
    import subprocess

    subprocess.run(["qemu-img", "convert", "-c", "-O", fmt, str(workdir / src), str(workdir / dst)],
                   capture_output=True, check=False)
    subprocess.run(["qemu-img", "compare", "-q", str(workdir / src), str(workdir / dst)],
                   capture_output=True, check=True)


def rename(workdir: Path, old: str, new: str) -> None:
    (workdir / old).rename(workdir / new)


def truncate(workdir: Path, path: str, size: int) -> None:
    with open(workdir / path, "r+b") as f:
        f.truncate(size)


def fmt_node(drv: str, path: str, name: str, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"driver": drv, "node-name": name, "file": fnode(path)}
    d.update({k.replace("_", "-"): v for k, v in extra.items()})
    return d


def create(fmt: str, path: str, size: str = "4M", opts: str = "", backing: str = "",
           backing_fmt: str = "") -> Any:
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


def hostile(name: str, fmt: str, base: Any, patches: list[tuple[int, str, tuple[Any, ...]]],
            path: str | None = None) -> Any:
    """One scenario per patched header: the open must fail (or not) exactly as QEMU's."""
    path = path or f"h.{fmt}"
    setup = [base] + [Call(patch, (path, off, f, *vals)) for off, f, vals in patches]
    return sc(f"fmt_{name}", [add(fmt_node(fmt, path, "h"))], setup=setup, theme=T)


def _vdi(path: str = "h.vdi") -> Any:
    return create("vdi", path, "3M")


VDI_HOSTILE = [
    hostile("vdi_bad_signature", "vdi", _vdi(), [(64, "<I", (0x12345678,))]),
    hostile("vdi_bad_version", "vdi", _vdi(), [(68, "<I", (0x00020003,))]),
    hostile("vdi_unaligned_bmap", "vdi", _vdi(), [(340, "<I", (513,))]),
    hostile("vdi_unaligned_data", "vdi", _vdi(), [(344, "<I", (1000,))]),
    hostile("vdi_sector_size", "vdi", _vdi(), [(360, "<I", (4096,))]),
    hostile("vdi_block_size", "vdi", _vdi(), [(376, "<I", (2 << 20,))]),
    hostile("vdi_disk_too_big", "vdi", _vdi(), [(368, "<Q", (1 << 62,))]),
    hostile("vdi_bitmap_too_small", "vdi", _vdi(), [(368, "<Q", (64 << 20,))]),
    hostile("vdi_link_uuid", "vdi", _vdi(), [(424, "<I", (1,))]),
    hostile("vdi_parent_uuid", "vdi", _vdi(), [(450, "<I", (7,))]),
    hostile("vdi_too_many_blocks", "vdi", _vdi(),
            [(384, "<I", (0x40000000,)), (368, "<Q", (4 << 20,))]),
    hostile("vdi_odd_disk_size", "vdi", _vdi(), [(368, "<Q", (3 * 512 + 1,))]),
    hostile("vdi_huge_bitmap_past_eof", "vdi", _vdi(),
            [(384, "<I", (0x1FFFFF80,)), (368, "<Q", (1 << 40,))]),
    sc("fmt_vdi_short_file", [add(fmt_node("vdi", "s.vdi", "h"))],
       setup=[WriteFile("s.vdi", b"<<< short >>>")], theme=T),
]


def _qcow(path: str = "h.qcow") -> Any:
    return create("qcow", path, "3M")


QCOW_HOSTILE = [
    hostile("qcow_bad_magic", "qcow", _qcow(), [(0, ">I", (0x514649FA,))]),
    hostile("qcow_version2", "qcow", _qcow(), [(4, ">I", (2,))]),
    hostile("qcow_version7", "qcow", _qcow(), [(4, ">I", (7,))]),
    hostile("qcow_size_one", "qcow", _qcow(), [(24, ">Q", (1,))]),
    hostile("qcow_cluster_bits_8", "qcow", _qcow(), [(32, "B", (8,))]),
    hostile("qcow_cluster_bits_17", "qcow", _qcow(), [(32, "B", (17,))]),
    hostile("qcow_l2_bits_5", "qcow", _qcow(), [(33, "B", (5,))]),
    hostile("qcow_l2_bits_too_big", "qcow", _qcow(), [(33, "B", (10,))]),
    hostile("qcow_crypt_unknown", "qcow", _qcow(), [(36, ">I", (5,))]),
    hostile("qcow_image_too_large", "qcow", _qcow(), [(24, ">Q", (2**64 - 2,))]),
    hostile("qcow_l1_too_large", "qcow", _qcow(), [(24, ">Q", (1 << 62,)), (32, "BB", (9, 6))]),
    hostile("qcow_backing_name_long", "qcow", _qcow(), [(8, ">QI", (48, 1024))]),
    hostile("qcow_l1_past_eof", "qcow", _qcow(), [(40, ">Q", (1 << 40,))]),
    hostile("qcow_l1_past_max", "qcow", _qcow(), [(40, ">Q", (2**63 - 8,))]),
    sc("fmt_qcow_short_file", [add(fmt_node("qcow", "s.qcow", "h"))],
       setup=[WriteFile("s.qcow", b"QFI\xfb")], theme=T),
]

SCENARIOS = [
    sc("fmt_vdi_open", [
        add(fmt_node("vdi", "a.vdi", "v")),
        add(fmt_node("vdi", "b.vdi", "s", read_only=True)),
    ], setup=[create("vdi", "a.vdi", "5M"), create("vdi", "b.vdi", "2M", opts="static=on")],
       theme=T),
    sc("fmt_vdi_reopen", [
        add({"driver": "vdi", "node-name": "v", "file": fnode("a.vdi", "vf")}),
        reopen({"driver": "vdi", "node-name": "v", "file": "vf", "read-only": True}),
        cmd("blockdev-reopen", {"options": [{"driver": "vdi", "node-name": "v",
                                              "read-only": True}]}),
    ], setup=[create("vdi", "a.vdi", "1M")], theme=T),
    sc("fmt_vdi_unknown_option", [
        add({**fmt_node("vdi", "a.vdi", "v"), "cluster-size": 4096}),
    ], setup=[create("vdi", "a.vdi", "1M")], theme=T),
    sc("fmt_vdi_as_backing_probed", [
        add(fmt_node("qcow2", "top.qcow2", "top")),
    ], setup=[create("vdi", "base.vdi", "2M"),
              create("qcow2", "top.qcow2", "2M", backing="base.vdi", backing_fmt="vdi"),
              Call(strip_backing_format, ("top.qcow2",))], theme=T),
    sc("fmt_qcow_open", [
        add(fmt_node("qcow", "a.qcow", "q")),
        add(fmt_node("qcow", "c.qcow", "qc", read_only=True)),
    ], setup=[create("qcow", "a.qcow", "5M"),
              qemu_io("-f qcow -c 'write -q -P 0x11 0 64k' {dir}/a.qcow"),
              Call(convert_compressed, ("a.qcow", "c.qcow", "qcow"))], theme=T,
       # st_blocks of a freshly written file varies (speculative preallocation)
       writes=True),
    sc("fmt_qcow_backing_from_header", [
        add(fmt_node("qcow", "top.qcow", "top")),
    ], setup=[qcow2_img("base.qcow2", "2M"), create("qcow", "top.qcow", "2M", backing="base.qcow2",
                                                    backing_fmt="qcow2")], theme=T),
    sc("fmt_qcow_backing_chain_mixed", [
        add(fmt_node("qcow", "top.qcow", "top")),
        add({"driver": "qcow", "node-name": "t2", "file": fnode("top2.qcow"), "backing": None}),
    ], setup=[create("vdi", "base.vdi", "2M"),
              create("qcow", "mid.qcow", "2M", backing="base.vdi", backing_fmt="vdi"),
              create("qcow", "top.qcow", "2M", backing="mid.qcow", backing_fmt="qcow"),
              create("qcow", "top2.qcow", "2M", backing="mid.qcow", backing_fmt="qcow")], theme=T),
    sc("fmt_qcow_missing_backing", [
        add(fmt_node("qcow", "top.qcow", "top")),
    ], setup=[raw_img("base.raw", "1M"), create("qcow", "top.qcow", "1M", backing="base.raw",
                                                  backing_fmt="raw"),
              Call(rename, ("base.raw", "gone.raw"))], theme=T),
    sc("fmt_qcow_encrypt_option", [
        add({**fmt_node("qcow", "a.qcow", "q"), "encrypt": {"format": "aes"}}),
    ], setup=[create("qcow", "a.qcow", "1M")], theme=T),
    sc("fmt_qcow_reopen", [
        add(fmt_node("qcow", "a.qcow", "q")),
        reopen({"driver": "qcow", "node-name": "q", "read-only": True}),
        delete("q"),
    ], setup=[create("qcow", "a.qcow", "1M")], theme=T),
    *VDI_HOSTILE,
    *QCOW_HOSTILE,
]
