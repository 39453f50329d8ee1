"""The qemu-storage-daemon peer's monitor is an inherited, connected socket.

``txgraph.peers.QSD`` hands the daemon one end of a socket pair (``--chardev
socket,id=qmp0,fd=N``) instead of connecting to a listening monitor while it starts,
the window in which a loaded daemon misread well-formed commands. These tests pin what
that must keep: the daemon listens on nothing unless asked, its monitor chardev is still
the connected ``chardev-socket`` ``qmp0`` the QOM differential compares, a command line
QSD refuses still reports QSD's own words, and a listening second monitor serves raw
clients beside the peer's own connection.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from txgraph.peers import QSD

pytestmark = pytest.mark.qsd


def _listening_unix_sockets(pid: int) -> set[str]:
    """Paths of the unix sockets process ``pid`` listens on (``/proc/net/unix``, state
    01 = listening, matched to the process by its socket inodes)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    paths = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes and fields[5] == "01":
            paths.add(fields[7])
    return paths


def test_the_monitor_is_a_connected_socket_and_nothing_listens() -> None:
    with QSD() as qsd:
        assert _listening_unix_sockets(qsd.proc.pid) == set()
        assert qsd.cmd("qom-get", {"path": "/chardevs/qmp0", "property": "connected"}) is True
        names = [p["name"] for p in qsd.cmd("qom-list", {"path": "/chardevs"})]
        assert names == ["type", "qmp0"]
        assert qsd.cmd("query-version")["qemu"]["major"] == 7


def test_a_refused_command_line_reports_the_daemon_s_error() -> None:
    with pytest.raises(RuntimeError) as caught:
        QSD(["--blockdev", "driver=nope,node-name=x"])
    text = str(caught.value)
    assert text == (
        "qemu-storage-daemon did not start (exit status 1): qemu-storage-daemon: --blockdev "
        "driver=nope,node-name=x: Parameter 'driver' does not accept value 'nope'"
    )


def test_a_listening_monitor_serves_raw_clients_beside_the_peer() -> None:
    with QSD(listen=True) as qsd:
        assert _listening_unix_sockets(qsd.proc.pid) == {qsd.listen_path}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(30)
            raw.connect(qsd.listen_path)
            stream = raw.makefile("rwb")
            assert "QMP" in json.loads(stream.readline())
            stream.write(b'{"execute": "qmp_capabilities"}{"execute": "query-version"}')
            stream.flush()
            assert json.loads(stream.readline()) == {"return": {}}
            assert "return" in json.loads(stream.readline())
        # the peer's own connection is untouched by the other client's session
        assert qsd.cmd("query-block-exports") == []
    with QSD() as plain, pytest.raises(RuntimeError, match="no listening monitor"):
        _ = plain.listen_path
