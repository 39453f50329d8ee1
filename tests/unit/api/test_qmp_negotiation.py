"""The test peers' QMP negotiation survives a server that loses or delays its first reply.

Twice in loaded runs a qemu-storage-daemon greeted and then never answered
``qmp_capabilities`` (120 s). :class:`txgraph.peers.QMPProcess` sends it again with
a new id while no reply comes, and then syncs on a ``query-version`` of its own,
so a late reply to the first send cannot be taken for the next command's. The
server here is a real process on a real unix socket that misbehaves on purpose:
it drops the first command, or answers it only after the second arrived.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from txgraph.peers import QMPProcess

pytestmark = pytest.mark.timeout(60)

_SERVER = r"""
import json, socket, sys
path, mode = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
conn, _ = srv.accept()
def send(msg):
    conn.sendall(json.dumps(msg).encode() + b"\r\n")
send({"QMP": {"version": {}, "capabilities": []}})
buf, dec, seen = "", json.JSONDecoder(), 0
while True:
    data = conn.recv(4096)
    if not data:
        break
    buf += data.decode()
    while buf.strip():
        msg, end = dec.raw_decode(buf.lstrip())
        buf = buf.lstrip()[end:]
        if msg["execute"] == "qmp_capabilities":
            seen += 1
            if mode == "drop" and seen == 1:
                continue  # the lost first command
            if mode == "late" and seen == 1:
                continue  # answered below, once the second came
            if mode == "late" and seen == 2:
                send({"return": {}, "id": 1})
                send({"error": {"class": "CommandNotFound",
                                "desc": "Capabilities negotiation is already complete, "
                                        "command ignored"}, "id": 2})
                continue
            send({"return": {}, "id": msg.get("id")})
        elif msg["execute"] == "query-version":
            send({"return": {"qemu": {}}, "id": msg.get("id")})
        else:
            send({"return": {"echo": msg["execute"]}})
"""


class _Peer(QMPProcess):
    label = "misbehaving QMP server"
    negotiate_retry = 0.3


@pytest.mark.parametrize("mode", ["drop", "late", "prompt"])
def test_negotiation_survives_a_lost_or_late_first_reply(mode: str) -> None:
    tmp = tempfile.mkdtemp(prefix="txneg-")
    path = str(Path(tmp) / "qmp.sock")
    peer = _Peer([sys.executable, "-c", _SERVER, path, mode], path, tmp, None)
    try:
        # the stream is clean: the next reply is this command's, not a stale one
        assert peer.execute("query-status") == {"return": {"echo": "query-status"}}
    finally:
        peer.proc.kill()
        peer._abandon()
