"""txgraph's NBD server against QEMU's own clients (qemu-img, qemu-io, qemu-nbd)."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from pathlib import Path

import pytest
from nbd_support import Served, pattern_data, run, serve_raw

from txgraph.errors import BlockError
from txgraph.io.nbd import protocol as P
from txgraph.io.nbd.client import NbdClient, NbdError
from txgraph.io.nbd.server import NbdServer
from txgraph.io.runtime import Runtime

SIZE = 4 << 20


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    with serve_raw(tmp_path, pattern_data(SIZE), description="txgraph test disk") as s:
        yield s


def test_qemu_img_info_sees_size_and_raw(served: Served) -> None:
    info = json.loads(run("qemu-img", "info", "--output=json", served.uri()).stdout)
    assert info["virtual-size"] == SIZE and info["format"] == "raw"


def test_qemu_nbd_list(served: Served) -> None:
    out = run("qemu-nbd", "--list", "-k", served.sock).stdout
    assert "export: 'disk'" in out and "description: txgraph test disk" in out
    assert f"size:  {SIZE}" in out and "base:allocation" in out
    # The same flag set qemu-storage-daemon 7.2 advertises for a writable export.
    assert "flags: 0xded ( flush fua trim zeroes df multi cache fast-zero )" in out


def test_qemu_io_write_then_read_pattern(served: Served) -> None:
    out = run(
        "qemu-io",
        "-f",
        "raw",
        "-c",
        "write -P 0x5a 65536 131072",
        "-c",
        "read -P 0x5a 65536 131072",
        "-c",
        "read -P 0 0 0",
        served.uri(),
    ).stdout
    assert "wrote 131072/131072" in out and "read 131072/131072" in out
    raw = served.image.read_bytes()
    assert raw[65536 : 65536 + 131072] == b"\x5a" * 131072
    assert raw[:65536] == pattern_data(SIZE)[:65536]


def test_qemu_io_pattern_mismatch_is_detected(served: Served) -> None:
    out = run("qemu-io", "-f", "raw", "-c", "read -P 0x77 0 4096", served.uri(), check=False).stdout
    assert "Pattern verification failed" in out


def test_qemu_img_convert_and_compare(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "copy.raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", served.uri(), str(out))
    assert out.read_bytes() == pattern_data(SIZE)
    assert (
        "Images are identical"
        in run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(out), served.uri()).stdout
    )
    run("qemu-io", "-f", "raw", "-c", "write -P 1 1M 512", served.uri())
    res = run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(out), served.uri(), check=False)
    assert res.returncode == 1 and "Content mismatch at offset 1048576" in res.stdout


def test_block_status_reaches_qemu_img_map(tmp_path: Path) -> None:
    with serve_raw(tmp_path, b"") as s:
        with open(s.image, "r+b") as f:  # sparse: data only in the second MiB
            f.truncate(SIZE)
            f.seek(1 << 20)
            f.write(b"\x01" * (1 << 20))
        s.runtime.close_all()  # reopen to see the new length
        s.runtime.open_node("disk-file", "file", {"filename": str(s.image)}, {}, False)
        s.runtime.open_node("disk-fmt", "raw", {}, {"file": "disk-file"}, False)
        s.runtime.set_child(s.server.exports()[0].backend, "root", "disk-fmt")
        m = json.loads(run("qemu-img", "map", "--output=json", "-f", "raw", s.uri()).stdout)
        data = [(e["start"], e["length"]) for e in m if e["data"]]
        assert data == [(1 << 20, 1 << 20)]


def test_tcp_on_localhost(tmp_path: Path) -> None:
    rt = Runtime()
    rt.open_node("n", "null-co", {"size": 1 << 20, "read-zeroes": True}, {}, False)
    server = NbdServer(rt)
    server.start({"type": "inet", "host": "127.0.0.1", "port": "0"})
    try:
        server.add_export("zero", "n", False)
        host, port = server.address
        out = run(
            "qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 1M", f"nbd://{host}:{port}/zero"
        ).stdout
        assert "read 1048576/1048576" in out
    finally:
        server.stop()


def test_read_only_export_refuses_writes(tmp_path: Path) -> None:
    with serve_raw(tmp_path, pattern_data(SIZE), writable=False) as s:
        assert "readonly" in run("qemu-nbd", "--list", "-k", s.sock).stdout
        res = run("qemu-io", "-f", "raw", "-c", "write 0 512", s.uri(), check=False)
        assert res.returncode != 0
        with NbdClient(s.addr, "disk") as c:
            for cmd in (P.CMD_WRITE, P.CMD_TRIM, P.CMD_WRITE_ZEROES):
                with pytest.raises(NbdError) as exc:
                    c.raw_request(cmd, 0, 512, b"x" * 512 if cmd == P.CMD_WRITE else b"")
                assert exc.value.errno == 1  # EPERM
            assert c.read(0, 512) == pattern_data(512)
        assert s.image.read_bytes() == pattern_data(SIZE)


@pytest.mark.parametrize("structured", [False, True])
def test_out_of_range_requests_are_einval_and_harmless(served: Served, structured: bool) -> None:
    with NbdClient(served.addr, "disk", structured=structured) as c:
        cases = [
            (P.CMD_READ, SIZE - 512, 1024, b""),
            (P.CMD_READ, SIZE + 512, 0, b""),
            (P.CMD_WRITE, SIZE, 512, b"y" * 512),
            (P.CMD_TRIM, SIZE - 1, 2, b""),
            (P.CMD_WRITE_ZEROES, 1 << 62, 512, b""),
            (P.CMD_READ, 0, P.MAX_BUFFER_SIZE + 1, b""),
            (99, 0, 512, b""),
        ]
        for cmd, off, length, data in cases:
            with pytest.raises(NbdError) as exc:
                c.raw_request(cmd, off, length, data)
            assert exc.value.errno == 22, (cmd, off, length)
        with pytest.raises(NbdError):
            c.raw_request(P.CMD_READ, 0, 512, flags=1 << 9)  # unknown flag
        assert c.read(SIZE - 512, 512) == pattern_data(SIZE)[-512:]
    assert served.image.read_bytes() == pattern_data(SIZE)


def test_oversized_write_closes_the_connection_only(served: Served) -> None:
    c = NbdClient(served.addr, "disk", structured=False)
    c.sock.sendall(P.REQUEST.pack(P.REQUEST_MAGIC, 0, P.CMD_WRITE, 7, 0, P.MAX_BUFFER_SIZE + 512))
    magic, err, cookie = P.SIMPLE_REPLY.unpack(c.sock.recv(16, socket.MSG_WAITALL))
    assert (magic, err, cookie) == (P.SIMPLE_REPLY_MAGIC, 22, 7)
    c.sock.settimeout(5)
    assert c.sock.recv(1) == b""  # server hung up: the payload is unparseable
    c.sock.close()
    with NbdClient(served.addr, "disk") as again:
        assert again.read(0, 16) == pattern_data(16)


def _raw_handshake(sock_path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.settimeout(5)
    greet = s.recv(18, socket.MSG_WAITALL)
    assert struct.unpack(">QQH", greet) == (P.NBDMAGIC, P.IHAVEOPT, 3)
    return s


def test_malformed_handshakes_are_dropped(served: Served) -> None:
    s = _raw_handshake(served.sock)
    s.sendall(struct.pack(">I", 0x80))  # unknown client flag
    assert s.recv(1) == b""
    s.close()
    s = _raw_handshake(served.sock)
    s.sendall(struct.pack(">I", 3) + P.OPT_HDR.pack(0x1234, P.OPT_LIST, 0))  # bad magic
    assert s.recv(1) == b""
    s.close()
    s = _raw_handshake(served.sock)
    s.sendall(struct.pack(">I", 3) + P.OPT_HDR.pack(P.IHAVEOPT, 42, 3) + b"abc")
    magic, opt, rtype, length = P.OPT_REPLY_HDR.unpack(s.recv(20, socket.MSG_WAITALL))
    assert (magic, opt, rtype) == (P.REPLY_MAGIC_OPT, 42, P.REP_ERR_UNSUP)
    s.recv(length, socket.MSG_WAITALL)
    s.sendall(P.OPT_HDR.pack(P.IHAVEOPT, P.OPT_GO, 4) + b"\0\0\0\x09")  # truncated GO payload
    assert P.OPT_REPLY_HDR.unpack(s.recv(20, socket.MSG_WAITALL))[2] == P.REP_ERR_INVALID
    s.close()
    s = _raw_handshake(served.sock)
    s.sendall(b"\0\0")  # half a flags word, then vanish
    s.close()
    # The server is unaffected.
    assert "read 512/512" in run("qemu-io", "-f", "raw", "-c", "read 0 512", served.uri()).stdout


def test_unknown_export(served: Served) -> None:
    res = run("qemu-io", "-f", "raw", "-c", "read 0 512", served.uri("nope"), check=False)
    assert res.returncode != 0 and "export 'nope' not present" in res.stderr


def _until_no_clients(served: Served, deadline: float = 30.0) -> None:
    """Poll until every connection has been torn down (the server forgets it last)."""
    end = time.monotonic() + deadline
    while any(exp.clients for exp in served.server.exports()):
        assert time.monotonic() < end, "a vanished client's connection was never torn down"
        time.sleep(0.01)


def test_client_vanishing_mid_request_changes_nothing(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="txgraph.io.nbd")
    c = NbdClient(served.addr, "disk")
    c.sock.sendall(
        P.REQUEST.pack(P.REQUEST_MAGIC, 0, P.CMD_WRITE, 1, 0, 1 << 20) + b"\xee" * (1 << 19)
    )  # half the payload
    c.sock.close()
    # Clients that leave while their replies are being sent: a 4 MiB read cannot fit in the
    # socket buffers, so its reply always meets the closed socket; a flush usually does too.
    for cmd, length in ((P.CMD_READ, 4 << 20), (P.CMD_FLUSH, 0)):
        d = NbdClient(served.addr, "disk")
        d.sock.sendall(P.REQUEST.pack(P.REQUEST_MAGIC, 0, cmd, 2, 0, length))
        d.sock.close()
    _until_no_clients(served)
    # A hang-up is the client's business: nothing is logged as a failure, no traceback.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)
    assert served.image.read_bytes() == pattern_data(SIZE)
    assert (
        "Images are identical"
        in run(
            "qemu-img", "compare", "-f", "raw", "-F", "raw", str(served.image), served.uri()
        ).stdout
    )


def test_export_removal_modes(served: Served) -> None:
    c = NbdClient(served.addr, "disk")
    with pytest.raises(BlockError, match="export 'disk' still in use"):
        served.server.remove_export("disk", "safe")
    served.server.remove_export("disk", "hard")
    with pytest.raises(NbdError):
        c.read(0, 512)
    c.sock.close()
    with pytest.raises(BlockError, match="Export 'disk' is not found"):
        served.server.remove_export("disk")
    assert NbdClient.list_exports(served.addr) == []


def test_server_api_errors(tmp_path: Path) -> None:
    rt = Runtime()
    rt.open_node("n", "null-co", {"size": 1 << 20}, {}, False)
    server = NbdServer(rt)
    with pytest.raises(BlockError, match="NBD server not running"):
        server.add_export("x", "n", False)
    server.start({"type": "unix", "data": {"path": str(tmp_path / "s.sock")}})  # legacy shape
    try:
        with pytest.raises(BlockError, match="NBD server already running"):
            server.start({"type": "unix", "path": str(tmp_path / "t.sock")})
        with pytest.raises(BlockError, match="Cannot find device='' nor node-name='nope'"):
            server.add_export("x", "nope", False)
        server.add_export("x", "n", False)
        with pytest.raises(BlockError, match="NBD server already has export named 'x'"):
            server.add_export("x", "n", False)
    finally:
        server.stop()
    with pytest.raises(BlockError, match="NBD server not running"):
        server.stop()
