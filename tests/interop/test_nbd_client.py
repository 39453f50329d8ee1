"""txgraph's ``nbd`` driver reading exports served by qemu-nbd and qemu-storage-daemon."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nbd_support import pattern_data, run

from tests.support.qsd import QSD
from txgraph.errors import IOFailure, OpenError
from txgraph.io.runtime import Runtime

SIZE = 2 << 20


def _qemu_nbd(image: Path, sock: Path, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["qemu-nbd", "-k", str(sock), "-f", "raw", "-x", "ex", "--persistent", *extra, str(image)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    # the socket file appears a moment before qemu-nbd listens: wait for a real connection
    # (a probe client is harmless with --persistent)
    while not _listening(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(
                f"qemu-nbd did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.01)
    return proc


def _listening(sock: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        probe.close()


@pytest.fixture
def qemu_nbd(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    image = tmp_path / "src.raw"
    image.write_bytes(pattern_data(SIZE, seed=7))
    sock = tmp_path / "qnbd.sock"
    proc = _qemu_nbd(image, sock)
    try:
        yield image, sock
    finally:
        proc.terminate()
        proc.wait(10)


def _opts(sock: Path, export: str = "ex") -> dict[str, str]:
    return {"server.type": "unix", "server.path": str(sock), "export": export}


def test_read_write_through_qemu_nbd(qemu_nbd: tuple[Path, Path]) -> None:
    image, sock = qemu_nbd
    rt = Runtime()
    info = rt.open_node("n", "nbd", _opts(sock), {}, False)
    assert info.virtual_size == SIZE and info.filename == f"nbd+unix:///ex?socket={sock}"
    rt.open_node("r", "raw", {}, {"file": "n"}, False)
    node = rt.node("r")
    assert node.read(0, SIZE) == pattern_data(SIZE, seed=7)
    node.write(4096, b"\x42" * 8192)
    node.write_zeroes(65536, 65536)
    node.flush()
    rt.close_all()
    data = image.read_bytes()
    assert data[4096:12288] == b"\x42" * 8192 and data[65536:131072] == bytes(65536)
    # qemu-io, a second client of the same qemu-nbd, agrees.
    run(
        "qemu-io",
        "-f",
        "raw",
        "-c",
        "read -P 0x42 4096 8192",
        "-c",
        "read -P 0 64k 64k",
        f"nbd+unix:///ex?socket={sock}",
    )


def test_open_errors_use_qemu_texts(qemu_nbd: tuple[Path, Path], tmp_path: Path) -> None:
    _, sock = qemu_nbd
    rt = Runtime()
    with pytest.raises(OpenError, match="Requested export not available"):
        rt.open_node("n", "nbd", _opts(sock, "nope"), {}, True)
    missing = tmp_path / "none.sock"
    with pytest.raises(OpenError, match=f"Failed to connect to '{missing}': No such file"):
        rt.open_node("n", "nbd", _opts(missing), {}, True)
    with pytest.raises(OpenError, match="Failed to connect to '127.0.0.1:1': Connection refused"):
        rt.open_node(
            "n",
            "nbd",
            {"server.type": "inet", "server.host": "127.0.0.1", "server.port": "1", "export": "ex"},
            {},
            True,
        )


def test_read_only_export(tmp_path: Path) -> None:
    image = tmp_path / "ro.raw"
    image.write_bytes(pattern_data(SIZE))
    sock = tmp_path / "ro.sock"
    proc = _qemu_nbd(image, sock, "-r")
    try:
        rt = Runtime()
        with pytest.raises(OpenError, match="Could not open image: Permission denied"):
            rt.open_node("n", "nbd", _opts(sock), {}, False)
        rt.open_node("n", "nbd", {**_opts(sock), "auto-read-only": True}, {}, False)
        assert rt.node("n").read_only and rt.info("n").extra["read-only-export"]
        with pytest.raises(IOFailure):
            rt.node("n").write(0, b"x")
        rt.close_all()
    finally:
        proc.terminate()
        proc.wait(10)


def test_block_status_from_qemu_storage_daemon(tmp_path: Path) -> None:
    image = tmp_path / "sparse.raw"
    with open(image, "wb") as f:
        f.truncate(SIZE)
        f.seek(1 << 20)
        f.write(b"\x01" * 4096)
    sock = tmp_path / "qsd-nbd.sock"
    with QSD() as qsd:
        qsd.cmd("blockdev-add", {"driver": "file", "filename": str(image), "node-name": "f"})
        qsd.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(sock)}}})
        qsd.cmd("block-export-add", {"type": "nbd", "id": "e", "node-name": "f", "name": "sp"})
        rt = Runtime()
        rt.open_node("n", "nbd", _opts(sock, "sp"), {}, True)
        node = rt.node("n")
        st = node.block_status(0, SIZE)
        assert st.zero and st.length == 1 << 20
        st = node.block_status(1 << 20, SIZE - (1 << 20))
        assert not st.zero
        assert node.read((1 << 20) - 2, 4) == b"\0\0\x01\x01"
        rt.close_all()


def test_txgraph_export_of_an_nbd_node_chains_two_servers(
    qemu_nbd: tuple[Path, Path], tmp_path: Path
) -> None:
    """qemu-nbd -> txgraph nbd driver -> txgraph NBD server -> qemu-img compare."""
    from txgraph.io.nbd.server import NbdServer

    image, sock = qemu_nbd
    rt = Runtime()
    rt.open_node("n", "nbd", _opts(sock), {}, True)
    server = NbdServer(rt)
    mine = str(tmp_path / "mine.sock")
    server.start({"type": "unix", "path": mine})
    try:
        server.add_export("relay", "n", False)
        out = run(
            "qemu-img",
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            str(image),
            f"nbd+unix:///relay?socket={mine}",
        ).stdout
        assert "Images are identical" in out
    finally:
        server.stop()
        rt.close_all()
    assert os.path.exists(image)
