"""nbd URIs and legacy ``nbd:`` filenames in image headers: txgraph vs qemu-storage-daemon 7.2.

Each case is a qcow2 whose header backing string is the filename under test
(``qemu-img create -u -b STRING -F raw``), opened read-only by blockdev-add on
both peers. A real ``qemu-nbd`` serves export ``x`` on a unix socket for the
cases that connect; refused TCP ports (bound, never listened on) show the
parsed host and port in QEMU's ``Failed to connect`` text. Compared: the error
text, and for successes every node's projection as the differential harness compares it
(driver, read-only, cache, filename, image info).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, QSDPeer, canon_nodes
from txgraph.peers import QSD

pytestmark = pytest.mark.qsd


@pytest.fixture(scope="module")
def nbd_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("nbdfn")
    image = root / "base.raw"
    image.write_bytes(b"\xa5" * 65536)
    sock = root / "n.sock"
    proc = subprocess.Popen(
        ["qemu-nbd", "-k", str(sock), "-f", "raw", "-x", "x", "--persistent", "-r", str(image)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # A bound but not listening TCP socket: connects to it are refused, never accepted.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    # qemu-nbd cannot report a port it chose: take a free one from the kernel for it.
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    tport = str(probe.getsockname()[1])
    probe.close()
    tcp = subprocess.Popen(
        [
            "qemu-nbd",
            "-b",
            "127.0.0.1",
            "-p",
            tport,
            "-f",
            "raw",
            "-x",
            "x",
            "--persistent",
            "-r",
            str(image),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(2000):
            if sock.exists() or proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.01"], check=True)
        assert sock.exists(), (
            f"qemu-nbd did not start: {proc.stderr.read() if proc.stderr else ''!r}"
        )
        for _ in range(2000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", int(tport))) == 0 or tcp.poll() is not None:
                    break
            subprocess.run(["sleep", "0.01"], check=True)
        assert tcp.poll() is None, "qemu-nbd (tcp) did not start"
        yield {
            "sock": str(sock),
            "port": str(closed.getsockname()[1]),
            "root": str(root),
            "tport": tport,
        }
    finally:
        tcp.terminate()
        tcp.wait(10)
        closed.close()
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


CASES = [
    "nbd+unix:///x?socket={sock}",
    "nbd:unix:{sock}:exportname=x",
    "nbd:unix:{sock}",
    "nbd+unix:///y?socket={sock}",
    "nbd+unix:///x?socket=/nonexistent.sock",
    "nbd:unix:/nonexistent.sock",
    "nbd://127.0.0.1:{port}/exp",
    "nbd+tcp://127.0.0.1:{port}/e",
    "nbd:127.0.0.1:{port}",
    "nbd:127.0.0.1:{port}:exportname=zz",
    "nbd:",
    "nbd://",
    "nbd+unix://",
    "nbd+unix:///x",
    "nbd+unix://h/x?socket=/a",
    "nbd://h:99999/x",
    "nbd://h:/x",
    "nbd:h",
    "nbd:h:1:exportname=",
    "nbd+foo://x",
    "nbd+unix:///a%2fb?socket=/t%41",
    "nbd://127.0.0.1:4/x?a=b",
    "nbd+unix:///x?socket=/s&b=c",
    "nbd+unix:///x?sock=/s",
    "nbd+unix:///x?socket=",
    "nbd+unix://:5/x?socket=/s",
    "nbd://u@127.0.0.1:{port}/x",
    "nbd://127.0.0.1:{port}/x#frag",
    "nbd://127.0.0.1:65536/x",
    "nbd:unix:",
    "nbd:exportname=x",
    "nbd::9",
    "nbd:[::1",
    "nbd:127.0.0.1:{port},ipv4",
    "nbd:127.0.0.1:10,to=x",
    "nbd:127.0.0.1:11,ipv4=foo",
    "nbd:h:12:34",
    "nbd+unix:///x?socket=/s;b=c",
    "nbd://127.0.0.1:{port}/a/b/c",
    "nbd://127.0.0.1:9/x y",
    'json:{{"driver":"raw","file":{{"driver":"nbd","path":"{sock}","port":"5"}}}}',
    'json:{{"driver":"raw","file":{{"driver":"nbd","path":"{sock}","host":"5"}}}}',
    'json:{{"driver":"raw","file":{{"driver":"nbd","path":"{sock}","server":{{"type":"unix","path":"/x"}}}}}}',
    'json:{{"driver":"raw","file":{{"driver":"nbd"}}}}',
    'json:{{"driver":"raw","file":{{"driver":"nbd","path":"{sock}","export":"x"}}}}',
    'json:{{"driver":"raw","file":{{"driver":"nbd","host":"127.0.0.1","port":"{port}"}}}}',
    "nbd://127.0.0.1:{tport}/x",
    "nbd+tcp://127.0.0.1:{tport}/x",
    "nbd:127.0.0.1:{tport}:exportname=x",
    "nbd:localhost:{tport}:exportname=x",
    "nbd://127.0.0.1:{tport}/y",
    "nbd://[::1]:{port}/x",
    'json:{{"driver":"raw","file":{{"driver":"nbd","host":"127.0.0.1","port":"{tport}","export":"x"}}}}',
]


def _run(peer: Any, workdir: Path, names: list[str]) -> list[Any]:
    out: list[Any] = []
    for i, backing in enumerate(names):
        top = workdir / f"t{i}.qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-u",
                "-b",
                backing,
                "-F",
                "raw",
                str(top),
                "1M",
            ],
            check=True,
        )
        reply = peer.execute(
            {
                "execute": "blockdev-add",
                "arguments": {
                    "driver": "qcow2",
                    "node-name": f"t{i}",
                    "read-only": True,
                    "file": {"driver": "file", "filename": str(top)},
                },
            }
        )
        if "error" in reply:
            out.append(reply["error"]["desc"])
            continue
        nodes = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        # The harness projection: driver, ro, cache, filenames, image info of every node.
        out.append(canon_nodes(nodes["return"], str(workdir)))
        peer.execute({"execute": "blockdev-del", "arguments": {"node-name": f"t{i}"}})
    return out


def test_header_nbd_filenames_match_qsd(nbd_env: dict[str, str], tmp_path: Path) -> None:
    names = [c.format(**nbd_env) for c in CASES]
    results = {}
    for label, cls in (("qsd", QSDPeer), ("txgraph", EnginePeer)):
        workdir = tmp_path / label
        workdir.mkdir()
        peer = cls(workdir)
        try:
            results[label] = _run(peer, workdir, names)
        finally:
            peer.close()
    diffs = [(n, q, t) for n, q, t in zip(names, results["qsd"], results["txgraph"]) if q != t]
    assert not diffs, json.dumps(diffs, indent=1)
    # The cases really exercise both outcomes and the parser's error texts.
    assert sum(isinstance(r, dict) for r in results["qsd"]) >= 7
    assert "Could not open backing file: No valid URL specified" in results["qsd"]


def test_bare_socket_parameter_crashes_qsd_but_not_txgraph(tmp_path: Path) -> None:
    """QEMU 7.2 dereferences the missing value of ``?socket`` (SIGSEGV); txgraph refuses it
    as upstream QEMU does, with ``No valid URL specified``."""
    top = tmp_path / "t.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "nbd+unix:///x?socket",
            "-F",
            "raw",
            str(top),
            "1M",
        ],
        check=True,
    )
    args = {
        "driver": "qcow2",
        "node-name": "t",
        "read-only": True,
        "file": {"driver": "file", "filename": str(top)},
    }
    with QSD(workdir=str(tmp_path)) as qsd:
        # the reply never comes: EOF or a reset, depending on when the process dies
        with pytest.raises((RuntimeError, ConnectionResetError)):
            qsd.execute("blockdev-add", args)
        assert qsd.proc.wait(10) < 0  # killed by a signal
    peer = EnginePeer(tmp_path)
    try:
        reply = peer.execute({"execute": "blockdev-add", "arguments": args})
    finally:
        peer.close()
    assert reply["error"]["desc"] == "Could not open backing file: No valid URL specified"
