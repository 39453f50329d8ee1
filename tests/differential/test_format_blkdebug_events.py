"""blkdebug under an image format: which requests each format announces with an event.

QEMU's format drivers raise ``BLKDBG_EVENT(bs->file, ...)`` on their ``file`` child
right before some requests (data reads and writes, compressed and backing reads,
table loads and updates). With a blkdebug node as that child and one
``inject-error`` rule on an event (``errno`` 5, every request after the event),
a guest's reads and writes through an NBD export fail exactly where the format
raised that event. The same image, rule and ``qemu-io`` sequence run on QSD 7.2
and on txgraph must give the same per-command results, for every format and
every event of the table below.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer
from tests.differential.scenarios.format_kit import bochs_image, cloop_image
from tests.differential.scenarios.formats_dmg import dmg_image
from tests.support.crypto_images import PW, copy_template
from tests.support.crypto_images import qemu_io as crypto_qemu_io
from tests.support.guest_io import normalise_qemu_io

pytestmark = pytest.mark.qsd

#: the events a format driver raises on its file child somewhere in QEMU 7.2
EVENTS = [
    "read_aio",
    "write_aio",
    "read_backing_aio",
    "read_compressed",
    "write_compressed",
    "l1_update",
    "l2_load",
    "l2_update",
    "l2_alloc_write",
    "l2_alloc_cow_read",
    "cow_read",
    "cow_write",
    "cluster_alloc",
]
# Not here: flush_to_os/flush_to_disk, which QEMU's generic bdrv_co_flush raises on the
# flushed node's primary child whatever the format; they have their own differential
# test, tests/differential/test_blkdebug_flush_events.py.

#: what the guest does, in one qemu-io run (each command's result line is compared)
GUEST = [
    "write -P 0x55 100k 1k",
    "read -P 0x11 0 64k",
    "read 1M 64k",
    "write -P 0x22 2M 64k",
    "write -P 0x33 0 4k",
    "read -P 0x33 0 4k",
    "flush",
]
READ_ONLY_GUEST = ["read 0 4k", "read 4k 4k", "read 8k 8k"]


def _qemu(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def _fill(fmt: str, path: Path, *extra: str) -> None:
    _qemu("qemu-io", *extra, "-f", fmt, "-c", "write -P 0x11 0 64k", str(path))


def _plain(fmt: str, opts: str = "") -> Callable[[Path], None]:
    def make(d: Path) -> None:
        _qemu(
            "qemu-img",
            "create",
            "-q",
            "-f",
            fmt,
            *(["-o", opts] if opts else []),
            str(d / "i"),
            "4M",
        )
        _fill(fmt, d / "i")

    return make


def _with_backing(fmt: str, base_fmt: str = "raw") -> Callable[[Path], None]:
    def make(d: Path) -> None:
        _qemu("qemu-img", "create", "-q", "-f", base_fmt, str(d / "base"), "4M")
        _qemu("qemu-io", "-f", base_fmt, "-c", "write -P 0x44 1M 64k", str(d / "base"))
        base = ["-b", str(d / "base"), "-F", base_fmt]
        _qemu("qemu-img", "create", "-q", "-f", fmt, *base, str(d / "i"), "4M")
        _fill(fmt, d / "i")

    return make


def _compressed(fmt: str, opts: str = "") -> Callable[[Path], None]:
    def make(d: Path) -> None:
        _qemu("qemu-img", "create", "-q", "-f", "raw", str(d / "src"), "4M")
        _qemu("qemu-io", "-f", "raw", "-c", "write -P 0x11 0 64k", str(d / "src"))
        cmd = ["qemu-img", "convert", "-c", "-O", fmt, *(["-o", opts] if opts else [])]
        subprocess.run([*cmd, str(d / "src"), str(d / "i")], capture_output=True, timeout=60)
        assert (d / "i").exists()

    return make


def _luks(d: Path) -> None:
    """A LUKS image (key secret ``s0``, tests.support.crypto_images) with data."""
    copy_template(d / "i", "luks")
    crypto_qemu_io(d / "i", "luks", "write -P 0x11 0 64k")


def _bytes(data: Callable[[], bytes]) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        (d / "i").write_bytes(data())

    return make


#: case -> (driver, image maker, read-only)
CASES: dict[str, tuple[str, Callable[[Path], None], bool]] = {
    "vdi": ("vdi", _plain("vdi"), False),
    "vpc": ("vpc", _plain("vpc"), False),
    "vhdx": ("vhdx", _plain("vhdx"), False),
    "qed": ("qed", _plain("qed"), False),
    "qed-backing": ("qed", _with_backing("qed"), False),
    "qcow": ("qcow", _plain("qcow"), False),
    "qcow-backing": ("qcow", _with_backing("qcow"), False),
    "qcow-compressed": ("qcow", _compressed("qcow"), False),
    "parallels": ("parallels", _plain("parallels"), False),
    "vmdk": ("vmdk", _plain("vmdk"), False),
    "vmdk-backing": ("vmdk", _with_backing("vmdk", "vmdk"), False),
    "vmdk-stream": ("vmdk", _compressed("vmdk", "subformat=streamOptimized"), True),
    "luks": ("luks", _luks, False),
    "dmg": ("dmg", _bytes(lambda: dmg_image(bzip=False)), True),
    "cloop": ("cloop", _bytes(cloop_image), True),
    "bochs": ("bochs", _bytes(bochs_image), True),
}

#: qcow2 raises data and metadata events (table loads and write-backs, allocations, COW)
QCOW2_CASES: dict[str, tuple[str, Callable[[Path], None], bool]] = {
    "qcow2": ("qcow2", _plain("qcow2"), False),
    "qcow2-backing": ("qcow2", _with_backing("qcow2"), False),
    "qcow2-compressed": ("qcow2", _compressed("qcow2"), False),
}
CASES.update(QCOW2_CASES)


def _ok(peer: Peer, execute: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return peer.execute({"execute": execute, "arguments": arguments})


def guest_run(
    peer: Peer,
    sock: Path,
    name: str,
    node: dict[str, Any],
    guest: list[str],
    read_only: bool,
    cache: str = "writethrough",
) -> list[str]:
    """Add ``node`` (named ``name``), export it, run the ``qemu-io`` commands ``guest``
    on the export (``cache``: qemu-io's ``-t``; writethrough, its default, makes every
    write FUA); each command's normalised result line (or the open error)."""
    reply = _ok(peer, "blockdev-add", {**node, "node-name": name, "read-only": read_only})
    if "error" in reply:
        return [f"open: {reply['error']['desc']}"]
    export = {"type": "nbd", "id": name, "node-name": name, "writable": not read_only}
    reply = _ok(peer, "block-export-add", export)
    assert "error" not in reply, reply
    argv = ["qemu-io", "-f", "raw", "-t", cache, *(["-r"] if read_only else [])]
    for c in guest:
        argv += ["-c", c]
    res = subprocess.run(
        [*argv, f"nbd+unix:///{name}?socket={sock}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return normalise_qemu_io(res.stdout + res.stderr, str(sock.parent))


def _run(peer: Peer, work: Path, sock: Path, case: str, events: list[str]) -> dict[str, list[str]]:
    """One node (a copy of the image under its own blkdebug rule) and export per event,
    on one peer; the guest's ``qemu-io`` results per event."""
    fmt, _make, read_only = CASES[case]
    if fmt == "luks":
        _ok(peer, "object-add", {"qom-type": "secret", "id": "s0", "data": PW})
    _ok(peer, "nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(sock)}}})
    out: dict[str, list[str]] = {}
    for event in events:
        node: dict[str, Any] = {
            "driver": fmt,
            "node-name": event,
            "read-only": read_only,
            "file": {
                "driver": "blkdebug",
                "inject-error": [{"event": event, "errno": 5}],
                "image": {"driver": "file", "filename": str(work / f"i-{event}")},
            },
        }
        if fmt == "luks":
            node["key-secret"] = "s0"
        reply = _ok(peer, "blockdev-add", node)
        if "error" in reply:
            out[event] = [f"open: {reply['error']['desc']}"]
            continue
        export = {"type": "nbd", "id": event, "node-name": event, "writable": not read_only}
        reply = _ok(peer, "block-export-add", export)
        assert "error" not in reply, reply
        argv = ["qemu-io", "-f", "raw", *(["-r"] if read_only else [])]
        for c in READ_ONLY_GUEST if read_only else GUEST:
            argv += ["-c", c]
        res = subprocess.run(
            [*argv, f"nbd+unix:///{event}?socket={sock}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out[event] = normalise_qemu_io(res.stdout + res.stderr, str(work))
    return out


def _image(case: str, tmp: Path) -> bytes:
    """The case's image, made once per directory ``tmp`` (the same bytes for both peers)."""
    made = tmp / f"image-{case}"
    if not made.exists():
        made.mkdir()
        CASES[case][1](made)
    return (made / "i").read_bytes()


def outcomes(factory: Any, case: str, events: list[str], tmp: Path) -> dict[str, list[str]]:
    work = tmp / f"{factory.label}-{case}"
    work.mkdir()
    image = _image(case, tmp)
    for event in events:
        (work / f"i-{event}").write_bytes(image)
    sockdir = Path(tempfile.mkdtemp(prefix="txbd-"))
    peer: Peer = factory(work)
    try:
        return _run(peer, work, sockdir / "s", case, events)
    finally:
        peer.close()
        for sock in sockdir.iterdir():
            sock.unlink()
        sockdir.rmdir()


#: the events QSD 7.2 was seen to raise per case (``python -m`` this module prints the
#: table); by default each case runs those and read_aio/write_aio (for the formats that
#: raise nothing, a check that txgraph raises nothing either), all of EVENTS with
#: TXGRAPH_BLKDEBUG_MATRIX=1 (16 x 13 runs, about a minute)
_QCOW = ["l1_update", "l2_load", "l2_update", "cluster_alloc"]
_QCOW2 = ["l2_load", "l2_update", "cluster_alloc"]
_COW = ["cow_read", "cow_write"]
RAISED: dict[str, list[str]] = {
    "qcow": _QCOW,
    "qcow-backing": [*_QCOW, "read_backing_aio"],
    "qcow-compressed": [*_QCOW, "read_compressed"],
    "qed": ["l2_load", "l2_update"],
    "qed-backing": ["l2_load", "l2_update", "read_backing_aio", "cow_write"],
    "vmdk": ["l2_load", "l2_update", "cow_write"],
    "vmdk-backing": ["l2_load", "l2_update", "read_backing_aio", "cow_read", "cow_write"],
    "vmdk-stream": ["read_compressed"],
    "qcow2": _QCOW2,
    "qcow2-backing": ["read_backing_aio", *_QCOW2, *_COW],
    "qcow2-compressed": ["read_compressed", *_QCOW2, *_COW],
}


def _events(case: str) -> list[str]:
    if os.environ.get("TXGRAPH_BLKDEBUG_MATRIX"):
        return list(EVENTS)
    return [e for e in EVENTS if e in ("read_aio", "write_aio") or e in RAISED.get(case, [])]


@pytest.mark.parametrize("case", sorted(CASES))
def test_events_match_qsd(case: str, tmp_path: Path) -> None:
    events = _events(case)
    qsd = outcomes(QSDPeer, case, events, tmp_path)
    txg = outcomes(EnginePeer, case, events, tmp_path)
    assert txg == qsd
    # the guest saw the rule somewhere for each event the case raises
    assert all(any("failed" in ln for ln in qsd[e]) for e in RAISED.get(case, []))


if __name__ == "__main__":  # the table of what QSD 7.2 does: python -m tests.differential...
    import sys

    with tempfile.TemporaryDirectory() as t:
        for case in sys.argv[1:] or sorted(CASES):
            for event, lines in outcomes(QSDPeer, case, list(EVENTS), Path(t)).items():
                bad = [ln for ln in lines if "failed" in ln or ln.startswith("open")]
                print(f"{case:16} {event:18} {'; '.join(bad) if bad else '-'}")
                sys.stdout.flush()
