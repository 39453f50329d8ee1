"""Hostile headers of each image format, one scenario per patched field (QEMU's error texts)."""

from __future__ import annotations

from typing import Any

from tests.differential.scenarios._common import Call, WriteFile, add, raw_img, sc
from tests.differential.scenarios.format_kit import (
    T,
    create,
    fmt_node,
    hostile,
    patch,
    vpc_fix_checksum,
)

__all__ = ["HOSTILE"]


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
    hostile(
        "vdi_too_many_blocks", "vdi", _vdi(), [(384, "<I", (0x40000000,)), (368, "<Q", (4 << 20,))]
    ),
    hostile("vdi_odd_disk_size", "vdi", _vdi(), [(368, "<Q", (3 * 512 + 1,))]),
    hostile(
        "vdi_huge_bitmap_past_eof",
        "vdi",
        _vdi(),
        [(384, "<I", (0x1FFFFF80,)), (368, "<Q", (1 << 40,))],
    ),
    sc(
        "fmt_vdi_short_file",
        [add(fmt_node("vdi", "s.vdi", "h"))],
        setup=[WriteFile("s.vdi", b"<<< short >>>")],
        theme=T,
    ),
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
    sc(
        "fmt_qcow_short_file",
        [add(fmt_node("qcow", "s.qcow", "h"))],
        setup=[WriteFile("s.qcow", b"QFI\xfb")],
        theme=T,
    ),
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
    hostile(
        "qed_backing_past_header", "qed", _qed(), [(16, "<Q", (1,)), (56, "<II", (65000, 4096))]
    ),
    hostile("qed_need_check_rw", "qed", _qed(), [(16, "<Q", (2,))]),
    hostile("qed_autoclear", "qed", _qed(), [(32, "<Q", (0x80,))]),
    sc(
        "fmt_qed_short_file",
        [add(fmt_node("qed", "s.qed", "h"))],
        setup=[WriteFile("s.qed", b"QED\0")],
        theme=T,
    ),
]


def _vpc(path: str = "h.vpc", opts: str = "") -> Any:
    return create("vpc", path, "3M", opts=opts)


def vpc_hostile(
    name: str, patches: list[tuple[int, str, tuple[Any, ...]]], fix: bool = True, opts: str = ""
) -> Any:
    setup: list[Any] = [_vpc(opts=opts)] + [Call(patch, ("h.vpc", o, f, *v)) for o, f, v in patches]
    if fix:
        setup.append(Call(vpc_fix_checksum, ("h.vpc", -512 if "fixed" in opts else 0)))
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
    sc(
        "fmt_vpc_short_file",
        [add(fmt_node("vpc", "s.vpc", "h"))],
        setup=[WriteFile("s.vpc", b"short")],
        theme=T,
    ),
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
    sc(
        "fmt_par_unclean_ro",
        [add({**fmt_node("parallels", "h.parallels", "h"), "read-only": True})],
        setup=[_par(), Call(patch, ("h.parallels", 44, "<I", 0x746F6E59))],
        theme=T,
    ),
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
    sc(
        "fmt_vmdk_tiny_file",
        [add(fmt_node("vmdk", "s.vmdk", "h"))],
        setup=[WriteFile("s.vmdk", b"KD")],
        theme=T,
    ),
    sc(
        "fmt_vmdk_not_descriptor",
        [add(fmt_node("vmdk", "s.vmdk", "h"))],
        setup=[WriteFile("s.vmdk", b"hello world, no descriptor here\n")],
        theme=T,
    ),
    sc(
        "fmt_vmdk_desc_bad_type",
        [add(fmt_node("vmdk", "d.vmdk", "h"))],
        setup=[
            WriteFile(
                "d.vmdk",
                b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
                b'createType="monolithicSparse"\nRW 2048 SPARSE "x.vmdk"\n',
            )
        ],
        theme=T,
    ),
    sc(
        "fmt_vmdk_desc_bad_flat_line",
        [add(fmt_node("vmdk", "d.vmdk", "h"))],
        setup=[
            raw_img("x.raw", "1M"),
            WriteFile(
                "d.vmdk",
                b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
                b'createType="monolithicFlat"\nRW 2048 FLAT "x.raw"\n',
            ),
        ],
        theme=T,
    ),
    sc(
        "fmt_vmdk_desc_missing_extent",
        [add(fmt_node("vmdk", "d.vmdk", "h"))],
        setup=[
            WriteFile(
                "d.vmdk",
                b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
                b'createType="monolithicFlat"\nRW 2048 FLAT "gone.raw" 0\n',
            )
        ],
        theme=T,
    ),
    sc(
        "fmt_vmdk_desc_hand_flat",
        [add(fmt_node("vmdk", "d.vmdk", "h"))],
        setup=[
            raw_img("x.raw", "1M"),
            raw_img("y.raw", "2M"),
            WriteFile(
                "d.vmdk",
                b"# Disk DescriptorFile\nversion=1\nCID=12ab\nparentCID=ffffffff\n"
                b'createType="twoGbMaxExtentFlat"\nRW 2048 FLAT "x.raw" 0\n'
                b'RO 99 FLAT "z.raw" 0\nRW 1024 FLAT "y.raw" 8\nRW 0 FLAT "y.raw" 0\n',
            ),
        ],
        theme=T,
    ),
    sc(
        "fmt_vmdk_desc_sparse_extent_not_vmdk",
        [add(fmt_node("vmdk", "d.vmdk", "h"))],
        setup=[
            raw_img("x.raw", "1M"),
            WriteFile(
                "d.vmdk",
                b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
                b'createType="twoGbMaxExtentSparse"\nRW 2048 SPARSE "x.raw"\n',
            ),
        ],
        theme=T,
    ),
]


HOSTILE = [
    *VDI_HOSTILE,
    *QCOW_HOSTILE,
    *QED_HOSTILE,
    *VPC_HOSTILE,
    *PARALLELS_HOSTILE,
    *VMDK_HOSTILE,
]
