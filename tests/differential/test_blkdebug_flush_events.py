"""blkdebug's generic flush events: ``flush_to_os`` and ``flush_to_disk``.

QEMU's ``bdrv_co_flush`` raises them on the flushed node's primary child (a
blkdebug node under a format or a filter): ``flush_to_os`` on every flush of a
writable node, ``flush_to_disk`` only when the node was written since its last
successful flush and has no ``cache.no-flush``; blkdebug's own flush callback
(the flush-to-disk step) checks its ``flush`` rules only on that same
condition. Each case below is one graph (a parent over a blkdebug node over a
file, or an export right on the blkdebug node), one set of rules and one
guest (requests one at a time through an NBD export, flushes and writes with
and without FUA, a writethrough guest's write being a FUA write and so a flush
inside it); the per-request results on QSD 7.2 and on txgraph must be the
same, and the image files must end equal.
"""

from __future__ import annotations

import errno
import hashlib
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer
from txgraph.io.nbd.client import NbdClient, NbdError

pytestmark = pytest.mark.qsd

_EIO = 5

#: rule sets: name -> blkdebug options
RULES: dict[str, dict[str, Any]] = {
    # armed by the parent's flush_to_os, fails the blkdebug node's own flush
    "os-flush": {"inject-error": [{"event": "flush_to_os", "errno": _EIO, "iotype": "flush"}]},
    # armed by flush_to_disk, fails every later read and write
    "disk-rw": {"inject-error": [{"event": "flush_to_disk", "errno": _EIO}]},
    # armed by flush_to_disk, fails the same flush once
    "disk-flush-once": {
        "inject-error": [{"event": "flush_to_disk", "errno": _EIO, "iotype": "flush", "once": True}]
    },
    # the second flush_to_os moves to state 3, where reads fail
    "os-states": {
        "set-state": [
            {"event": "flush_to_os", "state": 1, "new_state": 2},
            {"event": "flush_to_os", "state": 2, "new_state": 3},
        ],
        "inject-error": [{"event": "read_aio", "state": 3, "errno": _EIO, "iotype": "read"}],
    },
}

#: graphs: name -> (node maker over the blkdebug options, cache.no-flush)
_FILE = "i"


def _over(driver: str) -> Any:
    def make(dbg: dict[str, Any], image: str, no_flush: bool) -> dict[str, Any]:
        inner = {"driver": "blkdebug", **dbg, "image": {"driver": "file", "filename": image}}
        node: dict[str, Any] = {"driver": driver, "file": inner}
        if no_flush:
            node["cache"] = {"no-flush": True}
        return node

    return make


def _direct(dbg: dict[str, Any], image: str, no_flush: bool) -> dict[str, Any]:
    node: dict[str, Any] = {
        "driver": "blkdebug",
        **dbg,
        "image": {"driver": "file", "filename": image},
    }
    if no_flush:
        node["cache"] = {"no-flush": True}
    return node


_FORMATS = ("qcow", "qed", "vdi", "vpc", "vhdx", "vmdk", "parallels")


def _nested(dbg: dict[str, Any], image: str, no_flush: bool) -> dict[str, Any]:
    """raw over a rule-less blkdebug over the blkdebug with the rules: the inner node
    gets the outer one's events, and the outer flush flushes it twice."""
    inner = {"driver": "blkdebug", **dbg, "image": {"driver": "file", "filename": image}}
    return {"driver": "raw", "file": {"driver": "blkdebug", "image": inner}}


GRAPHS: dict[str, tuple[Any, str, bool]] = {
    "raw": (_over("raw"), "raw", False),
    "raw-no-flush": (_over("raw"), "raw", True),
    "qcow2": (_over("qcow2"), "qcow2", False),
    "copy-on-read": (_over("copy-on-read"), "raw", False),
    "direct": (_direct, "raw", False),
    "nested": (_nested, "raw", False),
    **{fmt: (_over(fmt), fmt, False) for fmt in _FORMATS},
    # 512-byte clusters: a refcount block covers 128 KiB of the file, so a guest writing
    # 128 KiB makes qcow2 allocate a second one (alloc_refcount_block)
    "qcow2-512": (_over("qcow2"), "qcow2:cluster_size=512", False),
}

#: graphs whose image bytes are compared too; the other formats put random GUIDs or CIDs
#: and timestamps into their headers on a write, so only the guest's results are compared
EXACT_IMAGE = frozenset(
    {"raw", "raw-no-flush", "qcow2", "qcow2-512", "copy-on-read", "direct", "nested"}
)

#: guests: name -> requests (``("w", offset, byte, fua)``, ``("r", offset)``, ``("f",)``;
#: 4 KiB each), sent one at a time by an NBD client; a FUA write is what a
#: writethrough guest sends (the server's flush inside the write request)
_WB = [("f",), ("r", 0), ("w", 0, 0x5A, False), ("f",), ("r", 0), ("w", 65536, 0x6B, False)]
GUESTS: dict[str, list[tuple[Any, ...]]] = {
    "writeback": [*_WB, ("f",), ("f",), ("r", 65536), ("f",)],
    "writethrough": [("w", 0, 0x11, True), ("r", 0), ("w", 8192, 0x22, True), ("r", 8192)],
    "mixed": [("w", 0, 0x33, False), ("w", 4096, 0x44, True), ("f",), ("r", 0), ("f",)],
    # a READ with FUA: QEMU's server flushes the export first (nbd_do_cmd_read)
    "read-fua": [
        ("w", 0, 0x55, False),
        ("rf", 0),
        ("rf", 0),
        ("w", 4096, 0x66, False),
        ("rf", 4096),
    ],
}
#: for qcow2-512 only: 124 KiB written (4 L2 tables and clusters up to the last one the
#: first refcount block describes), a flush, then the write whose clusters need a new
#: refcount block, flushed inside the write by QEMU
_FILL = [("w", i * 4096, 0x40 + i, False) for i in range(31)]
REFBLOCK_GUESTS = {
    "refblock": [*_FILL, ("f",), ("w", 31 * 4096, 0x7E, False), ("r", 31 * 4096), ("f",)],
}


def guest(addr: dict[str, Any], export: str, requests: list[tuple[Any, ...]]) -> list[str]:
    """Each request's outcome: ``ok`` (with the bytes' digest for a read) or the errno."""
    out: list[str] = []
    with NbdClient(addr, export) as client:
        for req in requests:
            try:
                if req[0] == "w":
                    client.write(req[1], bytes([req[2]]) * 4096, fua=req[3])
                    out.append("ok")
                elif req[0] in ("r", "rf"):
                    data = client.read(req[1], 4096, fua=req[0] == "rf")
                    out.append("ok " + hashlib.sha256(data).hexdigest()[:12])
                else:
                    client.flush()
                    out.append("ok")
            except NbdError as e:
                # a FUA read's error text tells its flush from its read ("flush failed");
                # a lost connection's text is the client's own and varies with timing
                said = req[0] == "rf" and e.errno != errno.ESHUTDOWN
                out.append(f"errno {e.errno}" + (f" {e}" if said else ""))
    return out


#: every graph under every rule set with every guest: the formats' writers flush their
#: file where QEMU's do inside a write (tests/unit/io/test_format_write_flushes.py)
CASES = [
    *((g, r, q) for g in GRAPHS for r in RULES for q in GUESTS),
    *(("qcow2-512", r, q) for r in RULES for q in REFBLOCK_GUESTS),
]


def _make_image(fmt: str, path: Path) -> None:
    """A fresh 1 MiB image, made once per format and directory and copied, so both peers
    start from the same bytes (several formats put a random UUID in the header)."""
    fmt, _, opts = fmt.partition(":")
    template = path.parent.parent / f"template.{fmt}{opts.replace('=', '-')}"
    if not template.exists():
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                fmt,
                *(["-o", opts] if opts else []),
                str(template),
                "1M",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    path.write_bytes(template.read_bytes())


def run_all(factory: Any, tmp: Path) -> dict[str, Any]:
    """Every case on one peer (a node and an export each, one NBD server): per case,
    the guest's results (or the open errors) and the image bytes afterwards."""
    work = tmp / factory.label
    work.mkdir()
    sockdir = Path(tempfile.mkdtemp(prefix="txbf-"))
    sock = sockdir / "s"
    peer: Peer = factory(work)
    out: dict[str, Any] = {}
    try:
        start = {"type": "unix", "data": {"path": str(sock)}}
        reply = peer.execute({"execute": "nbd-server-start", "arguments": {"addr": start}})
        assert "error" not in reply, reply
        for i, (graph, rules, guest_name) in enumerate(CASES):
            make, fmt, no_flush = GRAPHS[graph]
            image = work / f"{_FILE}{i}"
            _make_image(fmt, image)
            name = f"n{i}"
            node = {"node-name": name, **make(RULES[rules], str(image), no_flush)}
            export = {"type": "nbd", "id": name, "node-name": name, "writable": True}
            replies = [
                peer.execute({"execute": "blockdev-add", "arguments": node}),
                peer.execute({"execute": "block-export-add", "arguments": export}),
            ]
            errors = [r["error"]["desc"] for r in replies if "error" in r]
            if errors:
                out[f"{graph}/{rules}/{guest_name}"] = {"open": errors}
                continue
            lines = guest(start, name, {**GUESTS, **REFBLOCK_GUESTS}[guest_name])
            out[f"{graph}/{rules}/{guest_name}"] = {"guest": lines, "path": image}
    finally:
        peer.close()
        for s in sockdir.iterdir():
            s.unlink()
        sockdir.rmdir()
    for case in out.values():  # the images as the nodes' close left them
        if "path" in case:
            case["image"] = case.pop("path").read_bytes()
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("blkdebug-flush")
    return run_all(QSDPeer, tmp), run_all(EnginePeer, tmp)


@pytest.mark.parametrize("case", [f"{g}/{r}/{q}" for g, r, q in CASES])
def test_flush_events_match_qsd(case: str, both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    qsd, txg = both[0][case], both[1][case]
    assert "open" not in qsd, qsd
    assert txg["guest"] == qsd["guest"]
    if case.split("/")[0] in EXACT_IMAGE:
        assert txg["image"] == qsd["image"]


def test_flush_rules_are_seen_by_the_guest(
    both: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """The scenarios are not vacuous: on QSD a flush rule fails a guest flush after a
    write (not one before it), while cache.no-flush keeps flush_to_disk from arming
    anything."""
    qsd = both[0]
    # the first flush (nothing written) passes; the one after a write fails
    first = qsd["raw/os-flush/writeback"]["guest"]
    assert first[0] == "ok" and first[3] == "errno 5", first
    assert "errno 5" in qsd["raw/disk-rw/writeback"]["guest"]
    assert "errno 5" not in qsd["raw-no-flush/disk-rw/writeback"]["guest"]
    assert "errno 5" in qsd["raw/disk-flush-once/writethrough"]["guest"]
    # a READ with FUA flushes first: after a write, the rule fails that flush, not the read
    assert qsd["raw/disk-flush-once/read-fua"]["guest"][1:3] == [
        "errno 5 flush failed",
        "ok 0561079e4fe3",
    ]
    # the events go to the primary child, never to the flushed node itself
    assert all(r.startswith("ok") for r in qsd["direct/disk-rw/mixed"]["guest"])


def test_formats_flush_inside_writes_on_qsd(
    both: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """The format cases are not vacuous either: on QSD a rule failing flushes fails a
    plain (not FUA) write, which only a flush inside the write can meet - after an
    arming flush for the formats that flush their file, even before any flush for
    those that flush their own node (qed, vhdx: flush_to_os comes from that flush)."""
    qsd = both[0]
    for fmt in ("qcow", "vpc", "vmdk", "qcow2"):
        lines = qsd[f"{fmt}/os-flush/writeback"]["guest"]
        assert lines[0] == "ok" and lines[2] == "errno 5", (fmt, lines)
    for fmt in ("qed", "vhdx"):
        lines = qsd[f"{fmt}/os-flush/mixed"]["guest"]
        assert lines[0] == "errno 5", (fmt, lines)
    # the write needing qcow2's second refcount block (alloc_refcount_block's flushes)
    assert qsd["qcow2-512/os-flush/refblock"]["guest"][32] == "errno 5"
