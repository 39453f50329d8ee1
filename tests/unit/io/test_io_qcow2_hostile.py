"""Hostile qcow2 headers (iotest-080 style pokes): txgraph refuses exactly as QEMU does.

Every case opens the same corrupted copy with txgraph and with a real
qemu-storage-daemon 7.2 and requires the same outcome and the same error text.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgkit import poke, qemu_img, qemu_io, qsd_open_error, txgraph_open_error

from tests.support.qsd import QSD

# (name, cluster_size, [(offset, struct format, value)], read_only)
POKES: list[tuple[str, int, list[tuple[int, str, int | bytes]], bool]] = [
    ("magic", 65536, [(0, ">I", 0x12345678)], False),
    ("version1", 65536, [(4, ">I", 1)], False),
    ("version4", 65536, [(4, ">I", 4)], False),
    ("cluster_bits_8", 65536, [(20, ">I", 8)], False),
    ("cluster_bits_22", 65536, [(20, ">I", 22)], False),
    ("header_too_short", 65536, [(100, ">I", 96)], False),
    ("header_exceeds_cluster", 65536, [(100, ">I", 65544)], False),
    ("backing_offset_beyond_cluster", 65536, [(8, ">Q", 65536 + 8), (16, ">I", 4)], False),
    ("compression_unknown", 65536, [(104, ">B", 7)], False),
    ("compression_zstd_without_bit", 65536, [(104, ">B", 1)], False),
    ("compression_bit_with_zlib", 65536, [(72, ">Q", 1 << 3)], False),
    ("unknown_incompat", 65536, [(72, ">Q", 1 << 20)], False),
    ("unknown_incompat_many", 65536, [(72, ">Q", (1 << 20) | (1 << 33))], False),
    ("corrupt_rw", 65536, [(72, ">Q", 1 << 1)], False),
    ("ok_corrupt_ro", 65536, [(72, ">Q", 1 << 1)], True),
    ("extl2_small_clusters", 4096, [(72, ">Q", 1 << 4)], False),
    ("refcount_order_7", 65536, [(96, ">I", 7)], False),
    ("crypt_3", 65536, [(32, ">I", 3)], False),
    ("crypt_aes", 65536, [(32, ">I", 1)], True),
    ("crypt_luks", 65536, [(32, ">I", 2)], False),
    ("refcount_table_clusters_0", 65536, [(56, ">I", 0)], False),
    ("refcount_table_huge", 65536, [(56, ">I", 0xFFFFFFFF)], False),
    ("refcount_table_unaligned", 65536, [(48, ">Q", 0x10001)], False),
    ("refcount_table_overflow", 65536, [(48, ">Q", 0x7FFFFFFFFFFF0000)], False),
    ("ok_refcount_table_far", 65536, [(48, ">Q", 0x7FFFFFFF00000000)], False),
    ("ok_snapshots_far", 65536, [(60, ">I", 1), (64, ">Q", 0x7FFFFFFF00000000)], False),
    ("snapshots_too_many", 65536, [(60, ">I", 0x10001)], False),
    ("snapshots_unaligned", 65536, [(60, ">I", 1), (64, ">Q", 0x10001)], False),
    ("l1_huge", 65536, [(36, ">I", 0x10000000)], False),
    ("l1_too_small", 65536, [(36, ">I", 0)], False),
    ("l1_unaligned", 65536, [(40, ">Q", 0x30001)], False),
    ("l1_overflow", 65536, [(40, ">Q", 0x7FFFFFFFFFFF0000)], False),
    ("image_too_big", 65536, [(24, ">Q", 1 << 62)], False),
    ("extension_too_large", 65536, [(112, ">I", 0x12345678), (116, ">I", 0xFFFFFF00)], False),
    ("backing_name_too_long", 65536, [(8, ">Q", 0x1000), (16, ">I", 1024)], False),
    ("backing_name_past_cluster", 512, [(8, ">Q", 0x1F0), (16, ">I", 32)], False),
    ("backing_format_too_long", 65536,
     [(112, ">I", 0xE2792ACA), (116, ">I", 16), (120, ">16s", b"q" * 16), (136, ">Q", 0)], False),
    ("bitmaps_ext_bad_length", 65536,
     [(88, ">Q", 1), (112, ">I", 0x23852875), (116, ">I", 8), (120, ">Q", 0), (128, ">Q", 0)], False),
    ("bitmaps_ext_zero", 65536,
     [(88, ">Q", 1), (112, ">I", 0x23852875), (116, ">I", 24), (120, ">24s", bytes(24)),
      (144, ">Q", 0)], False),
    ("crypto_ext_without_luks", 65536,
     [(112, ">I", 0x0537BE77), (116, ">I", 16), (120, ">16s", bytes(16)), (136, ">Q", 0)], False),
    ("data_file_raw_without_data_file", 65536, [(88, ">Q", 2)], False),
    ("ok_unaligned_size", 65536, [(24, ">Q", 67108864 - 1000)], False),
]


@pytest.fixture(scope="module")
def peer() -> Iterator[QSD]:
    with QSD() as q:
        yield q


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("hostile")
    out = {}
    for cs in (512, 4096, 65536):
        p = d / f"base{cs}.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size={cs}", p, "64M")
        qemu_io(p, "write -q -P 1 0 192k")
        out[cs] = p
    return out


@pytest.mark.parametrize("name,cs,pokes,ro", POKES, ids=[p[0] for p in POKES])
def test_hostile_header_matches_qemu(name: str, cs: int, pokes: list[tuple[int, str, int | bytes]],
                                     ro: bool, templates: dict[int, Path], peer: QSD,
                                     tmp_path: Path) -> None:
    img = tmp_path / f"{name}.qcow2"
    shutil.copy(templates[cs], img)
    for off, fmt, val in pokes:
        poke(img, off, fmt, val)
    ours = txgraph_open_error(img, ro)
    theirs = qsd_open_error(peer, img, ro)
    assert ours == theirs
    if not name.startswith("ok_"):
        assert ours is not None
