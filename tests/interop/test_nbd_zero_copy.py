"""Zero-copy NBD reads (txgraph/io/nbd/pipes.py, reads.py) keep every behaviour of QSD 7.2.

* wire bytes: the same requests on QSD and on an in-process txgraph server over
  the same image give byte-identical replies (chunk layout, holes, EOF zeros,
  unaligned ranges, DF, simple replies, a raw offset/size window), and again
  after another process truncates the file underneath; the fast path must have
  been taken (pipes were made) and every pipe is back in the pool afterwards;
* nodes that act on reads keep them: ``host_extent`` answers only through
  raw, pass-through filters and the file; a throttle group accounts and delays
  an NBD read (frozen clock, no timing); blkdebug's injected read error reaches
  the client exactly as on QSD;
* stress: several clients with many requests in flight each, a pool far too
  small for them (falls back to copies mid-stretch) and the default one: every
  byte right, no pipe lost.
"""

from __future__ import annotations

import fcntl
import random
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.qsd import qsd_available
from txgraph.io.nbd import protocol as P
from txgraph.io.nbd.client import NbdClient
from txgraph.io.nbd.pipes import PipePool
from txgraph.io.nbd.server import NbdServer
from txgraph.io.nbd.wire import Disconnected, recv_exact
from txgraph.io.runtime import Runtime
from txgraph.io.throttle_groups import ThrottleGroups
from txgraph.peers import QSD

MIB = 1 << 20
FILE_LEN = 3 * MIB + 1000  # not a multiple of 512: the export ends with zeros past EOF
SIZE = (FILE_LEN + 511) // 512 * 512
WIN_OFF, WIN_SIZE = 65536 + 512, 2 * MIB

needs_qsd = pytest.mark.skipif(not qsd_available(), reason="needs qemu-storage-daemon")


def _image(path: Path) -> bytes:
    """Data, a hole, data again up to an unaligned end."""
    rnd = random.Random(7)
    head = rnd.randbytes(MIB)
    tail = rnd.randbytes(FILE_LEN - 2 * MIB)
    with open(path, "wb") as f:
        f.write(head)
        f.seek(2 * MIB)
        f.write(tail)
    return head + bytes(MIB) + tail


def _connect(sock: str, export: str, structured: bool) -> NbdClient:
    return NbdClient({"type": "unix", "path": sock}, export, structured=structured)


def _reply(c: NbdClient, cookie: int, length: int, into: list[bytes] | None = None) -> list[bytes]:
    """The raw reply to one read: each structured chunk whole, or header + payload
    (appended to ``into`` as they arrive, so a dropped connection leaves what came)."""
    chunks = [] if into is None else into
    magic = recv_exact(c.sock, 4)
    if struct.unpack(">I", magic)[0] == P.SIMPLE_REPLY_MAGIC:
        rest = recv_exact(c.sock, 12)
        err, rcookie = struct.unpack(">IQ", rest)
        assert rcookie == cookie
        chunks.append(magic + rest + (b"" if err else recv_exact(c.sock, length)))
        return chunks
    while True:
        hdr = magic + recv_exact(c.sock, 16)
        rflags, _rtype, rcookie, rlen = struct.unpack(">HHQI", hdr[4:])
        assert rcookie == cookie
        chunks.append(hdr + recv_exact(c.sock, rlen))
        if rflags & P.REPLY_FLAG_DONE:
            return chunks
        magic = recv_exact(c.sock, 4)


def _ask(c: NbdClient, cookie: int, offset: int, length: int, flags: int = 0) -> list[bytes]:
    c.sock.sendall(P.REQUEST.pack(P.REQUEST_MAGIC, flags, P.CMD_READ, cookie, offset, length))
    return _reply(c, cookie, length)


def _outcome(sock: str, export: str, structured: bool, offset: int, length: int, flags: int) -> Any:
    """The reply's bytes, or what arrived before the server dropped the connection."""
    c = _connect(sock, export, structured)
    got: list[bytes] = []
    try:
        c.sock.sendall(P.REQUEST.pack(P.REQUEST_MAGIC, flags, P.CMD_READ, 5, offset, length))
        try:
            return _reply(c, 5, length, got)
        except Disconnected:
            return ("dropped after", got)
    finally:
        c.sock.close()


REQUESTS = [  # (export, structured, offset, length, flags)
    ("disk", True, 0, SIZE, 0),
    ("disk", True, 0, SIZE, P.CMD_FLAG_DF),
    ("disk", True, 4097, 2 * MIB - 3, 0),
    ("disk", True, MIB - 70000, 70000 + 4096, 0),
    ("disk", True, 2 * MIB + 1, SIZE - 2 * MIB - 1, 0),
    ("disk", True, 2 * MIB + 1, SIZE - 2 * MIB - 1, P.CMD_FLAG_DF),
    ("disk", True, 0, 0, 0),
    ("disk", True, 512, 0, P.CMD_FLAG_DF),
    ("disk", False, 0, SIZE, 0),
    ("disk", False, 123, MIB + 77, 0),
    ("win", True, 0, WIN_SIZE, 0),
    ("win", True, 1, WIN_SIZE - 1, P.CMD_FLAG_DF),
    ("win", False, 0, WIN_SIZE, 0),
]
AFTER_TRUNCATION = [  # block status after a truncation differs (QSD caches the length): no sparse
    ("disk", True, 0, SIZE, P.CMD_FLAG_DF),
    ("disk", True, MIB - 4096, MIB + 8192, P.CMD_FLAG_DF),
    ("disk", False, 0, SIZE, 0),
    ("win", False, 0, WIN_SIZE, 0),
]
TRUNCATE_TO = MIB + MIB // 2 + 100


@contextmanager
def _txgraph(img: Path, sock: str, pool: PipePool | None = None) -> Iterator[NbdServer]:
    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(img)}, {}, True)
    rt.open_node("r", "raw", {}, {"file": "f"}, True)
    rt.open_node("w", "raw", {"offset": WIN_OFF, "size": WIN_SIZE}, {"file": "f"}, True)
    srv = NbdServer(rt)
    srv.start({"type": "unix", "path": sock})
    if pool is not None:
        assert srv._pipes is not None
        srv._pipes.close()
        srv._pipes = pool
    srv.add_export("disk", "r", False)
    srv.add_export("win", "w", False)
    try:
        yield srv
    finally:
        srv.stop()
        rt.close_all()


def _qsd_exports(qsd: QSD, img: Path, sock: str) -> None:
    qsd.cmd(
        "blockdev-add",
        {"driver": "file", "node-name": "f", "filename": str(img), "read-only": True},
    )
    qsd.cmd("blockdev-add", {"driver": "raw", "node-name": "r", "file": "f", "read-only": True})
    qsd.cmd(
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "w",
            "file": "f",
            "read-only": True,
            "offset": WIN_OFF,
            "size": WIN_SIZE,
        },
    )
    qsd.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": sock}}})
    qsd.cmd("block-export-add", {"type": "nbd", "id": "e1", "node-name": "r", "name": "disk"})
    qsd.cmd("block-export-add", {"type": "nbd", "id": "e2", "node-name": "w", "name": "win"})


@needs_qsd
def test_replies_are_byte_identical_to_qsd(tmp_path: Path) -> None:
    mine_img, peer_img = tmp_path / "mine.raw", tmp_path / "peer.raw"
    content = _image(mine_img)
    _image(peer_img)
    mine_sock, peer_sock = str(tmp_path / "mine.sock"), str(tmp_path / "peer.sock")
    with QSD() as qsd, _txgraph(mine_img, mine_sock) as srv:
        _qsd_exports(qsd, peer_img, peer_sock)
        for case in REQUESTS:
            mine, peer = _outcome(mine_sock, *case), _outcome(peer_sock, *case)
            assert mine == peer, case
        # the data really is the image's (QSD could not be wrong the same way by accident)
        c = _connect(mine_sock, "disk", True)
        try:
            assert c.read(0, SIZE) == content + bytes(SIZE - FILE_LEN)
        finally:
            c.close()
        assert srv._pipes is not None and srv._pipes.pipes > 0  # the zero-copy path ran
        for img in (mine_img, peer_img):  # another process shrinks both files
            subprocess.run(["truncate", "-s", str(TRUNCATE_TO), str(img)], check=True)
        for case in AFTER_TRUNCATION:
            mine, peer = _outcome(mine_sock, *case), _outcome(peer_sock, *case)
            assert mine == peer, case
        deadline = time.monotonic() + 30
        while srv._pipes.lent and time.monotonic() < deadline:
            time.sleep(0.01)  # the last worker hands its pipes back after its send
        assert srv._pipes.lent == 0


def test_host_extent_only_through_nodes_that_pass_reads_through(tmp_path: Path) -> None:
    img = tmp_path / "d.raw"
    _image(img)
    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "4M"], check=True)
    groups = ThrottleGroups()
    groups.add("g", {})
    rt = Runtime(groups)
    try:
        rt.open_node("f", "file", {"filename": str(img)}, {}, True)
        fd = rt.node("f").fd  # type: ignore[attr-defined]
        rt.open_node("r", "raw", {}, {"file": "f"}, True)
        rt.open_node("w", "raw", {"offset": WIN_OFF, "size": WIN_SIZE}, {"file": "f"}, True)
        rt.open_node("pre", "preallocate", {}, {"file": "w"}, True)
        rt.open_node("t", "throttle", {"throttle-group": "g"}, {"file": "r"}, True)
        rt.open_node("cor", "copy-on-read", {}, {"file": "r"}, True)
        rt.open_node("dbg", "blkdebug", {}, {"image": "f"}, True)
        rt.open_node("rd", "raw", {}, {"file": "dbg"}, True)
        rt.open_node("qf", "file", {"filename": str(qcow)}, {}, True)
        rt.open_node("q", "qcow2", {}, {"file": "qf"}, True)
        with rt.request():
            assert rt.node("f").host_extent(10, 5) == (fd, 10)
            assert rt.node("r").host_extent(10, 5) == (fd, 10)
            assert rt.node("w").host_extent(10, 5) == (fd, WIN_OFF + 10)
            assert rt.node("pre").host_extent(10, 5) == (fd, WIN_OFF + 10)
            for name in ("t", "cor", "dbg", "rd", "q"):
                assert rt.node(name).host_extent(0, 4096) is None, name
            with pytest.raises(Exception) as exc:  # the window check a read makes
                rt.node("w").host_extent(WIN_SIZE - 4096, 8192)
            assert getattr(exc.value, "errno", None) == 22
    finally:
        rt.close_all()


def test_throttle_accounts_and_delays_an_nbd_read(tmp_path: Path) -> None:
    """A frozen clock: the first 2 MiB read fills the bucket, the second waits for time."""
    img = tmp_path / "d.raw"
    content = _image(img)
    now = [0.0]
    groups = ThrottleGroups(clock=lambda: now[0])
    group = groups.add("g", {"bps-read": MIB})
    rt = Runtime(groups)
    sock = str(tmp_path / "t.sock")
    rt.open_node("f", "file", {"filename": str(img)}, {}, True)
    rt.open_node("r", "raw", {}, {"file": "f"}, True)
    rt.open_node("t", "throttle", {"throttle-group": "g"}, {"file": "r"}, True)
    srv = NbdServer(rt)
    srv.start({"type": "unix", "path": sock})
    srv.add_export("disk", "t", False)
    try:
        c = _connect(sock, "disk", True)
        try:
            first = _ask(c, 1, 0, 2 * MIB, P.CMD_FLAG_DF)  # DF: one read, holes included
            assert b"".join(ch[28:] for ch in first) == content[: 2 * MIB]
            assert group._buckets["bps", "read"].level == 2 * MIB  # accounted
            c.sock.sendall(P.REQUEST.pack(P.REQUEST_MAGIC, P.CMD_FLAG_DF, P.CMD_READ, 9, MIB, MIB))
            deadline = time.monotonic() + 30
            while group.waiting() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert group.waiting() == 1  # the second read waits in the group...
            c.sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                c.sock.recv(1)  # ...and nothing of its reply was sent
            c.sock.settimeout(30)
            now[0] = 100.0  # the bucket leaks
            group.kick()
            chunks = _reply(c, 9, MIB)
            assert b"".join(ch[28:] for ch in chunks) == content[MIB : 2 * MIB]
        finally:
            c.close()
    finally:
        srv.stop()
        rt.close_all()


@needs_qsd
@pytest.mark.parametrize("flags", [0, P.CMD_FLAG_DF])
@pytest.mark.parametrize("sector", [None, 2 * MIB // 512], ids=["every-read", "third-mib"])
def test_blkdebug_read_error_reaches_the_client_as_on_qsd(
    tmp_path: Path, flags: int, sector: int | None
) -> None:
    """Failing every read, or only the stretch after the hole (the chunks before it arrive)."""
    outcomes = []
    for name in ("qsd", "txgraph"):
        img = tmp_path / f"{name}.raw"
        _image(img)
        sock = str(tmp_path / f"{name}.sock")
        rule: list[dict[str, Any]] = [{"event": "read_aio", "errno": 5, "once": False}]
        if sector is not None:
            rule[0]["sector"] = sector
        if name == "qsd":
            with QSD() as qsd:
                qsd.cmd(
                    "blockdev-add",
                    {
                        "driver": "raw",
                        "node-name": "r",
                        "read-only": True,
                        "file": {
                            "driver": "blkdebug",
                            "inject-error": rule,
                            "image": {"driver": "file", "filename": str(img)},
                        },
                    },
                )
                qsd.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": sock}}})
                qsd.cmd(
                    "block-export-add", {"type": "nbd", "id": "e", "node-name": "r", "name": "disk"}
                )
                outcomes.append(_outcome(sock, "disk", True, 0, 3 * MIB, flags))
            continue
        rt = Runtime()
        rt.open_node("f", "file", {"filename": str(img)}, {}, True)
        rt.open_node("d", "blkdebug", {"inject-error": rule}, {"image": "f"}, True)
        rt.open_node("r", "raw", {}, {"file": "d"}, True)
        srv = NbdServer(rt)
        srv.start({"type": "unix", "path": sock})
        srv.add_export("disk", "r", False)
        try:
            outcomes.append(_outcome(sock, "disk", True, 0, 3 * MIB, flags))
        finally:
            srv.stop()
            rt.close_all()
    assert outcomes[0] == outcomes[1]
    if sector is not None and not flags:  # the data and hole chunks before the failed stretch
        assert outcomes[0][0] == "dropped after" and len(outcomes[0][1]) == 2


def _hammer(sock: str, content: bytes, seed: int, rounds: int, errors: list[str]) -> None:
    rnd = random.Random(seed)
    try:
        c = _connect(sock, "disk", structured=seed % 3 != 0)
        try:
            for _ in range(rounds):
                asks = []
                for cookie in range(1, 17):  # 16 in flight on this connection
                    length = rnd.choice([1, 511, 4096, 65536, 65537, MIB, 2 * MIB + 3, 3 * MIB])
                    offset = rnd.randrange(0, SIZE - length + 1)
                    flags = rnd.choice([0, P.CMD_FLAG_DF]) if c.structured else 0
                    asks.append((cookie, offset, length))
                    c.sock.sendall(
                        P.REQUEST.pack(P.REQUEST_MAGIC, flags, P.CMD_READ, cookie, offset, length)
                    )
                want = {cookie: (offset, length) for cookie, offset, length in asks}
                for _ in asks:
                    cookie, data = _any_reply(c, want)
                    offset, length = want.pop(cookie)
                    if data != content[offset : offset + length]:
                        errors.append(f"seed {seed}: wrong data at {offset}+{length}")
        finally:
            c.close()
    except Exception as e:  # reported by the test thread
        errors.append(f"seed {seed}: {type(e).__name__}: {e}")


def _any_reply(c: NbdClient, want: dict[int, tuple[int, int]]) -> tuple[int, bytes]:
    """Read whichever reply comes next (replies go out in completion order)."""
    magic = struct.unpack(">I", recv_exact(c.sock, 4))[0]
    if magic == P.SIMPLE_REPLY_MAGIC:
        err, cookie = struct.unpack(">IQ", recv_exact(c.sock, 12))
        assert err == 0
        return cookie, recv_exact(c.sock, want[cookie][1])
    buf: bytearray | None = None
    while True:
        rflags, rtype, cookie, rlen = struct.unpack(">HHQI", recv_exact(c.sock, 16))
        offset, length = want[cookie]
        if buf is None:
            buf = bytearray(length)
        body = recv_exact(c.sock, rlen)
        if rtype == P.REPLY_TYPE_OFFSET_DATA:
            (off,) = struct.unpack_from(">Q", body)
            buf[off - offset : off - offset + rlen - 8] = body[8:]
        elif rtype == P.REPLY_TYPE_OFFSET_HOLE:
            off, n = struct.unpack_from(">QI", body)
            buf[off - offset : off - offset + n] = bytes(n)
        else:
            assert rtype == P.REPLY_TYPE_NONE, rtype
        if rflags & P.REPLY_FLAG_DONE:
            return cookie, bytes(buf)
        assert struct.unpack(">I", recv_exact(c.sock, 4))[0] == magic


@pytest.mark.parametrize("pool_bytes", [3 * MIB, None], ids=["tiny-pool", "default-pool"])
def test_stress_clients_with_many_reads_in_flight(tmp_path: Path, pool_bytes: int | None) -> None:
    img = tmp_path / "d.raw"
    content = _image(img) + bytes(SIZE - FILE_LEN)
    sock = str(tmp_path / "s.sock")
    pool = PipePool(pool_bytes) if pool_bytes is not None else None
    with _txgraph(img, sock, pool) as srv:
        errors: list[str] = []
        threads = [
            threading.Thread(target=_hammer, args=(sock, content, seed, 6, errors))
            for seed in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        pipes = srv._pipes
        assert pipes is not None
        deadline = time.monotonic() + 30
        while pipes.lent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipes.lent == 0
        assert pipes.pipes > 0
        if pool_bytes is not None:
            assert pipes.pipes <= pool_bytes // MIB


def test_server_stop_mid_flight_closes_every_pipe(tmp_path: Path) -> None:
    """nbd-server-stop while readers have replies pinned: every pipe is closed after."""
    img = tmp_path / "d.raw"
    content = _image(img) + bytes(SIZE - FILE_LEN)
    sock = str(tmp_path / "s.sock")
    with _txgraph(img, sock) as srv:
        pool = srv._pipes
        assert pool is not None
        errors: list[str] = []
        threads = [
            threading.Thread(target=_hammer, args=(sock, content, seed, 1000, errors))
            for seed in (1, 2, 4)  # structured clients: pinned replies
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while pool.lent == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert pool.lent > 0  # replies are pinned right now
        srv.stop()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert errors and all("wrong data" not in e for e in errors)  # cut off, never wrong
        deadline = time.monotonic() + 30
        while pool.pipes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.pipes == 0 and pool.lent == 0
        srv.start({"type": "unix", "path": sock})  # for the fixture's stop


def test_a_client_vanishing_mid_reply_leaves_no_stale_bytes(tmp_path: Path) -> None:
    """A pipe whose send failed still holds bytes: it must never serve another reply.

    16 MiB replies are twice the socket's send buffer, so a reader that leaves
    after 100 bytes fails the send with pinned bytes still in the pipes.
    """
    img = tmp_path / "big.raw"
    content = random.Random(3).randbytes(20 * MIB)
    img.write_bytes(content)
    sock = str(tmp_path / "s.sock")
    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(img)}, {}, True)
    rt.open_node("r", "raw", {}, {"file": "f"}, True)
    srv = NbdServer(rt)
    srv.start({"type": "unix", "path": sock})
    srv.add_export("disk", "r", False)
    try:
        pool = srv._pipes
        assert pool is not None
        for _ in range(4):
            c = _connect(sock, "disk", True)
            c.sock.sendall(
                P.REQUEST.pack(P.REQUEST_MAGIC, P.CMD_FLAG_DF, P.CMD_READ, 1, 0, 16 * MIB)
            )
            recv_exact(c.sock, 100)  # the reply started...
            c.sock.close()  # ...and its reader is gone
            deadline = time.monotonic() + 30
            while pool.lent and time.monotonic() < deadline:
                time.sleep(0.01)
        for pipe in pool._free:  # what the pool lends again holds nothing
            queued = fcntl.ioctl(pipe.r, termios.FIONREAD, b"\0\0\0\0")
            assert struct.unpack("i", queued)[0] == 0
        c = _connect(sock, "disk", True)
        try:
            for offset in (0, 4097, 3 * MIB + 1):
                chunks = _ask(c, 2, offset, 16 * MIB, P.CMD_FLAG_DF)
                assert b"".join(ch[28:] for ch in chunks) == content[offset : offset + 16 * MIB]
        finally:
            c.close()
    finally:
        srv.stop()
        rt.close_all()
