"""Image formats beyond raw and qcow2: open, probe, backing, hostile headers, reopen.

Images are made by the real ``qemu-img`` (and patched byte by byte for hostile
headers); both peers must answer blockdev-add alike, down to the error text,
and report the same nodes, graph and image facts (cluster-size, dirty-flag,
format-specific, backing names).
"""

from __future__ import annotations

from typing import Any

from tests.differential.scenarios._common import (
    Call,
    WriteFile,
    add,
    cmd,
    delete,
    fnode,
    obj_add,
    qcow2_img,
    qemu_img,
    qemu_io,
    raw_img,
    sc,
    strip_backing_format,
)
from tests.differential.scenarios.format_kit import (
    T,
    bochs_image,
    cloop_image,
    convert_compressed,
    create,
    fmt_node,
    pin_cids,
    rename,
    reopen,
)
from tests.differential.scenarios.formats_dmg import DMG
from tests.differential.scenarios.formats_hostile import HOSTILE
from tests.differential.scenarios.formats_vhdx import VHDX

__all__ = ["SCENARIOS"]


def _json_backing(workdir: Any, top: str, base: str) -> None:
    """A qcow2 whose header names its backing as a json: filename without a driver (probed)."""
    import subprocess

    spec = '{"file": {"driver": "file", "filename": "%s"}}' % (workdir / base)
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "json:" + spec,
            "-F",
            "vdi",
            str(workdir / top),
            "2M",
        ],
        check=True,
        capture_output=True,
    )
    strip_backing_format(workdir, top)


def _bochs(name: str, **kw: Any) -> Any:
    return sc(
        f"fmt_bochs_{name}",
        [add({**fmt_node("bochs", "h.bochs", "h"), "read-only": True})],
        setup=[WriteFile("h.bochs", bochs_image(**kw))],
        theme=T,
    )


def _cloop(name: str, **kw: Any) -> Any:
    return sc(
        f"fmt_cloop_{name}",
        [add({**fmt_node("cloop", "h.cloop", "h"), "read-only": True})],
        setup=[WriteFile("h.cloop", cloop_image(**kw))],
        theme=T,
    )


CLOOP = [
    sc(
        "fmt_cloop_modes",
        [
            add(fmt_node("cloop", "c.cloop", "rw")),
            add({**fmt_node("cloop", "c.cloop", "auto"), "auto-read-only": True}),
            add(
                {
                    "driver": "cloop",
                    "node-name": "ro",
                    "read-only": True,
                    "file": fnode("c.cloop", "rof"),
                }
            ),
            reopen({"driver": "cloop", "node-name": "ro", "file": "rof", "read-only": True}),
        ],
        setup=[WriteFile("c.cloop", cloop_image())],
        theme=T,
    ),
    _cloop("block_unaligned", block_size=1000),
    _cloop("block_zero", block_size=0),
    _cloop("block_huge", block_size=128 << 20, n_blocks=0),
    _cloop("n_blocks_huge", n_blocks=0x20000000, offsets=[]),
    _cloop("too_many_offsets", n_blocks=0x4000000, offsets=[]),
    _cloop("not_monotonic", offsets=[200, 300, 250, 400, 500, 600]),
    _cloop("compressed_too_big", offsets=[200, 300, 300 + (129 << 20), 0, 0, 0]),
    _cloop("offsets_past_eof", n_blocks=70000, offsets=[]),
    sc(
        "fmt_cloop_probed_backing",
        [add(fmt_node("qcow2", "top.qcow2", "t"))],
        setup=[
            WriteFile("c.cloop", cloop_image()),
            create("qcow2", "top.qcow2", "1M", backing="c.cloop", backing_fmt="raw"),
            Call(strip_backing_format, ("top.qcow2",)),
        ],
        theme=T,
    ),
]

BOCHS = [
    sc(
        "fmt_bochs_modes",
        [
            add(fmt_node("bochs", "b.bochs", "rw")),
            add({**fmt_node("bochs", "b.bochs", "auto"), "auto-read-only": True}),
            add(
                {
                    "driver": "bochs",
                    "node-name": "ro",
                    "read-only": True,
                    "file": fnode("b.bochs", "rof"),
                }
            ),
            reopen({"driver": "bochs", "node-name": "ro", "file": "rof", "read-only": True}),
            delete("auto"),
        ],
        setup=[WriteFile("b.bochs", bochs_image()), WriteFile("v1.bochs", bochs_image(0x00010000))],
        theme=T,
    ),
    sc(
        "fmt_bochs_v1",
        [add({**fmt_node("bochs", "v1.bochs", "v1"), "read-only": True})],
        setup=[WriteFile("v1.bochs", bochs_image(0x00010000))],
        theme=T,
    ),
    _bochs("bad_magic", magic=b"Bochs Virtual HD Imagf"),
    _bochs("bad_subtype", subtype=b"Undoable"),
    _bochs("bad_version", version=0x00030000),
    _bochs("catalog_large", catalog=0x100001),
    _bochs("extent_small", extent=256),
    _bochs("extent_not_pow2", extent=3000),
    _bochs("extent_large", extent=1 << 24, disk=1 << 24),
    _bochs("catalog_small", catalog=3),
    sc(
        "fmt_bochs_probed_backing",
        [add(fmt_node("qcow2", "top.qcow2", "t"))],
        setup=[
            WriteFile("b.bochs", bochs_image()),
            create("qcow2", "top.qcow2", "1M", backing="b.bochs", backing_fmt="raw"),
            Call(strip_backing_format, ("top.qcow2",)),
        ],
        theme=T,
    ),
]

SCENARIOS = [
    sc(
        "fmt_vdi_open",
        [
            add(fmt_node("vdi", "a.vdi", "v")),
            add(fmt_node("vdi", "b.vdi", "s", read_only=True)),
        ],
        setup=[create("vdi", "a.vdi", "5M"), create("vdi", "b.vdi", "2M", opts="static=on")],
        theme=T,
    ),
    sc(
        "fmt_vdi_reopen",
        [
            add({"driver": "vdi", "node-name": "v", "file": fnode("a.vdi", "vf")}),
            reopen({"driver": "vdi", "node-name": "v", "file": "vf", "read-only": True}),
            cmd(
                "blockdev-reopen",
                {"options": [{"driver": "vdi", "node-name": "v", "read-only": True}]},
            ),
        ],
        setup=[create("vdi", "a.vdi", "1M")],
        theme=T,
    ),
    sc(
        "fmt_vdi_unknown_option",
        [
            add({**fmt_node("vdi", "a.vdi", "v"), "cluster-size": 4096}),
        ],
        setup=[create("vdi", "a.vdi", "1M")],
        theme=T,
    ),
    sc(
        "fmt_vdi_as_backing_probed",
        [
            add(fmt_node("qcow2", "top.qcow2", "top")),
        ],
        setup=[
            create("vdi", "base.vdi", "2M"),
            create("qcow2", "top.qcow2", "2M", backing="base.vdi", backing_fmt="vdi"),
            Call(strip_backing_format, ("top.qcow2",)),
        ],
        theme=T,
    ),
    sc(
        "fmt_qcow_open",
        [
            add(fmt_node("qcow", "a.qcow", "q")),
            add(fmt_node("qcow", "c.qcow", "qc", read_only=True)),
        ],
        setup=[
            create("qcow", "a.qcow", "5M"),
            qemu_io("-f qcow -c 'write -q -P 0x11 0 64k' {dir}/a.qcow"),
            Call(convert_compressed, ("a.qcow", "c.qcow", "qcow")),
        ],
        theme=T,
        # st_blocks of a freshly written file varies (speculative preallocation)
        writes=True,
    ),
    sc(
        "fmt_qcow_backing_from_header",
        [
            add(fmt_node("qcow", "top.qcow", "top")),
        ],
        setup=[
            qcow2_img("base.qcow2", "2M"),
            create("qcow", "top.qcow", "2M", backing="base.qcow2", backing_fmt="qcow2"),
        ],
        theme=T,
    ),
    sc(
        "fmt_qcow_backing_chain_mixed",
        [
            add(fmt_node("qcow", "top.qcow", "top")),
            add({"driver": "qcow", "node-name": "t2", "file": fnode("top2.qcow"), "backing": None}),
        ],
        setup=[
            create("vdi", "base.vdi", "2M"),
            create("qcow", "mid.qcow", "2M", backing="base.vdi", backing_fmt="vdi"),
            create("qcow", "top.qcow", "2M", backing="mid.qcow", backing_fmt="qcow"),
            create("qcow", "top2.qcow", "2M", backing="mid.qcow", backing_fmt="qcow"),
        ],
        theme=T,
    ),
    sc(
        "fmt_qcow_missing_backing",
        [
            add(fmt_node("qcow", "top.qcow", "top")),
        ],
        setup=[
            raw_img("base.raw", "1M"),
            create("qcow", "top.qcow", "1M", backing="base.raw", backing_fmt="raw"),
            Call(rename, ("base.raw", "gone.raw")),
        ],
        theme=T,
    ),
    sc(
        "fmt_qcow_encrypt_option",
        [
            add({**fmt_node("qcow", "a.qcow", "q"), "encrypt": {"format": "aes"}}),
        ],
        setup=[create("qcow", "a.qcow", "1M")],
        theme=T,
    ),
    sc(
        "fmt_qcow_aes_open",
        [
            obj_add({"qom-type": "secret", "id": "s0", "data": "hunter2"}),
            add(fmt_node("qcow", "e.qcow", "nokey")),
            add(
                {
                    **fmt_node("qcow", "e.qcow", "q"),
                    "encrypt": {"format": "aes", "key-secret": "s0"},
                }
            ),
            delete("q"),
            add(
                {
                    **fmt_node("qcow", "e.qcow", "r", read_only=True),
                    "encrypt": {"key-secret": "s0", "format": "aes"},
                }
            ),
            add(
                {
                    **fmt_node("qcow", "e.qcow", "x"),
                    "encrypt": {"format": "luks", "key-secret": "s0"},
                }
            ),
            add(
                {
                    **fmt_node("qcow", "e.qcow", "y"),
                    "encrypt": {"format": "aes", "key-secret": "nosuch"},
                }
            ),
        ],
        setup=[
            qemu_img(
                "create -q -f qcow --object secret,id=s0,data=hunter2 "
                "-o encrypt.format=aes,encrypt.key-secret=s0 {dir}/e.qcow 1M"
            )
        ],
        theme=T,
    ),
    sc(
        "fmt_qcow_reopen",
        [
            add(fmt_node("qcow", "a.qcow", "q")),
            reopen({"driver": "qcow", "node-name": "q", "read-only": True}),
            delete("q"),
        ],
        setup=[create("qcow", "a.qcow", "1M")],
        theme=T,
    ),
    sc(
        "fmt_qed_open",
        [
            add(fmt_node("qed", "a.qed", "q")),
            add(fmt_node("qed", "b.qed", "qb", read_only=True)),
        ],
        setup=[
            create("qed", "a.qed", "5M"),
            create("qed", "b.qed", "8M", opts="cluster_size=4096,table_size=2"),
        ],
        theme=T,
    ),
    sc(
        "fmt_qed_backing",
        [
            add(fmt_node("qed", "top.qed", "top")),
            add(fmt_node("qed", "raw.qed", "r")),
            add({**fmt_node("qed", "top.qed", "t2", read_only=True), "backing": None}),
        ],
        setup=[
            qcow2_img("base.qcow2", "2M"),
            raw_img("base.raw", "2M"),
            create("qed", "top.qed", "2M", backing="base.qcow2", backing_fmt="qcow2"),
            create("qed", "raw.qed", "2M", backing="base.raw", backing_fmt="raw"),
        ],
        theme=T,
    ),
    sc(
        "fmt_qed_reopen",
        [
            add({"driver": "qed", "node-name": "q", "file": fnode("a.qed", "qf")}),
            reopen({"driver": "qed", "node-name": "q", "file": "qf", "read-only": True}),
            reopen({"driver": "qed", "node-name": "q", "file": "qf", "read-only": False}),
        ],
        setup=[create("qed", "a.qed", "1M")],
        theme=T,
    ),
    sc(
        "fmt_vpc_open",
        [
            add(fmt_node("vpc", "a.vpc", "d")),
            add(fmt_node("vpc", "f.vpc", "f")),
            add(fmt_node("vpc", "s.vpc", "s", read_only=True)),
        ],
        setup=[
            create("vpc", "a.vpc", "5M"),
            create("vpc", "f.vpc", "3M", opts="subformat=fixed"),
            create("vpc", "s.vpc", "3M", opts="force_size=on"),
        ],
        theme=T,
    ),
    sc(
        "fmt_vpc_reopen",
        [
            add({"driver": "vpc", "node-name": "v", "file": fnode("a.vpc", "vf")}),
            reopen({"driver": "vpc", "node-name": "v", "file": "vf", "read-only": True}),
        ],
        setup=[create("vpc", "a.vpc", "1M")],
        theme=T,
    ),
    sc(
        "fmt_vpc_runtime_option",
        [
            add({**fmt_node("vpc", "a.vpc", "v"), "force_size_calc": "chs"}),
        ],
        setup=[create("vpc", "a.vpc", "1M")],
        theme=T,
    ),
    sc(
        "fmt_parallels_open",
        [
            add(fmt_node("parallels", "a.parallels", "p", read_only=True)),
            add(fmt_node("parallels", "b.parallels", "p2")),
            delete("p2"),
            add(fmt_node("parallels", "b.parallels", "p3")),
        ],
        setup=[
            create("parallels", "a.parallels", "5M"),
            create("parallels", "b.parallels", "3M", opts="cluster_size=64k"),
        ],
        theme=T,
    ),
    sc(
        "fmt_parallels_reopen",
        [
            add({"driver": "parallels", "node-name": "p", "file": fnode("a.parallels", "pf")}),
            reopen({"driver": "parallels", "node-name": "p", "file": "pf", "read-only": True}),
        ],
        setup=[create("parallels", "a.parallels", "1M")],
        theme=T,
    ),
    sc(
        "fmt_vmdk_sparse",
        [
            add(fmt_node("vmdk", "a.vmdk", "v")),
            add(fmt_node("vmdk", "z.vmdk", "z", read_only=True)),
        ],
        setup=[
            create("vmdk", "a.vmdk", "5M"),
            create("vmdk", "z.vmdk", "3M", opts="zeroed_grain=on"),
            Call(pin_cids),
        ],
        theme=T,
    ),
    sc(
        "fmt_vmdk_flat",
        [
            add(fmt_node("vmdk", "f.vmdk", "f")),
        ],
        setup=[create("vmdk", "f.vmdk", "3M", opts="subformat=monolithicFlat"), Call(pin_cids)],
        theme=T,
    ),
    sc(
        "fmt_vmdk_split",
        [
            add(fmt_node("vmdk", "s.vmdk", "s")),
            add(fmt_node("vmdk", "t.vmdk", "t", read_only=True)),
        ],
        setup=[
            create("vmdk", "s.vmdk", "3M", opts="subformat=twoGbMaxExtentSparse"),
            create("vmdk", "t.vmdk", "3M", opts="subformat=twoGbMaxExtentFlat"),
            Call(pin_cids),
        ],
        theme=T,
    ),
    sc(
        "fmt_vmdk_stream",
        [
            add(fmt_node("vmdk", "so.vmdk", "so", read_only=True)),
        ],
        setup=[
            create("vmdk", "a.vmdk", "3M"),
            qemu_img("convert -O vmdk -o subformat=streamOptimized {dir}/a.vmdk {dir}/so.vmdk"),
            Call(pin_cids),
        ],
        theme=T,
    ),
    sc(
        "fmt_vmdk_backing",
        [
            add(fmt_node("vmdk", "top.vmdk", "top")),
        ],
        setup=[
            create("vmdk", "base.vmdk", "3M"),
            create("vmdk", "top.vmdk", "3M", backing="base.vmdk", backing_fmt="vmdk"),
            Call(pin_cids),
        ],
        theme=T,
    ),
    sc(
        "fmt_vmdk_reopen",
        [
            add({"driver": "vmdk", "node-name": "v", "file": fnode("f.vmdk", "vf")}),
            reopen({"driver": "vmdk", "node-name": "v", "file": "vf", "read-only": True}),
            delete("v"),
        ],
        setup=[create("vmdk", "f.vmdk", "3M", opts="subformat=monolithicFlat"), Call(pin_cids)],
        theme=T,
    ),
    sc(
        "fmt_probe_all",
        [
            add(fmt_node("qcow2", "top1.qcow2", "t1")),
            add(fmt_node("qcow2", "top2.qcow2", "t2")),
            add(fmt_node("qcow2", "top3.qcow2", "t3")),
            add(fmt_node("qcow2", "top4.qcow2", "t4")),
            add(fmt_node("qcow2", "top5.qcow2", "t5")),
            add(fmt_node("qcow2", "top6.qcow2", "t6")),
        ],
        setup=[
            create("vpc", "b1.vpc", "2M"),
            create("qed", "b2.qed", "2M"),
            create("qcow", "b3.qcow", "2M"),
            create("parallels", "b4.parallels", "2M"),
            create("vmdk", "b5.vmdk", "2M"),
            create("vmdk", "b6.vmdk", "2M", opts="subformat=monolithicFlat"),
            *[
                create("qcow2", f"top{i}.qcow2", "2M", backing=b, backing_fmt=f)
                for i, (b, f) in enumerate(
                    [
                        ("b1.vpc", "vpc"),
                        ("b2.qed", "qed"),
                        ("b3.qcow", "qcow"),
                        ("b4.parallels", "parallels"),
                        ("b5.vmdk", "vmdk"),
                        ("b6.vmdk", "vmdk"),
                    ],
                    1,
                )
            ],
            *[Call(strip_backing_format, (f"top{i}.qcow2",)) for i in range(1, 7)],
            Call(pin_cids),
        ],
        theme=T,
    ),
    sc(
        "fmt_explicit_backing_and_reopen",
        [
            add({"driver": "qcow2", "node-name": "base", "file": fnode("base.qcow2")}),
            add(
                {
                    "driver": "qed",
                    "node-name": "q",
                    "file": fnode("top.qed", "qf"),
                    "backing": "base",
                }
            ),
            add(
                {
                    "driver": "qcow",
                    "node-name": "c",
                    "file": fnode("top.qcow", "cf"),
                    "backing": None,
                }
            ),
            reopen({"driver": "qcow", "node-name": "c", "file": "cf", "backing": "base"}),
            reopen({"driver": "qed", "node-name": "q", "file": "qf", "backing": None}),
            reopen({"driver": "qed", "node-name": "q", "file": "qf"}),
            add(
                {"driver": "vdi", "node-name": "v", "file": fnode("a.vdi", "vf"), "backing": "base"}
            ),
            add(
                {
                    "driver": "vmdk",
                    "node-name": "k",
                    "file": fnode("k.vmdk"),
                    "backing": {"driver": "vmdk", "file": fnode("kb.vmdk")},
                }
            ),
        ],
        setup=[
            qcow2_img("base.qcow2", "2M"),
            create("qed", "top.qed", "2M", backing="base.qcow2", backing_fmt="qcow2"),
            create("qcow", "top.qcow", "2M"),
            create("vdi", "a.vdi", "2M"),
            create("vmdk", "kb.vmdk", "2M"),
            create("vmdk", "k.vmdk", "2M"),
            Call(pin_cids),
        ],
        theme=T,
    ),
    sc(
        "fmt_json_filename_backing",
        [
            add(fmt_node("qcow2", "top.qcow2", "t")),
        ],
        setup=[create("vdi", "b.vdi", "2M"), Call(_json_backing, ("top.qcow2", "b.vdi"))],
        theme=T,
    ),
    *HOSTILE,
    *BOCHS,
    *CLOOP,
    *VHDX,
    *DMG,
]
