"""file, raw and null-co/null-aio drivers: QEMU's open errors, sizes and data paths."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imgkit import open_node, qemu_img, run

from tests.support.qsd import QSD
from txgraph.errors import IOFailure, OpenError
from txgraph.io.probe import probe_format


@pytest.fixture(scope="module")
def peer() -> Iterator[QSD]:
    with QSD() as q:
        yield q


def _qsd_add(peer: QSD, opts: dict[str, Any]) -> dict[str, Any]:
    """blockdev-add on the peer; returns the error desc or the node's ImageInfo."""
    reply = peer.execute("blockdev-add", {"node-name": "t", **opts})
    if "error" in reply:
        return {"error": reply["error"]["desc"]}
    nodes = peer.execute("query-named-block-nodes", {"flat": True})["return"]
    image = next(n["image"] for n in nodes if n["node-name"] == "t")
    peer.execute("blockdev-del", {"node-name": "t"})
    return image


def _ours(driver: str, opts: dict[str, Any], read_only: bool = False) -> dict[str, Any]:
    try:
        if driver == "raw":
            f = open_node("file", opts["file"], read_only=read_only)
            rest = {k: v for k, v in opts.items() if k != "file"}
            node = open_node("raw", rest, {"file": f}, read_only)
        else:
            node = open_node(driver, opts, read_only=read_only)
    except OpenError as e:
        return {"error": e.desc}
    info = node.info()
    node.close()
    return {"virtual-size": info.virtual_size, "actual-size": info.actual_size}


@pytest.mark.parametrize(
    "name,read_only",
    [
        ("missing", False),
        ("missing", True),
        ("dir", False),
        ("dir", True),
        ("devnull", False),
        ("odd", False),
    ],
)
def test_file_open_matches_qemu(name: str, read_only: bool, tmp_path: Path, peer: QSD) -> None:
    paths = {
        "missing": tmp_path / "nope",
        "dir": tmp_path,
        "devnull": Path("/dev/null"),
        "odd": tmp_path / "odd",
    }
    (tmp_path / "odd").write_bytes(b"\1" * 1000)
    opts = {"driver": "file", "filename": str(paths[name]), "read-only": read_only}
    theirs = _qsd_add(peer, opts)
    ours = _ours("file", {"filename": str(paths[name])}, read_only)
    if "error" in theirs:
        assert ours == theirs
    else:
        assert ours["virtual-size"] == theirs["virtual-size"] == 1024
        assert ours["actual-size"] == theirs["actual-size"]


RAW_CASES: list[dict[str, Any]] = [
    {"offset": 2000000},
    {"offset": 1000, "size": 2000000},
    {"size": 1000},
    {"size": 2000000},
    {"offset": 100},
    {"offset": 1048576},
    {"offset": 512, "size": 1048064},
    {"offset": 1, "size": 2000001},
]


@pytest.mark.parametrize("opts", RAW_CASES, ids=[str(c) for c in RAW_CASES])
def test_raw_options_match_qemu(opts: dict[str, Any], tmp_path: Path, peer: QSD) -> None:
    img = tmp_path / "r.img"
    qemu_img("create", "-q", "-f", "raw", img, "1M")
    full = {"driver": "raw", "file": {"driver": "file", "filename": str(img)}, **opts}
    theirs = _qsd_add(peer, full)
    ours = _ours("raw", {"file": {"filename": str(img)}, **opts})
    if "error" in theirs:
        assert ours == theirs
    else:
        assert ours["virtual-size"] == theirs["virtual-size"]


def test_raw_window_reads_writes_and_bounds(tmp_path: Path) -> None:
    img = tmp_path / "w.img"
    img.write_bytes(bytes(range(256)) * 16)
    f = open_node("file", {"filename": str(img)})
    raw = open_node("raw", {"offset": 512, "size": 1024}, {"file": f})
    assert raw.size() == 1024
    assert raw.read(0, 4) == bytes([0, 1, 2, 3])  # file offset 512
    raw.write(1020, b"abcd")
    assert img.read_bytes()[1532:1536] == b"abcd"
    with pytest.raises(IOFailure) as e:
        raw.read(1000, 100)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(IOFailure) as e:
        raw.write(1022, b"xyz")
    assert e.value.errno == errno.ENOSPC


def test_probed_raw_refuses_qcow2_header_in_sector0_like_qemu_io(tmp_path: Path) -> None:
    hdr_src = tmp_path / "h.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", hdr_src, "1M")
    header = hdr_src.read_bytes()[:512]
    (tmp_path / "hdr.bin").write_bytes(header)
    img = tmp_path / "p.img"
    qemu_img("create", "-q", "-f", "raw", img, "1M")
    # The peer: qemu-io without -f probes raw and refuses the same write.
    res = run(
        "sh",
        "-c",
        f"qemu-io -c 'write -P 0 0 512' {img} 2>&1; "
        f"qemu-io -c 'write -s {tmp_path / 'hdr.bin'} 0 512' {img} 2>&1 || true",
    )
    assert "Operation not permitted" in res
    f = open_node("file", {"filename": str(img)})
    raw = open_node("raw", {}, {"file": f})
    raw.probed = True  # type: ignore[attr-defined]  # what Runtime sets from OpenNode.probed
    with pytest.raises(IOFailure) as e:
        raw.write(0, header)
    assert e.value.errno == errno.EPERM
    with pytest.raises(IOFailure):
        raw.write(0, header[:8])  # widened to the sector, still probes as qcow2
    raw.write(0, bytes(512))
    raw.write(512, header)  # outside sector 0: allowed
    assert probe_format(img.read_bytes()) == "raw"
    # Not probed: the same write goes through and the file now probes as qcow2.
    plain = open_node("raw", {}, {"file": f})
    plain.write(0, header)
    assert probe_format(img.read_bytes()) == "qcow2"


def test_file_growth_zeroes_discard_flush(tmp_path: Path) -> None:
    p = tmp_path / "g.img"
    p.write_bytes(b"")
    f = open_node("file", {"filename": str(p), "discard": "unmap"})
    assert f.size() == 0 and f.read(0, 10) == bytes(10)
    f.write(1 << 20, b"tail")
    assert os.path.getsize(p) == (1 << 20) + 4 and f.size() == (1 << 20) + 512
    assert f.read((1 << 20) - 2, 8) == b"\0\0tail\0\0"
    f.write(0, b"\xff" * 8192)
    f.write_zeroes(4096, 4096, may_unmap=True)
    assert p.read_bytes()[:8192] == b"\xff" * 4096 + bytes(4096)
    f.write_zeroes(0, 100)
    assert f.read(0, 101) == bytes(100) + b"\xff"
    f.discard(0, 4096)
    f.flush()
    assert f.block_status(8192, 4096).zero
    assert not f.block_status(1 << 20, 4).zero
    ro = open_node("file", {"filename": str(p)}, read_only=True)
    with pytest.raises(IOFailure) as e:
        ro.write(0, b"x")
    assert e.value.errno == errno.EPERM
    f.close()
    ro.close()


def test_file_metadata_reads_use_pread_and_map_nothing(tmp_path: Path) -> None:
    """An open reads headers and tables with ``read``: plain ``pread``s that map no
    pages (each first touch of a mapping is a page fault, and a backing chain's
    layers are opened only for their headers). Short reads past EOF, also after a
    truncation underneath, read as zeros; the first small ``readinto`` maps the file."""
    p = tmp_path / "m.img"
    p.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    f = open_node("file", {"filename": str(p)}, read_only=True)
    assert f.read(100, 8) == bytes(range(100, 108))
    assert f.read(16384 - 4, 8) == bytes([252, 253, 254, 255]) + bytes(4)
    assert f.read(1 << 20, 16) == bytes(16)
    assert f._map is None
    buf = bytearray(512)
    f.readinto(0, memoryview(buf))  # maps, for the next small read; this one preadv's
    assert buf == (bytes(range(256)) * 2) and f._map is not None
    os.truncate(p, 4096)
    assert f.read(4096 - 2, 4) == bytes([254, 255, 0, 0])
    f.readinto(8192, memoryview(buf))  # inside the old mapping, past the new end
    assert buf == bytes(512)


@pytest.mark.parametrize(
    "opts",
    [
        {"driver": "null-co"},
        {"driver": "null-aio", "size": 1000, "read-zeroes": True},
        {"driver": "null-co", "size": 0},
        {"driver": "null-co", "latency-ns": -5},
    ],
)
def test_null_matches_qemu(opts: dict[str, Any], peer: QSD) -> None:
    theirs = _qsd_add(peer, opts)
    ours = _ours(opts["driver"], opts)
    assert (
        ours == theirs
        if "error" in theirs
        else ours == {"virtual-size": theirs["virtual-size"], "actual-size": theirs["actual-size"]}
    )


def test_null_data_path() -> None:
    n = open_node("null-aio", {"driver": "null-aio", "read-zeroes": True, "latency-ns": 1000})
    n.write(0, b"abc")
    assert n.read(0, 3) == bytes(3) and n.block_status(0, 512).zero
    assert n.info().filename == "null-aio://"


def test_probe_format() -> None:
    assert probe_format(b"") == "raw"
    assert probe_format(b"QFI\xfb\0\0\0\x02" + bytes(504)) == "qcow2"
    assert probe_format(b"QFI\xfb\0\0\0\x03") == "qcow2"
    assert probe_format(b"QFI\xfb\0\0\0\x01" + bytes(504)) == "qcow"  # v1 is qcow (qcow_probe)
    assert probe_format(b"QFI\xfa\0\0\0\x03") == "raw"


def _seek_data(path: Path, offset: int) -> int | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError:
        return None
    finally:
        os.close(fd)


def _unwritten_extent_after_a_hole(path: Path) -> None:
    """1 MiB: a hole from 64 KiB (qemu-img allocates the first block), then 56 KiB of
    unwritten (``write -z``: FALLOC_FL_ZERO_RANGE) blocks from 664 KiB, none of it in
    the page cache."""
    path.unlink(missing_ok=True)
    qemu_img("create", "-q", "-f", "raw", path, "1M")
    run("qemu-io", "-f", "raw", "-c", "write -z 664k 56k", path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_mapped_reads_do_not_read_around(tmp_path: Path) -> None:
    """A small read through the mapping pages in what it reads, as ``pread`` would, not a
    read-around window: on this host's file system, cached pages over unwritten blocks
    make SEEK_DATA (the file's block status, ``qemu-img map``) call them data."""
    import mmap

    path = tmp_path / "f.raw"
    _unwritten_extent_after_a_hole(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as plain:
        plain[640 << 10]  # a plain mapping's fault reads around
    if _seek_data(path, 64 << 10) is None:
        pytest.skip("this file system does not report cached unwritten blocks as data")
    _unwritten_extent_after_a_hole(path)
    assert _seek_data(path, 64 << 10) is None
    node = open_node("file", {"filename": str(path)}, read_only=True)
    out = memoryview(bytearray(4096))
    node.readinto(600 << 10, out)  # maps the file: this read goes through pread
    node.readinto(640 << 10, out)  # through the mapping
    assert node.block_status(64 << 10, 960 << 10).zero and _seek_data(path, 64 << 10) is None
