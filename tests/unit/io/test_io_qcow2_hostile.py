"""Hostile qcow2 headers (iotest-080 style pokes): txgraph refuses exactly as QEMU does.

Every case opens the same corrupted copy with txgraph and with a real
qemu-storage-daemon 7.2 and requires the same outcome and the same error text.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imgkit import open_qcow2, poke, qemu_img, qemu_io, qsd_open_error, txgraph_open_error

from tests.support.qsd import QSD
from txgraph.errors import IOFailure, OpenError

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
    (
        "backing_format_too_long",
        65536,
        [(112, ">I", 0xE2792ACA), (116, ">I", 16), (120, ">16s", b"q" * 16), (136, ">Q", 0)],
        False,
    ),
    (
        "bitmaps_ext_bad_length",
        65536,
        [(88, ">Q", 1), (112, ">I", 0x23852875), (116, ">I", 8), (120, ">Q", 0), (128, ">Q", 0)],
        False,
    ),
    (
        "bitmaps_ext_zero",
        65536,
        [
            (88, ">Q", 1),
            (112, ">I", 0x23852875),
            (116, ">I", 24),
            (120, ">24s", bytes(24)),
            (144, ">Q", 0),
        ],
        False,
    ),
    (
        "crypto_ext_without_luks",
        65536,
        [(112, ">I", 0x0537BE77), (116, ">I", 16), (120, ">16s", bytes(16)), (136, ">Q", 0)],
        False,
    ),
    ("data_file_raw_without_data_file", 65536, [(88, ">Q", 2)], False),
    ("ok_unaligned_size", 65536, [(24, ">Q", 67108864 - 1000)], False),
    # Metadata placed on other metadata opens fine; the overlap checks act on writes.
    ("ok_l1_at_header", 65536, [(40, ">Q", 0)], False),
    ("ok_l1_at_refcount_table", 65536, [(40, ">Q", 0x10000)], False),
    ("ok_refcount_table_at_l1", 65536, [(48, ">Q", 0x30000)], False),
    ("ok_refcount_table_at_header", 65536, [(48, ">Q", 0)], False),
    # Largest tables QEMU accepts: bounded allocations, zeros past EOF.
    ("ok_l1_max", 65536, [(36, ">I", (32 << 20) // 8)], False),
    ("ok_refcount_table_max", 65536, [(56, ">I", (8 << 20) // 65536)], False),
    ("ok_l1_max_small_clusters", 512, [(36, ">I", (32 << 20) // 8)], False),
    ("l1_one_too_many", 65536, [(36, ">I", (32 << 20) // 8 + 1)], False),
    ("refcount_table_one_too_many", 65536, [(56, ">I", (8 << 20) // 65536 + 1)], False),
    ("ok_dirty_bit_ro", 65536, [(72, ">Q", 1)], True),
    ("ok_dirty_bit_rw", 65536, [(72, ">Q", 1)], False),
    ("ok_autoclear_unknown_rw", 65536, [(88, ">Q", 1 << 40)], False),
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
def test_hostile_header_matches_qemu(
    name: str,
    cs: int,
    pokes: list[tuple[int, str, int | bytes]],
    ro: bool,
    templates: dict[int, Path],
    peer: QSD,
    tmp_path: Path,
) -> None:
    img = tmp_path / f"{name}.qcow2"
    shutil.copy(templates[cs], img)
    for off, fmt, val in pokes:
        poke(img, off, fmt, val)
    ours = txgraph_open_error(img, ro)
    theirs = qsd_open_error(peer, img, ro)
    assert ours == theirs
    if not name.startswith("ok_"):
        assert ours is not None


# Runtime pokes on the 64 KiB template: L1 at 0x30000, refcount table at 0x10000,
# refcount block at 0x20000, L2 at 0x40000 (data clusters 0x50000..0x70000).
RUNTIME_POKES: list[tuple[str, list[tuple[int, str, int]]]] = [
    ("l1_to_reftable", [(0x30000, ">Q", (1 << 63) | 0x10000)]),
    ("l1_to_header_copied", [(0x30000, ">Q", 1 << 63)]),
    ("l1_to_l1", [(0x30000, ">Q", 0x30000)]),
    ("l1_unaligned", [(0x30000, ">Q", (1 << 63) | 0x40200)]),
    ("l1_reserved_bits", [(0x30000, ">Q", (1 << 63) | (1 << 60) | 0x40000 | 1)]),
    ("l1_past_eof", [(0x30000, ">Q", (1 << 63) | (1 << 50))]),
    ("l2_to_reftable", [(0x40000, ">Q", (1 << 63) | 0x10000)]),
    ("l2_to_header", [(0x40000, ">Q", 1 << 63)]),
    ("l2_zero_unaligned", [(0x40000, ">Q", (1 << 63) | 0x50201)]),
    ("l2_zero_reserved", [(0x40000, ">Q", (1 << 63) | (1 << 57) | 0x50001)]),
    ("l2_compressed_garbage", [(0x40000, ">Q", (1 << 62) | 0x3FFFFFFFFFFFFFFF)]),
    ("l2_past_eof", [(0x40000, ">Q", (1 << 63) | ((1 << 56) - 65536))]),
    ("reftable_unaligned", [(0x10000, ">Q", 0x20200)]),
    ("reftable_to_l2", [(0x10000, ">Q", 0x40000)]),
    ("reftable_zero", [(0x10000, ">Q", 0)]),
    ("refcount_header_zero", [(0x20000, ">H", 0)]),
    ("refcount_l1_zero", [(0x20000 + 6, ">H", 0)]),
    ("refcount_max", [(0x20000 + 10, ">H", 0xFFFF)]),
    # Found by the differential run: the dirty-image repair counted a reference 1 TiB
    # away and tried to allocate a 4 TiB count array.
    ("dirty_l2_far_away", [(72, ">Q", 1), (0x40000, ">Q", (1 << 63) | (1 << 40))]),
    ("dirty_reftable_far_away", [(72, ">Q", 1), (0x10000, ">Q", 1 << 50)]),
]


@pytest.mark.parametrize("name,pokes", RUNTIME_POKES, ids=[p[0] for p in RUNTIME_POKES])
def test_hostile_metadata_never_crashes(
    name: str, pokes: list[tuple[int, str, int]], templates: dict[int, Path], tmp_path: Path
) -> None:
    """Reads, writes, block status, flush and close on corrupt metadata: only I/O errors.

    The differential against qemu-io lives in tests/interop/test_qcow2_hostile_rw.py;
    here every operation must end in success or an IOFailure with an errno, and
    a corruption seen on a writable node must leave the corrupt bit set.
    """
    img = tmp_path / f"{name}.qcow2"
    shutil.copy(templates[65536], img)
    for off, fmt, val in pokes:
        poke(img, off, fmt, val)
    try:
        node = open_qcow2(img, read_only=False)
    except OpenError:
        return
    errors: list[int] = []
    ops: list[Callable[[], object]] = [
        lambda: node.read(0, 65536),
        lambda: node.read(1 << 20, 4096),
        lambda: node.block_status(0, node.size()),
        lambda: node.write(0, b"\5" * 4096),
        lambda: node.write(1 << 20, b"\6" * 65536),
        lambda: node.write_zeroes(2 << 20, 65536),
        node.flush,
        lambda: node.read(0, 4096),
    ]
    for op in ops:
        try:
            op()
        except IOFailure as e:
            assert isinstance(e.errno, int) and e.errno > 0
            errors.append(e.errno)
    dead = bool(node.dead)  # type: ignore[attr-defined]
    node.close()
    info = qemu_img("info", "-U", "--output=json", img)
    assert ('"corrupt": true' in info) == dead
    if dead:
        assert 123 in errors  # after a fatal corruption every request gets ENOMEDIUM
