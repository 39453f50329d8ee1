"""Image formats beyond raw and qcow2: open, probe, backing, hostile headers, reopen.

Images are made by the real ``qemu-img`` (and patched byte by byte for hostile
headers); both peers must answer blockdev-add alike, down to the error text,
and report the same nodes, graph and image facts (cluster-size, dirty-flag,
format-specific, backing names).
"""

from __future__ import annotations

import re
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
        new = re.sub(rb"CID=([0-9a-f]+)", lambda m: b"CID=" + mapping.get(m.group(1), m.group(1)),
                     data)
        delta = len(new) - len(data)
        if delta and data[:4] == b"KDMV":
            end = new.index(b"\0", 0x200)
            new = new[:end] + new[end + delta:] if delta > 0 else \
                new[:end] + bytes(-delta) + new[end:]
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
    if fmt == "vmdk":
        setup.append(Call(pin_cids))
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

def _qed(path: str = "h.qed") -> Any:
    return create("qed", path, "3M")


QED_HOSTILE = [
    hostile("qed_bad_magic", "qed", _qed(), [(0, "<I", (0x00444552,))]),
    hostile("qed_features", "qed", _qed(), [(16, "<Q", (0x18,))]),
    hostile("qed_cluster_size", "qed", _qed(), [(4, "<I", (3000,))]),
    hostile("qed_cluster_small", "qed", _qed(), [(4, "<I", (2048,))]),
    hostile("qed_table_size", "qed", _qed(), [(8, "<I", (3,))]),
    hostile("qed_table_size_big", "qed", _qed(), [(8, "<I", (32,))]),
    hostile("qed_image_size_odd", "qed", _qed(), [(48, "<Q", (1000,))]),
    hostile("qed_image_size_huge", "qed", _qed(), [(48, "<Q", (1 << 60,))]),
    hostile("qed_l1_offset_zero", "qed", _qed(), [(40, "<Q", (0,))]),
    hostile("qed_l1_offset_eof", "qed", _qed(), [(40, "<Q", (1 << 30,))]),
    hostile("qed_l1_offset_unaligned", "qed", _qed(), [(40, "<Q", (65536 + 8,))]),
    hostile("qed_header_size_big", "qed", _qed(), [(12, "<I", (1 << 20,))]),
    hostile("qed_backing_past_header", "qed", _qed(), [(16, "<Q", (1,)), (56, "<II", (65000, 4096))]),
    hostile("qed_need_check_rw", "qed", _qed(), [(16, "<Q", (2,))]),
    hostile("qed_autoclear", "qed", _qed(), [(32, "<Q", (0x80,))]),
    sc("fmt_qed_short_file", [add(fmt_node("qed", "s.qed", "h"))],
       setup=[WriteFile("s.qed", b"QED\0")], theme=T),
]


def _vpc(path: str = "h.vpc", opts: str = "") -> Any:
    return create("vpc", path, "3M", opts=opts)


def _vpc_fix_checksum(workdir: Path, path: str, at: int = 0) -> None:
    """Recompute the footer checksum at ``at`` (``-512`` for the end) after a patch."""
    p = workdir / path
    data = bytearray(p.read_bytes())
    off = at if at >= 0 else len(data) + at
    data[off + 64:off + 68] = bytes(4)
    data[off + 64:off + 68] = struct.pack(">I", ~sum(data[off:off + 512]) & 0xFFFFFFFF)
    p.write_bytes(bytes(data))


def vpc_hostile(name: str, patches: list[tuple[int, str, tuple[Any, ...]]], fix: bool = True,
                opts: str = "") -> Any:
    setup: list[Any] = [_vpc(opts=opts)] + [Call(patch, ("h.vpc", o, f, *v)) for o, f, v in patches]
    if fix:
        setup.append(Call(_vpc_fix_checksum, ("h.vpc", -512 if "fixed" in opts else 0)))
    return sc(f"fmt_{name}", [add(fmt_node("vpc", "h.vpc", "h"))], setup=setup, theme=T)


VPC_HOSTILE = [
    vpc_hostile("vpc_bad_checksum", [(64, ">I", (1,))], fix=False),
    vpc_hostile("vpc_no_cookie", [(0, "8s", (b"notavhd!",))], fix=False),
    vpc_hostile("vpc_creator_win", [(28, "4s", (b"win ",))]),
    vpc_hostile("vpc_too_big", [(28, "4s", (b"win ",)), (48, ">Q", (1 << 42,))]),
    vpc_hostile("vpc_bad_dyn_magic", [(512, "8s", (b"xxsparse",))]),
    vpc_hostile("vpc_bad_block_size", [(512 + 32, ">I", (3000,))]),
    vpc_hostile("vpc_tiny_block_size", [(512 + 32, ">I", (256,))]),
    vpc_hostile("vpc_table_too_small", [(512 + 28, ">I", (1,))]),
    vpc_hostile("vpc_table_too_large", [(512 + 28, ">I", (0x80000000,))]),
    vpc_hostile("vpc_bat_past_eof", [(512 + 16, ">Q", (1 << 40,))]),
    vpc_hostile("vpc_dyn_header_eof", [(16, ">Q", (1 << 40,))]),
    vpc_hostile("vpc_fixed_bad_type", [(60, ">I", (3,))], opts="subformat=fixed"),
    sc("fmt_vpc_short_file", [add(fmt_node("vpc", "s.vpc", "h"))],
       setup=[WriteFile("s.vpc", b"short")], theme=T),
]


def _par(path: str = "h.parallels") -> Any:
    return create("parallels", path, "3M")


PARALLELS_HOSTILE = [
    hostile("par_bad_version", "parallels", _par(), [(16, "<I", (3,))]),
    hostile("par_bad_magic", "parallels", _par(), [(0, "16s", (b"WithFreeSpace123",))]),
    hostile("par_zero_tracks", "parallels", _par(), [(28, "<I", (0,))]),
    hostile("par_big_cluster", "parallels", _par(), [(28, "<I", (1 << 23,))]),
    hostile("par_catalog_large", "parallels", _par(), [(32, "<I", (0x20000000,))]),
    hostile("par_unclean_rw", "parallels", _par(), [(44, "<I", (0x746F6E59,))]),
    sc("fmt_par_unclean_ro", [add({**fmt_node("parallels", "h.parallels", "h"), "read-only": True})],
       setup=[_par(), Call(patch, ("h.parallels", 44, "<I", 0x746F6E59))], theme=T),
    hostile("par_old_magic", "parallels", _par(), [(0, "16s", (b"WithoutFreeSpace",))]),
]


def _vmdk(path: str = "h.vmdk", opts: str = "") -> Any:
    return create("vmdk", path, "3M", opts=opts)


VMDK_HOSTILE = [
    hostile("vmdk_version4", "vmdk", _vmdk(), [(4, "<I", (4,))]),
    hostile("vmdk_version3_rw", "vmdk", _vmdk(), [(4, "<I", (3,))]),
    hostile("vmdk_gtes_big", "vmdk", _vmdk(), [(44, "<I", (1024,))]),
    hostile("vmdk_gtes_zero", "vmdk", _vmdk(), [(44, "<I", (0,))]),
    hostile("vmdk_granularity", "vmdk", _vmdk(), [(20, "<Q", (0x400000,))]),
    hostile("vmdk_l1_big", "vmdk", _vmdk(), [(12, "<Q", (1 << 50,)), (20, "<Q", (1,))]),
    hostile("vmdk_truncated", "vmdk", _vmdk(), [(64, "<Q", (1 << 20,))]),
    hostile("vmdk_gd_at_end_bad_footer", "vmdk", _vmdk(), [(56, "<Q", (2**64 - 1,))]),
    sc("fmt_vmdk_tiny_file", [add(fmt_node("vmdk", "s.vmdk", "h"))],
       setup=[WriteFile("s.vmdk", b"KD")], theme=T),
    sc("fmt_vmdk_not_descriptor", [add(fmt_node("vmdk", "s.vmdk", "h"))],
       setup=[WriteFile("s.vmdk", b"hello world, no descriptor here\n")], theme=T),
    sc("fmt_vmdk_desc_bad_type", [add(fmt_node("vmdk", "d.vmdk", "h"))],
       setup=[WriteFile("d.vmdk", b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
                        b'createType="monolithicSparse"\nRW 2048 SPARSE "x.vmdk"\n')], theme=T),
    sc("fmt_vmdk_desc_bad_flat_line", [add(fmt_node("vmdk", "d.vmdk", "h"))],
       setup=[raw_img("x.raw", "1M"),
              WriteFile("d.vmdk", b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
                        b'createType="monolithicFlat"\nRW 2048 FLAT "x.raw"\n')], theme=T),
    sc("fmt_vmdk_desc_missing_extent", [add(fmt_node("vmdk", "d.vmdk", "h"))],
       setup=[WriteFile("d.vmdk", b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
                        b'createType="monolithicFlat"\nRW 2048 FLAT "gone.raw" 0\n')], theme=T),
    sc("fmt_vmdk_desc_hand_flat", [add(fmt_node("vmdk", "d.vmdk", "h"))],
       setup=[raw_img("x.raw", "1M"), raw_img("y.raw", "2M"),
              WriteFile("d.vmdk", b'# Disk DescriptorFile\nversion=1\nCID=12ab\nparentCID=ffffffff\n'
                        b'createType="twoGbMaxExtentFlat"\nRW 2048 FLAT "x.raw" 0\n'
                        b'RO 99 FLAT "z.raw" 0\nRW 1024 FLAT "y.raw" 8\nRW 0 FLAT "y.raw" 0\n')],
       theme=T),
    sc("fmt_vmdk_desc_sparse_extent_not_vmdk", [add(fmt_node("vmdk", "d.vmdk", "h"))],
       setup=[raw_img("x.raw", "1M"),
              WriteFile("d.vmdk", b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
                        b'createType="twoGbMaxExtentSparse"\nRW 2048 SPARSE "x.raw"\n')], theme=T),
]

def bochs_image(version: int = 0x00020000, extent: int = 4096, disk: int = 1 << 20,
                catalog: int | None = None, magic: bytes = b"Bochs Virtual HD Image",
                subtype: bytes = b"Growing") -> bytes:
    """A Bochs growing redolog (qemu-img cannot create one): extents 1 and 5 allocated,
    extent 1 with only sectors 0 and 2 present in its bitmap."""
    h = bytearray(512)
    h[0:len(magic)] = magic
    h[32:39] = b"Redolog"
    h[48:48 + len(subtype)] = subtype
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
    data[blocks * 512:blocks * 512 + 2] = b"\xff\x01"
    for i in range(len(data) // 512):
        if i % blocks:
            data[i * 512:(i + 1) * 512] = bytes([0x40 + i % 64]) * 512
    return bytes(h) + body + bytes(data)


def _bochs(name: str, **kw: Any) -> Any:
    return sc(f"fmt_bochs_{name}", [add({**fmt_node("bochs", "h.bochs", "h"), "read-only": True})],
              setup=[WriteFile("h.bochs", bochs_image(**kw))], theme=T)


_CLOOP_MAGIC = (b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 "
                b"/dev/cloop $1\n")


def cloop_image(block_size: int = 4096, n_blocks: int = 5, offsets: list[int] | None = None,
                corrupt: bool = False) -> bytes:
    """A cloop image (qemu-img cannot create one): zlib blocks of patterns."""
    import zlib

    blocks = [zlib.compress(bytes([0x30 + i]) * min(block_size, 1 << 16))
              for i in range(min(n_blocks, 64))]
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


def _cloop(name: str, **kw: Any) -> Any:
    return sc(f"fmt_cloop_{name}", [add({**fmt_node("cloop", "h.cloop", "h"), "read-only": True})],
              setup=[WriteFile("h.cloop", cloop_image(**kw))], theme=T)


CLOOP = [
    sc("fmt_cloop_modes", [
        add(fmt_node("cloop", "c.cloop", "rw")),
        add({**fmt_node("cloop", "c.cloop", "auto"), "auto-read-only": True}),
        add({"driver": "cloop", "node-name": "ro", "read-only": True,
             "file": fnode("c.cloop", "rof")}),
        reopen({"driver": "cloop", "node-name": "ro", "file": "rof", "read-only": True}),
    ], setup=[WriteFile("c.cloop", cloop_image())], theme=T),
    _cloop("block_unaligned", block_size=1000),
    _cloop("block_zero", block_size=0),
    _cloop("block_huge", block_size=128 << 20, n_blocks=0),
    _cloop("n_blocks_huge", n_blocks=0x20000000, offsets=[]),
    _cloop("too_many_offsets", n_blocks=0x4000000, offsets=[]),
    _cloop("not_monotonic", offsets=[200, 300, 250, 400, 500, 600]),
    _cloop("compressed_too_big", offsets=[200, 300, 300 + (129 << 20), 0, 0, 0]),
    _cloop("offsets_past_eof", n_blocks=70000, offsets=[]),
    sc("fmt_cloop_probed_backing", [add(fmt_node("qcow2", "top.qcow2", "t"))],
       setup=[WriteFile("c.cloop", cloop_image()),
              create("qcow2", "top.qcow2", "1M", backing="c.cloop", backing_fmt="raw"),
              Call(strip_backing_format, ("top.qcow2",))], theme=T),
]

BOCHS = [
    sc("fmt_bochs_modes", [
        add(fmt_node("bochs", "b.bochs", "rw")),
        add({**fmt_node("bochs", "b.bochs", "auto"), "auto-read-only": True}),
        add({"driver": "bochs", "node-name": "ro", "read-only": True,
             "file": fnode("b.bochs", "rof")}),
        reopen({"driver": "bochs", "node-name": "ro", "file": "rof", "read-only": True}),
        delete("auto"),
    ], setup=[WriteFile("b.bochs", bochs_image()), WriteFile("v1.bochs", bochs_image(0x00010000))],
       theme=T),
    sc("fmt_bochs_v1", [add({**fmt_node("bochs", "v1.bochs", "v1"), "read-only": True})],
       setup=[WriteFile("v1.bochs", bochs_image(0x00010000))], theme=T),
    _bochs("bad_magic", magic=b"Bochs Virtual HD Imagf"),
    _bochs("bad_subtype", subtype=b"Undoable"),
    _bochs("bad_version", version=0x00030000),
    _bochs("catalog_large", catalog=0x100001),
    _bochs("extent_small", extent=256),
    _bochs("extent_not_pow2", extent=3000),
    _bochs("extent_large", extent=1 << 24, disk=1 << 24),
    _bochs("catalog_small", catalog=3),
    sc("fmt_bochs_probed_backing", [add(fmt_node("qcow2", "top.qcow2", "t"))],
       setup=[WriteFile("b.bochs", bochs_image()),
              create("qcow2", "top.qcow2", "1M", backing="b.bochs", backing_fmt="raw"),
              Call(strip_backing_format, ("top.qcow2",))], theme=T),
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
    sc("fmt_qed_open", [
        add(fmt_node("qed", "a.qed", "q")),
        add(fmt_node("qed", "b.qed", "qb", read_only=True)),
    ], setup=[create("qed", "a.qed", "5M"), create("qed", "b.qed", "8M", opts="cluster_size=4096,table_size=2")],
       theme=T),
    sc("fmt_qed_backing", [
        add(fmt_node("qed", "top.qed", "top")),
        add(fmt_node("qed", "raw.qed", "r")),
        add({**fmt_node("qed", "top.qed", "t2", read_only=True), "backing": None}),
    ], setup=[qcow2_img("base.qcow2", "2M"), raw_img("base.raw", "2M"),
              create("qed", "top.qed", "2M", backing="base.qcow2", backing_fmt="qcow2"),
              create("qed", "raw.qed", "2M", backing="base.raw", backing_fmt="raw")], theme=T),
    sc("fmt_qed_reopen", [
        add({"driver": "qed", "node-name": "q", "file": fnode("a.qed", "qf")}),
        reopen({"driver": "qed", "node-name": "q", "file": "qf", "read-only": True}),
        reopen({"driver": "qed", "node-name": "q", "file": "qf", "read-only": False}),
    ], setup=[create("qed", "a.qed", "1M")], theme=T),
    sc("fmt_vpc_open", [
        add(fmt_node("vpc", "a.vpc", "d")),
        add(fmt_node("vpc", "f.vpc", "f")),
        add(fmt_node("vpc", "s.vpc", "s", read_only=True)),
    ], setup=[create("vpc", "a.vpc", "5M"), create("vpc", "f.vpc", "3M", opts="subformat=fixed"),
              create("vpc", "s.vpc", "3M", opts="force_size=on")], theme=T),
    sc("fmt_vpc_reopen", [
        add({"driver": "vpc", "node-name": "v", "file": fnode("a.vpc", "vf")}),
        reopen({"driver": "vpc", "node-name": "v", "file": "vf", "read-only": True}),
    ], setup=[create("vpc", "a.vpc", "1M")], theme=T),
    sc("fmt_vpc_runtime_option", [
        add({**fmt_node("vpc", "a.vpc", "v"), "force_size_calc": "chs"}),
    ], setup=[create("vpc", "a.vpc", "1M")], theme=T),
    sc("fmt_parallels_open", [
        add(fmt_node("parallels", "a.parallels", "p", read_only=True)),
        add(fmt_node("parallels", "b.parallels", "p2")),
        delete("p2"),
        add(fmt_node("parallels", "b.parallels", "p3")),
    ], setup=[create("parallels", "a.parallels", "5M"),
              create("parallels", "b.parallels", "3M", opts="cluster_size=64k")], theme=T),
    sc("fmt_parallels_reopen", [
        add({"driver": "parallels", "node-name": "p", "file": fnode("a.parallels", "pf")}),
        reopen({"driver": "parallels", "node-name": "p", "file": "pf", "read-only": True}),
    ], setup=[create("parallels", "a.parallels", "1M")], theme=T),
    sc("fmt_vmdk_sparse", [
        add(fmt_node("vmdk", "a.vmdk", "v")),
        add(fmt_node("vmdk", "z.vmdk", "z", read_only=True)),
    ], setup=[create("vmdk", "a.vmdk", "5M"), create("vmdk", "z.vmdk", "3M", opts="zeroed_grain=on"), Call(pin_cids)],
       theme=T),
    sc("fmt_vmdk_flat", [
        add(fmt_node("vmdk", "f.vmdk", "f")),
    ], setup=[create("vmdk", "f.vmdk", "3M", opts="subformat=monolithicFlat"), Call(pin_cids)], theme=T),
    sc("fmt_vmdk_split", [
        add(fmt_node("vmdk", "s.vmdk", "s")),
        add(fmt_node("vmdk", "t.vmdk", "t", read_only=True)),
    ], setup=[create("vmdk", "s.vmdk", "3M", opts="subformat=twoGbMaxExtentSparse"),
              create("vmdk", "t.vmdk", "3M", opts="subformat=twoGbMaxExtentFlat"), Call(pin_cids)], theme=T),
    sc("fmt_vmdk_stream", [
        add(fmt_node("vmdk", "so.vmdk", "so", read_only=True)),
    ], setup=[create("vmdk", "a.vmdk", "3M"),
              qemu_img("convert -O vmdk -o subformat=streamOptimized {dir}/a.vmdk {dir}/so.vmdk"), Call(pin_cids)],
       theme=T),
    sc("fmt_vmdk_backing", [
        add(fmt_node("vmdk", "top.vmdk", "top")),
    ], setup=[create("vmdk", "base.vmdk", "3M"),
              create("vmdk", "top.vmdk", "3M", backing="base.vmdk", backing_fmt="vmdk"), Call(pin_cids)], theme=T),
    sc("fmt_vmdk_reopen", [
        add({"driver": "vmdk", "node-name": "v", "file": fnode("f.vmdk", "vf")}),
        reopen({"driver": "vmdk", "node-name": "v", "file": "vf", "read-only": True}),
        delete("v"),
    ], setup=[create("vmdk", "f.vmdk", "3M", opts="subformat=monolithicFlat"), Call(pin_cids)], theme=T),
    sc("fmt_probe_all", [
        add(fmt_node("qcow2", "top1.qcow2", "t1")),
        add(fmt_node("qcow2", "top2.qcow2", "t2")),
        add(fmt_node("qcow2", "top3.qcow2", "t3")),
        add(fmt_node("qcow2", "top4.qcow2", "t4")),
        add(fmt_node("qcow2", "top5.qcow2", "t5")),
        add(fmt_node("qcow2", "top6.qcow2", "t6")),
    ], setup=[
        create("vpc", "b1.vpc", "2M"), create("qed", "b2.qed", "2M"), create("qcow", "b3.qcow", "2M"),
        create("parallels", "b4.parallels", "2M"), create("vmdk", "b5.vmdk", "2M"),
        create("vmdk", "b6.vmdk", "2M", opts="subformat=monolithicFlat"),
        *[create("qcow2", f"top{i}.qcow2", "2M", backing=b, backing_fmt=f) for i, (b, f) in
          enumerate([("b1.vpc", "vpc"), ("b2.qed", "qed"), ("b3.qcow", "qcow"),
                     ("b4.parallels", "parallels"), ("b5.vmdk", "vmdk"), ("b6.vmdk", "vmdk")], 1)],
        *[Call(strip_backing_format, (f"top{i}.qcow2",)) for i in range(1, 7)], Call(pin_cids),
    ], theme=T),
    *VDI_HOSTILE,
    *QCOW_HOSTILE,
    *QED_HOSTILE,
    *VPC_HOSTILE,
    *PARALLELS_HOSTILE,
    *VMDK_HOSTILE,
    *BOCHS,
    *CLOOP,
]
