"""Format probing (``bdrv_probe_all``) agrees with what qemu-img 7.2 probes.

For images made by ``qemu-img create`` of every format, and hand-made headers
(vmdk descriptors with comments/blank lines/CRLF, bochs and cloop magics, a
qcow version 1 magic), ``probe_format`` of the first 512 bytes must name the
format ``qemu-img info`` (no ``-f``) reports.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from txgraph.io.formats.probes import probe_scores
from txgraph.io.probe import probe_format


def _qemu_probe(path: Path) -> str:
    res = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, timeout=60
    )
    if res.returncode != 0:
        # the probed driver failed to open the image: its name is in the error
        return res.stderr
    return str(json.loads(res.stdout)["format"])


def _bochs() -> bytes:
    h = bytearray(512)
    h[0:22] = b"Bochs Virtual HD Image"
    h[32:39] = b"Redolog"
    h[48:55] = b"Growing"
    struct.pack_into("<I", h, 64, 0x00020000)
    return bytes(h)


_CLOOP = (
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"
    + bytes(400)
)
_DESC = (
    b'# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
)

#: name -> (first bytes, probed format, what qemu-img info says: the format, or the probed
#: driver's own open error / assertion, which proves it was that driver that was picked)
HAND_MADE: dict[str, tuple[bytes, str, str]] = {
    "desc.vmdk": (_DESC, "vmdk", "vmdk_get_info: Assertion `s->num_extents' failed"),
    "desc_blank.vmdk": (
        b"# c1\n   \n# c2\n" + _DESC.split(b"\n", 1)[1],
        "vmdk",
        "vmdk_get_info: Assertion `s->num_extents' failed",
    ),
    "desc_crlf.vmdk": (
        b"# Disk DescriptorFile\r\nversion=2\r\nCID=1\r\n",
        "vmdk",
        "invalid VMDK image descriptor",
    ),
    "desc_v4.vmdk": (b"# Disk DescriptorFile\nversion=4\n", "raw", "raw"),
    "desc_text_first.vmdk": (b"hello\nversion=1\n", "raw", "raw"),
    "bochs.img": (_bochs(), "bochs", "Extent size must be at least 512"),
    "cloop.img": (_CLOOP, "cloop", "block_size cannot be zero"),
    "qcow1.img": (
        b"QFI\xfb\0\0\0\x01" + bytes(504),
        "qcow",
        "Image size is too small (must be at least 2 bytes)",
    ),
    "zeros.img": (bytes(512), "raw", "raw"),
}


@pytest.mark.parametrize(
    "fmt,opts",
    [
        ("vdi", ""),
        ("vpc", ""),
        ("vhdx", ""),
        ("qed", ""),
        ("qcow", ""),
        ("qcow2", ""),
        ("parallels", ""),
        ("vmdk", ""),
        ("vmdk", "subformat=monolithicFlat"),
        ("vmdk", "subformat=streamOptimized"),
        ("raw", ""),
        ("vpc", "subformat=fixed"),
    ],
)
def test_created_images_probe_like_qemu(fmt: str, opts: str, tmp_path: Path) -> None:
    img = tmp_path / f"a.{fmt}"
    argv = (
        ["qemu-img", "create", "-q", "-f", fmt] + (["-o", opts] if opts else []) + [str(img), "1M"]
    )
    subprocess.run(argv, check=True, capture_output=True)
    head = img.read_bytes()[:512]
    assert probe_format(head) == _qemu_probe(img)


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_hand_made_headers_probe_like_qemu(name: str, tmp_path: Path) -> None:
    img = tmp_path / name
    data, probed, qemu_says = HAND_MADE[name]
    img.write_bytes(data + bytes(1024))
    assert probe_format(img.read_bytes()[:512]) == probed
    theirs = _qemu_probe(img)
    assert theirs == qemu_says if qemu_says == probed else qemu_says in theirs, theirs


def test_dmg_probes_by_file_name_only() -> None:
    assert probe_scores(bytes(512), "disk.dmg")["dmg"] == 2
    assert probe_scores(bytes(512), "")["dmg"] == 0
