"""The qcow2 header rewrite for a new backing file, byte for byte against QEMU 7.2.

Every case makes one image with ``qemu-img create`` (plus guest data written
by ``qemu-io``), copies it twice, changes the backing file of one copy with
``qemu-img rebase -u`` (QEMU's ``bdrv_change_backing_file`` ->
``qcow2_change_backing_file`` -> ``qcow2_update_header``) and of the other
with txgraph's live qcow2 node, then requires: the two files are identical
(the first cluster, and everything else too), ``qemu-img check`` is clean,
``qemu-img info`` shows the new backing, and the guest data read through
txgraph before and after is the same. Refusals must match QEMU's errno and
leave the file untouched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from interop_kit import open_node, poke, qemu_img

from txgraph.errors import IOFailure
from txgraph.io.driver import DriverNode
from txgraph.io.qcow2.header import read_qcow2_header
from txgraph.io.qcow2.update_header import build_header_cluster, c_string

pytestmark = pytest.mark.timeout(120)


def _long_name(total: int) -> str:
    """A relative path of exactly ``total`` bytes, every component a legal file name."""
    parts: list[str] = []
    left = total
    while left > 201:
        parts.append("d" * 200)
        left -= 201
    parts.append("b" * left)
    return "/".join(parts)


@dataclass
class Case:
    id: str
    opts: str
    backing: str | None = "base.qcow2"
    fmt: str | None = "qcow2"
    #: a backing file the image already has (created with it)
    initial: tuple[str, str] | None = None
    data_file: bool = False
    #: the external data file's name (as the file system sees it)
    data_name: str = "data.raw"
    #: a header poke done after creation (path -> None)
    mutate: Callable[[Path], None] | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _unknown_ext(path: Path) -> None:
    """A 4 KiB-cluster v3 image has no feature table: put an unknown extension at 112."""
    poke(path, 112, "", b"\x12\x34\x56\x78\x00\x00\x00\x05hello\x00\x00\x00")


def _two_unknown_exts(path: Path) -> None:
    """Two unknown extensions: QEMU writes them back in reverse order."""
    poke(
        path,
        112,
        "",
        b"\x12\x34\x56\x78\x00\x00\x00\x05hello\x00\x00\x00"
        b"\x87\x65\x43\x21\x00\x00\x00\x03abc\x00\x00\x00\x00\x00",
    )


def _odd_header(path: Path) -> None:
    """header_length 120: bytes 112..119 are unknown fields, padding 105..111 not zero."""
    poke(path, 100, ">I", 120)
    poke(path, 105, "", b"\x01\x02\x03\x04\x05\x06\x07")
    poke(path, 112, "", b"UNKNOWN!")


def _short_header(path: Path) -> None:
    """An image written before the compression type existed: header_length 104."""
    poke(path, 100, ">I", 104)


def _stale_bitmaps(path: Path) -> None:
    """A bitmaps extension left by a program without bitmap support (autoclear bit off)."""
    qemu_img("bitmap", "--add", path, "b0")
    poke(path, 88, ">Q", 0)


def _unaligned_size(path: Path) -> None:
    """A header size that is not a multiple of 512 (QEMU keeps whole sectors)."""
    poke(path, 24, ">Q", (1 << 20) - 100)


CASES = [
    Case("plain", "cluster_size=65536"),
    Case("c4k", "cluster_size=4096"),
    Case("c512", "cluster_size=512"),
    Case("v2", "compat=0.10"),
    Case("v2-c512", "compat=0.10,cluster_size=512"),
    Case("extended-l2", "extended_l2=on"),
    Case("data-file", "data_file=data.raw", data_file=True),
    # the name's bytes are kept as they are, even when they are not UTF-8
    Case(
        "data-file-not-utf8",
        "data_file=" + os.fsdecode(b"d\xff.raw"),
        data_file=True,
        data_name=os.fsdecode(b"d\xff.raw"),
    ),
    Case("lazy-refcounts", "lazy_refcounts=on"),
    Case("zstd", "compression_type=zstd"),
    Case("refcount-bits-1", "refcount_bits=1"),
    Case("no-format", "cluster_size=65536", fmt=None),
    Case("raw-format", "cluster_size=65536", backing="base.raw", fmt="raw"),
    Case("replace", "cluster_size=65536", backing="other.qcow2", initial=("base.qcow2", "qcow2")),
    Case("remove", "cluster_size=65536", backing=None, fmt=None, initial=("base.qcow2", "qcow2")),
    Case("remove-v2", "compat=0.10", backing=None, fmt=None, initial=("base.qcow2", "qcow2")),
    Case("long-name-1023", "cluster_size=65536", backing=_long_name(1023)),
    Case("long-name-c4k", "cluster_size=4096", backing=_long_name(1023)),
    # v3, 512-byte clusters: 112 header + 16 format ext + 8 end marker leave 376 bytes.
    Case("exact-fit-c512", "cluster_size=512", backing=_long_name(376)),
    Case("unknown-ext", "cluster_size=4096", mutate=_unknown_ext),
    Case("two-unknown-exts", "cluster_size=4096", mutate=_two_unknown_exts),
    Case("odd-header", "cluster_size=4096", mutate=_odd_header),
    Case("short-header", "cluster_size=65536", mutate=_short_header),
    Case("stale-bitmaps", "cluster_size=65536", mutate=_stale_bitmaps),
    Case("unaligned-size", "cluster_size=65536", mutate=_unaligned_size),
]


def _make(dirpath: Path, case: Case) -> Path:
    """The case's image (and its data file) in ``dirpath``, with guest data written by QEMU."""
    dirpath.mkdir(parents=True, exist_ok=True)
    _backing_files(dirpath)
    img = dirpath / "img.qcow2"
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", case.opts]
    if case.initial is not None:
        argv += ["-b", case.initial[0], "-F", case.initial[1], "-u"]
    # cwd: a relative data_file= is created relative to it (and recorded as given)
    res = subprocess.run(
        [*argv, "img.qcow2", "1M"], cwd=dirpath, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    if case.mutate is not None:
        case.mutate(img)
    if case.id != "unaligned-size":
        _io(img, "write -P 0x5a 0 64k", "write -P 0xa5 300k 4k", "write -z 512k 64k")
    return img


def _backing_files(dirpath: Path) -> None:
    """Real files for every backing name used, so that check/info/convert can open them."""
    for name, fmt in (("base.qcow2", "qcow2"), ("other.qcow2", "qcow2"), ("base.raw", "raw")):
        qemu_img("create", "-q", "-f", fmt, dirpath / name, "1M")
    for n in (1023, 376):
        p = dirpath / _long_name(n)
        p.parent.mkdir(parents=True, exist_ok=True)
        qemu_img("create", "-q", "-f", "qcow2", p, "1M")


def _open(
    img: Path, data_file: bool, read_only: bool = False, data_name: str = "data.raw"
) -> tuple[DriverNode, list[DriverNode]]:
    f = open_node("file", {"filename": str(img)}, read_only=read_only)
    children = {"file": f}
    if data_file:
        children["data-file"] = open_node(
            "file", {"filename": str(img.parent / data_name)}, read_only=read_only
        )
    return open_node("qcow2", {}, children, read_only=read_only), list(children.values())


def _close(node: DriverNode, children: list[DriverNode]) -> None:
    node.close()
    for c in children:
        c.close()


def _qemu(img: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """A QEMU tool run from the image's directory: QEMU 7.2 opens a relative data-file name
    from the header relative to the working directory, not to the image."""
    return subprocess.run(
        [*argv, img.name], cwd=img.parent, capture_output=True, text=True, timeout=60
    )


def _rebase(img: Path, backing: str | None, fmt: str | None) -> subprocess.CompletedProcess[str]:
    argv = ["qemu-img", "rebase", "-u", "-b", backing or ""]
    if fmt is not None:
        argv += ["-F", fmt]
    return _qemu(img, *argv)


def _io(img: Path, *cmds: str) -> str:
    res = _qemu(img, "qemu-io", "-f", "qcow2", *[a for c in cmds for a in ("-c", c)])
    assert res.returncode == 0, res.stderr
    return res.stdout


def _guest(node: DriverNode) -> str:
    return hashlib.sha256(node.read(0, node.size())).hexdigest()


CLEAN = {"check-errors": 0, "leaks": 0, "corruptions": 0}


def _check(img: Path) -> dict[str, object]:
    # exit status 3 (leaks) still prints the report
    res = _qemu(img, "qemu-img", "check", "--output=json")
    assert res.returncode in (0, 3), res.stderr
    out = json.loads(res.stdout)
    # qemu-img leaves out the counters that are zero
    return {k: out.get(k, 0) for k in ("check-errors", "leaks", "corruptions")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_header_rewrite_matches_qemu(tmp_path: Path, case: Case) -> None:
    src = _make(tmp_path / "src", case)
    qdir, tdir = tmp_path / "qemu", tmp_path / "txgraph"
    shutil.copytree(src.parent, qdir)
    shutil.copytree(src.parent, tdir)
    # QEMU's rebase without -F probes the format (and then writes one): give txgraph's the
    # format QEMU recorded, the no-format case is the generic layer's (test below).
    fmt = None if case.backing is None else case.fmt or "qcow2"
    res = _rebase(qdir / "img.qcow2", case.backing, fmt)
    assert res.returncode == 0, res.stderr
    node, kids = _open(tdir / "img.qcow2", case.data_file, data_name=case.data_name)
    try:
        before = _guest(node)
        node.change_backing_file(case.backing, fmt)
        info = node.info()
        assert (info.backing_file, info.backing_format) == (case.backing, fmt)
        assert _guest(node) == before
    finally:
        _close(node, kids)
    want, got = (qdir / "img.qcow2").read_bytes(), (tdir / "img.qcow2").read_bytes()
    cs = read_qcow2_header(lambda o, n: want[o : o + n].ljust(n, b"\0"), len(want)).cluster_size
    assert got[:cs] == want[:cs]
    assert got == want
    report = _check(tdir / "img.qcow2")
    assert report == _check(qdir / "img.qcow2")
    # The stale bitmap clusters were leaked by the program that cleared the bit, not here.
    assert report == (CLEAN if case.mutate is not _stale_bitmaps else {**CLEAN, "leaks": 2})
    res = _qemu(tdir / "img.qcow2", "qemu-img", "info", "--output=json")
    assert res.returncode == 0, res.stderr
    qinfo = json.loads(res.stdout)
    assert qinfo.get("backing-filename") == case.backing
    if case.backing is not None:
        assert qinfo.get("backing-filename-format") == (case.fmt or "qcow2")
    # The image reopens in txgraph with the header it wrote, and the data is unchanged.
    node, kids = _open(tdir / "img.qcow2", case.data_file, read_only=True, data_name=case.data_name)
    try:
        assert node.info().backing_file == case.backing
        assert _guest(node) == before
    finally:
        _close(node, kids)


def _attempt_qemu(img: Path, backing: str, fmt: str | None) -> str:
    res = _rebase(img, backing, fmt)
    assert res.returncode != 0
    return res.stderr


@pytest.mark.parametrize(
    ("opts", "name", "fmt", "err", "qemu_text"),
    [
        (
            "cluster_size=512",
            _long_name(377),
            "qcow2",
            errno.ENOSPC,
            "No space left in the file header",
        ),
        (
            "cluster_size=512",
            _long_name(392),
            "raw",
            errno.ENOSPC,
            "No space left in the file header",
        ),
        (
            "compat=0.10,cluster_size=512",
            _long_name(441),
            "qcow2",
            errno.ENOSPC,
            "No space left in the file header",
        ),
        ("cluster_size=65536", _long_name(1024), "qcow2", errno.EINVAL, "Invalid argument"),
        (
            "data_file=data.raw,data_file_raw=on",
            "base.qcow2",
            "qcow2",
            errno.EINVAL,
            "Invalid argument",
        ),
    ],
    ids=[
        "c512-fmt-too-long",
        "c512-raw-too-long",
        "v2-c512-too-long",
        "1024-bytes",
        "data-file-raw",
    ],
)
def test_refusals_match_qemu_and_change_nothing(
    tmp_path: Path, opts: str, name: str, fmt: str, err: int, qemu_text: str
) -> None:
    img = tmp_path / "img.qcow2"
    res = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "img.qcow2", "1M"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    _io(img, "write -P 0x11 0 4k")
    orig = img.read_bytes()
    assert qemu_text in _attempt_qemu(img, name, fmt)
    assert img.read_bytes() == orig
    node, kids = _open(img, "data_file" in opts)
    try:
        header_before = node.header.pack()  # type: ignore[attr-defined]
        with pytest.raises(IOFailure) as exc:
            node.change_backing_file(name, fmt)
        assert exc.value.errno == err
        assert str(exc.value) == qemu_text.replace(
            "No space left in the file header", "No space left on device"
        )
        assert node.header.pack() == header_before  # type: ignore[attr-defined]
        assert node.info().backing_file is None and node.info().backing_format is None
    finally:
        _close(node, kids)
    assert img.read_bytes() == orig


def test_generic_checks_and_drivers_without_support(tmp_path: Path) -> None:
    """``bdrv_change_backing_file``: format without file, ``require``, ENOTSUP, EPERM, ENOMEDIUM."""
    img = tmp_path / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    orig = img.read_bytes()
    # qemu-img rebase requires a format when it cannot probe one (the file does not exist).
    assert "backing format must be specified" in _attempt_qemu(img, "missing.qcow2", None)
    assert img.read_bytes() == orig
    node, kids = _open(img, False)
    try:
        for args, kw in (((None, "qcow2"), {}), (("missing.qcow2", None), {"require": True})):
            with pytest.raises(IOFailure) as exc:
                node.change_backing_file(*args, **kw)
            assert exc.value.errno == errno.EINVAL and str(exc.value) == "Invalid argument"
        assert img.read_bytes() == orig
        # Without require, no format is fine: no backing format extension.
        node.change_backing_file("missing.qcow2", None)
        assert node.info().backing_format is None
        raw = open_node("raw", {}, {"file": kids[0]})
        for n in (raw, kids[0]):
            with pytest.raises(IOFailure) as exc:
                n.change_backing_file("x", "raw")
            assert exc.value.errno == errno.ENOTSUP and str(exc.value) == "Operation not supported"
        node.signal_corruption("test: the driver is dropped")  # type: ignore[attr-defined]
        with pytest.raises(IOFailure) as exc:
            node.change_backing_file("y.qcow2", "qcow2")
        assert exc.value.errno == errno.ENOMEDIUM
    finally:
        _close(node, kids)
    h = read_qcow2_header(
        lambda o, n: img.read_bytes()[o : o + n].ljust(n, b"\0"), img.stat().st_size
    )
    assert h.backing_file == "missing.qcow2" and h.backing_format is None
    assert h.corrupt


def test_read_only_node_is_refused(tmp_path: Path) -> None:
    img = tmp_path / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    orig = img.read_bytes()
    node, kids = _open(img, False, read_only=True)
    try:
        with pytest.raises(IOFailure) as exc:
            node.change_backing_file("base.qcow2", "qcow2")
        assert exc.value.errno == errno.EPERM
        assert node.info().backing_file is None
    finally:
        _close(node, kids)
    assert img.read_bytes() == orig


def test_format_is_cut_like_qemus_buffer(tmp_path: Path) -> None:
    """``bs->backing_format`` holds 15 bytes; qemu-img validates names, QMP callers do not."""
    img = tmp_path / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    node, kids = _open(img, False)
    try:
        node.change_backing_file("b", "0123456789abcdefXYZ")
        assert node.info().backing_format == "0123456789abcde"
        node.change_backing_file("", "")  # empty strings are not NULL: offset set, size 0
        h = node.header  # type: ignore[attr-defined]
        assert h.backing_file == "" and h.backing_format == ""
        assert h.backing_file_offset > 0 and h.backing_file_size == 0
    finally:
        _close(node, kids)
    data = img.read_bytes()
    h2 = read_qcow2_header(lambda o, n: data[o : o + n].ljust(n, b"\0"), len(data))
    assert (h2.backing_file, h2.backing_format) == ("", "")
    assert c_string("a\0b") == b"a"
    assert c_string(os.fsdecode(b"x\xff")) == b"x\xff"
    assert c_string("\ud800") == b"\xed\xa0\x80"


def test_bitmaps_extension_placement(tmp_path: Path) -> None:
    """Consistent bitmaps: txgraph does not open such images read-write, but the rebuild
    itself places the extension as QEMU does. QEMU's rebase stores the bitmaps again (a
    new directory offset), so the expected extension is the one QEMU wrote."""
    img = tmp_path / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    qemu_img("bitmap", "--add", img, "b0")
    orig = img.read_bytes()
    assert _rebase(img, "base.qcow2", "qcow2").returncode == 0
    new = img.read_bytes()

    def reader(buf: bytes) -> Callable[[int, int], bytes]:
        return lambda o, n: buf[o : o + n].ljust(n, b"\0")

    before = read_qcow2_header(reader(orig), len(orig))
    after = read_qcow2_header(reader(new), len(new))
    assert before.bitmaps_ext is not None and after.bitmaps_ext is not None
    before.bitmaps_ext = after.bitmaps_ext
    cluster, hdr = build_header_cluster(before, b"base.qcow2", b"qcow2")
    assert cluster == new[: before.cluster_size]
    assert hdr.backing_file == "base.qcow2" and hdr.bitmaps_ext == after.bitmaps_ext


def test_header_fields_follow_live_metadata(tmp_path: Path) -> None:
    """Writes before the change: lazy refcounts set the dirty bit, which the rebuilt header
    keeps; the close then marks the image clean and QEMU finds nothing wrong."""
    img = tmp_path / "img.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on,cluster_size=4096", img, "4M")
    qemu_img("create", "-q", "-f", "qcow2", tmp_path / "other.qcow2", "4M")
    node, kids = _open(img, False)
    try:
        node.write(0, b"\x77" * 200_000)
        node.flush()
        node.change_backing_file("base.qcow2", "qcow2")
        data = img.read_bytes()
        (incompat,) = struct.unpack(">Q", data[72:80])
        assert incompat & 1  # still dirty: refcounts are only fixed up at the clean close
        node.write(1 << 20, b"\x66" * 8192)
        node.change_backing_file("other.qcow2", "qcow2")
    finally:
        _close(node, kids)
    assert _check(img) == CLEAN
    info = json.loads(qemu_img("info", "--output=json", "-U", img))
    assert info["backing-filename"] == "other.qcow2" and not info.get("dirty-flag")
    out = _io(img, "read -P 0x77 0 200000", "read -P 0x66 1M 8k")
    assert "Pattern verification failed" not in out
