"""One qemu-storage-daemon command line, unchanged, on QSD 7.2 and on ``txgraph serve``.

Both processes get the same arguments (``{dir}`` is each one's private
directory), including the QMP monitor (``--chardev socket,...`` + ``--monitor``);
over that monitor the graph (``query-named-block-nodes``,
``x-debug-query-block-graph``, canonical forms from :mod:`txgraph.oracle.canon`)
and the exports must be the same, and the NBD export must show the same disk
to the real ``qemu-img``. Also: a bad line on the real ``txgraph serve``
command gives QSD's text and status (no traceback), and ``--pidfile``.
Every process is killed on every exit path (:class:`QMPProcess` closes them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.qsd import QSD_BINARY, qemu_img
from txgraph.oracle.canon import canon_graph, canon_nodes
from txgraph.peers import QMPProcess

pytestmark = pytest.mark.qsd

NBD = "--nbd-server", "addr.type=unix,addr.path={dir}/nbd.sock"

GOOD: dict[str, list[str]] = {
    "throttled-export": [
        "--blockdev",
        "driver=null-co,node-name=n,size=1048576",
        "--object",
        "throttle-group,id=tg0,x-iops-total=10",
        "--blockdev",
        "throttle,node-name=t,throttle-group=tg0,file=n",
        *NBD,
        "--export",
        "type=nbd,id=e,node-name=t,name=disk,writable=on",
    ],
    "json-and-escaped-comma": [
        "--blockdev",
        '{"driver": "file", "node-name": "f", "filename": "{dir}/a,b.qcow2"}',
        "--blockdev",
        "qcow2,node-name=q,file=f,read-only=on,cache.no-flush=on",
        "--blockdev",
        "driver=file,node-name=g,filename={dir}/a,,b.qcow2,read-only=on",
        "--object",
        '{"qom-type": "iothread", "id": "io0"}',
        *NBD,
        "--export",
        "nbd,id=e,node-name=q,name=ro",
    ],
    "quorum-lists": [
        "--blockdev",
        "null-co,node-name=n0,size=65536",
        "--blockdev",
        "driver=quorum,node-name=q,vote-threshold=2,children.0=n0,"
        "children.1.driver=null-co,children.1.size=65536,"
        "children.2.driver=null-co,children.2.size=65536,read-only=on",
    ],
}


def _spawn(kind: str, args: list[str], workdir: Path) -> QMPProcess:
    sock = str(workdir / "qmp.sock")
    line = [a.replace("{dir}", str(workdir)) for a in args]
    monitor = [
        "--chardev",
        f"socket,id=mon0,path={sock},server=on,wait=off",
        "--monitor",
        "chardev=mon0",
    ]
    prog = [QSD_BINARY] if kind == "qsd" else [sys.executable, "-m", "txgraph.cli", "serve"]
    # QMPProcess owns the tmpdir it is given (removed on close): hand it a scratch one
    return QMPProcess(
        [*prog, *monitor, *line], sock, tempfile.mkdtemp(prefix=f"{kind}-"), str(workdir)
    )


@contextmanager
def _both(args: list[str], tmp_path: Path) -> Iterator[dict[str, tuple[QMPProcess, Path]]]:
    with ExitStack() as stack:
        peers: dict[str, tuple[QMPProcess, Path]] = {}
        for kind in ("qsd", "txgraph"):
            workdir = tmp_path / kind
            workdir.mkdir()
            qemu_img("create", "-q", "-f", "qcow2", workdir / "a,b.qcow2", "1M")
            proc = _spawn(kind, args, workdir)
            stack.callback(proc.close)
            peers[kind] = (proc, workdir)
        yield peers


def _state(proc: QMPProcess, workdir: Path) -> dict[str, Any]:
    nodes = proc.cmd("query-named-block-nodes", {"flat": True})
    exports = sorted(proc.cmd("query-block-exports"), key=lambda e: e["id"])
    return {
        "nodes": canon_nodes(nodes, str(workdir)),
        "graph": canon_graph(proc.cmd("x-debug-query-block-graph"), str(workdir)),
        "exports": exports,
    }


@pytest.mark.parametrize("case", sorted(GOOD))
def test_same_command_line_same_graph(case: str, tmp_path: Path) -> None:
    with _both(GOOD[case], tmp_path) as peers:
        states = {kind: _state(proc, workdir) for kind, (proc, workdir) in peers.items()}
        assert states["txgraph"] == states["qsd"]
        assert states["qsd"]["nodes"]  # the line built something to compare
        if "--export" in GOOD[case]:
            infos = {}
            for kind, (_proc, workdir) in peers.items():
                name = next(e["id"] for e in states[kind]["exports"])
                export = "disk" if case == "throttled-export" else "ro"
                assert name == "e"
                info = json.loads(
                    qemu_img(
                        "info", "--output=json", f"nbd+unix:///{export}?socket={workdir}/nbd.sock"
                    )
                )
                infos[kind] = {k: info[k] for k in ("virtual-size", "format")}
            assert infos["txgraph"] == infos["qsd"]


def _run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "txgraph.cli", "serve", *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed it already
        pytest.fail(f"txgraph serve {args} did not exit")


@pytest.mark.parametrize(
    "args",
    [
        ["--blockdev", "driver=null-co,node-name=n"],  # the example: no monitor
        ["--blockdev", "driver=null-co,node-name=n,size=1M"],
        ["--blockdev", '{"driver":"null-co"'],
        ["--monitor", "chardev=nope"],
    ],
    ids=["runs-without-monitor", "size-suffix", "bad-json", "missing-chardev"],
)
def test_cli_exit_status_and_stderr(args: list[str], tmp_path: Path) -> None:
    if args == ["--blockdev", "driver=null-co,node-name=n"]:
        # a good line serves until SIGTERM, like QSD (here with a pidfile to find it by)
        pid = tmp_path / "pid"
        for prog in ([QSD_BINARY], [sys.executable, "-m", "txgraph.cli", "serve"]):
            _serve_until_term([*prog, "--pidfile", str(pid), *args], pid)
        return
    cli = _run_cli(args)
    qsd = subprocess.run(
        ["qemu-storage-daemon", *args],
        executable=QSD_BINARY,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert (cli.returncode, cli.stderr, cli.stdout) == (qsd.returncode, qsd.stderr, qsd.stdout)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr


def _serve_until_term(argv: list[str], pidfile: Path) -> None:
    """Start, wait for the pidfile (QSD writes it once every option ran), SIGTERM, check."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(1200):  # deadline: 120 s
            if pidfile.exists() and pidfile.read_text().endswith("\n"):
                break
            if proc.poll() is not None:
                break
            try:
                proc.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
        assert proc.poll() is None, proc.communicate()
        assert pidfile.read_text() == f"{proc.pid}\n"
        assert pidfile.stat().st_mode & 0o777 == 0o600
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out, err) == (0, "", "")
        assert not pidfile.exists()  # removed at exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _second_monitor(path: Path) -> list[Any]:
    """Negotiate on another monitor socket and list the nodes (a deadline on every read)."""
    import socket as socketlib

    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(str(path))
        stream = sock.makefile("rwb")
        json.loads(stream.readline())  # the greeting
        replies = []
        for command in ("qmp_capabilities", "query-named-block-nodes"):
            stream.write(json.dumps({"execute": command}).encode())
            stream.flush()
            replies.append(json.loads(stream.readline()))
        return [n["node-name"] for n in replies[1]["return"]]


def test_two_monitors_share_one_block_layer(tmp_path: Path) -> None:
    args = [
        "--chardev",
        "socket,id=mon1,path={dir}/second.sock,server=on,wait=off",
        "--monitor",
        "mon1",
        "--blockdev",
        "null-co,node-name=n",
    ]
    with _both(args, tmp_path) as peers:
        seen = {}
        for kind, (proc, workdir) in peers.items():
            proc.cmd("blockdev-add", {"driver": "null-co", "node-name": "added"})
            seen[kind] = sorted(_second_monitor(workdir / "second.sock"))
        assert seen["txgraph"] == seen["qsd"] == ["added", "n"]


def test_chardevs_in_qom(tmp_path: Path) -> None:
    """``/chardevs`` lists the command line's chardevs: the monitor's (connected, since this
    client talks through it) and a second socket nobody connected to."""
    extra = ["--chardev", "socket,id=spare,path={dir}/spare.sock,server=on,wait=off"]
    with _both(extra, tmp_path) as peers:
        seen = {}
        for kind, (proc, workdir) in peers.items():
            seen[kind] = [
                proc.cmd("qom-list", {"path": "/chardevs"}),
                proc.cmd("qom-list", {"path": "spare"}),
                proc.cmd("qom-get", {"path": "/chardevs/mon0", "property": "connected"}),
                proc.cmd("qom-get", {"path": "/chardevs/spare", "property": "connected"}),
                proc.cmd("qom-get", {"path": "/chardevs/spare", "property": "addr"}),
            ]
            seen[kind][-1]["path"] = seen[kind][-1]["path"].replace(str(workdir), "{dir}")
        assert seen["txgraph"] == seen["qsd"]
        assert {c["name"] for c in seen["qsd"][0][1:]} == {"mon0", "spare"}


def test_chardev_sockets_listen_from_the_option_on_and_go_at_exit(tmp_path: Path) -> None:
    """A ``--chardev socket,server=on`` listens from its option on and until the daemon
    ends, monitor or not: its file never disappears in between (txgraph once bound a
    chardev's path to check it, then unlinked it until the server bound it again, so a
    client that saw the file could find it gone), a chardev no monitor serves still takes
    connections, both files have QSD's mode, and both are removed at exit."""
    extra = ["--chardev", "socket,id=spare,path={dir}/spare.sock,server=on,wait=off"]
    seen: dict[str, list[object]] = {}
    with _both(extra, tmp_path) as peers:
        for kind, (_proc, workdir) in peers.items():
            row: list[object] = []
            for name in ("qmp.sock", "spare.sock"):
                path = workdir / name
                row.append(stat.S_IMODE(path.stat().st_mode) if path.is_socket() else None)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    client.settimeout(30)
                    client.connect(str(path))  # listening: a refusal or ENOENT fails here
            seen[kind] = row
    for kind in peers:
        workdir = tmp_path / kind
        seen[kind].append(sorted(p.name for p in workdir.glob("*.sock")))
    assert seen["txgraph"] == seen["qsd"]
    assert all(isinstance(mode, int) for mode in seen["qsd"][:2]) and seen["qsd"][2] == []


def _connected_becomes(proc: QMPProcess, want: bool) -> bool:
    """Poll ``/chardevs/spare``'s ``connected`` until it is ``want`` (deadline 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        got = proc.cmd("qom-get", {"path": "/chardevs/spare", "property": "connected"})
        if got == want or time.monotonic() > deadline:
            return bool(got)
        time.sleep(0.01)


def test_a_chardev_without_monitor_takes_clients_and_sees_them_go(tmp_path: Path) -> None:
    """A chardev no monitor serves accepts a client (``connected`` turns true, and what the
    client sends is not read by anyone), sees it hang up (false again), and then takes the
    next client, as QSD's socket chardev does."""
    extra = ["--chardev", "socket,id=spare,path={dir}/spare.sock,server=on,wait=off"]
    seen: dict[str, list[bool]] = {}
    with _both(extra, tmp_path) as peers:
        for kind, (proc, workdir) in peers.items():
            path = str(workdir / "spare.sock")
            row = [_connected_becomes(proc, False)]
            for _client in range(2):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    client.connect(path)
                    client.sendall(b"no frontend reads this\n")
                    row.append(_connected_becomes(proc, True))
                row.append(_connected_becomes(proc, False))
            seen[kind] = row
    assert seen["txgraph"] == seen["qsd"] == [False, True, False, True, False]
