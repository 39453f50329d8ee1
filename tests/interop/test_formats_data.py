"""Data plane of the image formats (vdi, vpc, qcow, qed, parallels, vmdk, vhdx, bochs...) vs QEMU 7.2.

Each image is made by the real ``qemu-img``/``qemu-io``. Reads: the node is
exported read-only over NBD by qemu-storage-daemon and by txgraph; what a
client reads through txgraph's export must equal ``qemu-img convert -O raw``
of the image, and ``qemu-img map --output=json`` through both exports must
agree (allocation and zero status as the guest sees them). Writes: the same
``qemu-io`` workload goes through a writable export of each peer on its own
copy; afterwards the two copies hold the same guest data (``qemu-img
compare``), the same allocation (``qemu-img map`` of the image, host
offsets dropped), and ``qemu-img check`` is clean where the format has a
check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer

pytestmark = pytest.mark.qsd


def _run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, f"{argv}: {res.stderr or res.stdout}"
    return res


def _ok(peer: Peer, execute: str, **arguments: Any) -> Any:
    reply = peer.execute({"execute": execute, "arguments": arguments})
    assert "return" in reply, f"{peer.label} {execute}: {reply}"
    return reply["return"]


Maker = Callable[[Path], None]


def _img(
    fmt: str, name: str, size: str, opts: str = "", backing: str = "", bfmt: str = ""
) -> Maker:
    def make(d: Path) -> None:
        argv: list[str] = ["qemu-img", "create", "-q", "-f", fmt]
        if opts:
            argv += ["-o", opts]
        if backing:
            argv += ["-b", backing, "-F", bfmt]
        _run(*argv, d / name, size)

    return make


def _io(fmt: str, name: str, *cmds: str) -> Maker:
    def make(d: Path) -> None:
        argv: list[str] = ["qemu-io", "-f", fmt]
        for c in cmds:
            argv += ["-c", c]
        _run(*argv, d / name)

    return make


def _convert(src: str, dst: str, fmt: str, opts: str = "") -> Maker:
    def make(d: Path) -> None:
        argv = ["qemu-img", "convert", "-O", fmt] + (["-o", opts] if opts else [])
        _run(*argv, d / src, d / dst)

    return make


def _bochs(name: str) -> Maker:
    def make(d: Path) -> None:
        from tests.differential.scenarios.format_kit import bochs_image

        (d / name).write_bytes(bochs_image())

    return make


def _dmg(name: str, xml: bool) -> Maker:
    def make(d: Path) -> None:
        from tests.differential.scenarios.formats_dmg import dmg_image

        (d / name).write_bytes(dmg_image(xml=xml, bzip=False))

    return make


def _cloop(name: str) -> Maker:
    def make(d: Path) -> None:
        from tests.differential.scenarios.format_kit import cloop_image

        (d / name).write_bytes(cloop_image(n_blocks=9))

    return make


_DATA = (
    "write -P 0x11 0 64k",
    "write -P 0x22 100k 300k",
    "write -P 0x33 1M 4k",
    "write -z 1536k 64k",
    "write -P 0x44 3M 512",
)

#: name -> (format, image, makers); images are 4 MiB unless said otherwise
CASES: dict[str, tuple[str, str, list[Maker]]] = {
    "vdi": ("vdi", "a.vdi", [_img("vdi", "a.vdi", "4M"), _io("vdi", "a.vdi", *_DATA)]),
    "vdi_static": (
        "vdi",
        "a.vdi",
        [_img("vdi", "a.vdi", "4M", "static=on"), _io("vdi", "a.vdi", *_DATA)],
    ),
    "vpc": ("vpc", "a.vpc", [_img("vpc", "a.vpc", "4M"), _io("vpc", "a.vpc", *_DATA)]),
    "vpc_fixed": (
        "vpc",
        "a.vpc",
        [_img("vpc", "a.vpc", "4M", "subformat=fixed"), _io("vpc", "a.vpc", *_DATA)],
    ),
    "qcow": ("qcow", "a.qcow", [_img("qcow", "a.qcow", "4M"), _io("qcow", "a.qcow", *_DATA)]),
    "qcow_backing": (
        "qcow",
        "top.qcow",
        [
            _img("qcow2", "base.qcow2", "4M"),
            _io("qcow2", "base.qcow2", "write -P 0x55 0 4M"),
            _img("qcow", "top.qcow", "4M", backing="base.qcow2", bfmt="qcow2"),
            _io("qcow", "top.qcow", "write -P 0x66 64k 8k", "write -P 0x67 2M 512"),
        ],
    ),
    "qed": ("qed", "a.qed", [_img("qed", "a.qed", "4M"), _io("qed", "a.qed", *_DATA)]),
    "qed_backing": (
        "qed",
        "top.qed",
        [
            _img("vdi", "base.vdi", "3M"),
            _io("vdi", "base.vdi", "write -P 0x55 0 3M"),
            _img("qed", "top.qed", "4M", "cluster_size=4096", backing="base.vdi", bfmt="vdi"),
            _io("qed", "top.qed", "write -P 0x66 6k 8k", "write -z 1M 8k"),
        ],
    ),
    "parallels": (
        "parallels",
        "a.parallels",
        [_img("parallels", "a.parallels", "4M"), _io("parallels", "a.parallels", *_DATA)],
    ),
    "vmdk_sparse": (
        "vmdk",
        "a.vmdk",
        [_img("vmdk", "a.vmdk", "4M"), _io("vmdk", "a.vmdk", *_DATA)],
    ),
    "vmdk_flat": (
        "vmdk",
        "a.vmdk",
        [_img("vmdk", "a.vmdk", "4M", "subformat=monolithicFlat"), _io("vmdk", "a.vmdk", *_DATA)],
    ),
    "vmdk_split": (
        "vmdk",
        "a.vmdk",
        [
            _img("vmdk", "a.vmdk", "4M", "subformat=twoGbMaxExtentSparse"),
            _io("vmdk", "a.vmdk", *_DATA),
        ],
    ),
    "vmdk_stream": (
        "vmdk",
        "s.vmdk",
        [
            _img("vmdk", "a.vmdk", "4M"),
            _io("vmdk", "a.vmdk", *_DATA),
            _convert("a.vmdk", "s.vmdk", "vmdk", "subformat=streamOptimized"),
        ],
    ),
    "vhdx": ("vhdx", "a.vhdx", [_img("vhdx", "a.vhdx", "4M"), _io("vhdx", "a.vhdx", *_DATA)]),
    "vhdx_fixed": (
        "vhdx",
        "a.vhdx",
        [_img("vhdx", "a.vhdx", "4M", "subformat=fixed"), _io("vhdx", "a.vhdx", *_DATA)],
    ),
    "vhdx_1m_blocks": (
        "vhdx",
        "a.vhdx",
        [
            _img("vhdx", "a.vhdx", "4M", "block_size=1M,block_state_zero=off"),
            _io("vhdx", "a.vhdx", *_DATA),
        ],
    ),
    "bochs": ("bochs", "b.bochs", [_bochs("b.bochs")]),
    "cloop": ("cloop", "c.cloop", [_cloop("c.cloop")]),
    "dmg": ("dmg", "d.dmg", [_dmg("d.dmg", False)]),
    "dmg_xml": ("dmg", "d.dmg", [_dmg("d.dmg", True)]),
    "vmdk_backing": (
        "vmdk",
        "top.vmdk",
        [
            _img("vmdk", "base.vmdk", "4M"),
            _io("vmdk", "base.vmdk", "write -P 0x55 0 4M"),
            _img("vmdk", "top.vmdk", "4M", backing="base.vmdk", bfmt="vmdk"),
            _io("vmdk", "top.vmdk", "write -P 0x66 64k 8k"),
        ],
    ),
}

#: formats whose images ``qemu-img check`` can check
_CHECKABLE = {"vdi", "qed", "parallels", "vmdk", "vhdx"}
#: the write workload (through NBD; qemu-io as the guest)
_WRITES = (
    "write -P 0x71 0 4k",
    "write -P 0x72 70k 9k",
    "write -P 0x73 1000k 200k",
    "write -z 2M 128k",
    "write -P 0x74 2047k 2k",
    "write -P 0x75 4190208 4096",
    "flush",
)
#: formats QEMU 7.2 writes and txgraph implements writes for
WRITE_CASES = [
    "vdi",
    "vdi_static",
    "vpc",
    "vpc_fixed",
    "qcow",
    "qcow_backing",
    "qed",
    "qed_backing",
    "parallels",
    "vmdk_sparse",
    "vmdk_flat",
    "vmdk_split",
    "vmdk_backing",
    "vhdx",
    "vhdx_fixed",
    "vhdx_1m_blocks",
]


def _export(peer: Peer, fmt: str, image: Path, writable: bool, sockdir: Path) -> str:
    _ok(
        peer,
        "blockdev-add",
        driver=fmt,
        **{"node-name": "img", "read-only": not writable},
        file={"driver": "file", "filename": str(image)},
    )
    sock = sockdir / f"{peer.label}.sock"
    _ok(peer, "nbd-server-start", addr={"type": "unix", "data": {"path": str(sock)}})
    _ok(
        peer,
        "block-export-add",
        type="nbd",
        id="e",
        name="e",
        **{"node-name": "img"},
        writable=writable,
    )
    return f"nbd+unix:///e?socket={sock}"


def _map_uri(uri: str) -> list[dict[str, Any]]:
    res = _run("qemu-img", "map", "--output=json", "-f", "raw", uri)
    return [{k: v for k, v in e.items() if k != "offset"} for e in json.loads(res.stdout)]


def _setup(d: Path, makers: list[Maker]) -> None:
    d.mkdir()
    for make in makers:
        make(d)


@pytest.fixture
def sockdir() -> Any:
    short = Path(tempfile.mkdtemp(prefix="txg-fmt-"))  # unix socket paths are short
    yield short
    shutil.rmtree(short, ignore_errors=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reads_match_qemu_img_convert(case: str, tmp_path: Path, sockdir: Path) -> None:
    fmt, image, makers = CASES[case]
    maps: dict[str, Any] = {}
    for factory in (QSDPeer, EnginePeer):
        work = tmp_path / factory.label
        _setup(work, makers)
        expected = work / "expected.raw"
        _run("qemu-img", "convert", "-f", fmt, "-O", "raw", work / image, expected)
        peer: Peer = factory(work)
        try:
            uri = _export(peer, fmt, work / image, False, sockdir)
            got = work / "got.raw"
            _run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, got)
            assert got.read_bytes() == expected.read_bytes(), f"{factory.label}: data differs"
            maps[factory.label] = _map_uri(uri)
        finally:
            peer.close()
    assert maps["txgraph"] == maps["qsd"]


@pytest.mark.parametrize("case", WRITE_CASES)
def test_writes_match_qsd_and_check_clean(case: str, tmp_path: Path, sockdir: Path) -> None:
    fmt, image, makers = CASES[case]
    outputs: dict[str, Any] = {}
    for factory in (QSDPeer, EnginePeer):
        work = tmp_path / factory.label
        _setup(work, makers)
        peer: Peer = factory(work)
        try:
            uri = _export(peer, fmt, work / image, True, sockdir)
            argv = ["qemu-io", "-f", "raw"]
            for c in _WRITES:
                argv += ["-c", c]
            res = _run(*argv, uri)
            # timing lines differ run to run (and change shape past one second)
            outputs[factory.label] = [ln for ln in res.stdout.splitlines() if "ops/sec" not in ln]
        finally:
            peer.close()
    assert outputs["txgraph"] == outputs["qsd"]
    left, right = tmp_path / "qsd" / image, tmp_path / "txgraph" / image
    _run("qemu-img", "compare", "-f", fmt, "-F", fmt, left, right)
    if fmt in _CHECKABLE:
        res = _run("qemu-img", "check", "-f", fmt, right, check=False)
        assert res.returncode == 0, res.stdout + res.stderr

    def img_map(p: Path) -> list[dict[str, Any]]:
        out = _run("qemu-img", "map", "--output=json", "-f", fmt, p).stdout
        return [{k: v for k, v in e.items() if k != "offset"} for e in json.loads(out)]

    assert img_map(right) == img_map(left)
