"""QEMU 7.2's streamer limits at full size, against qemu-storage-daemon (slow: opt-in).

The token count limit (2**21) needs megabytes on the wire, which QSD reads
slowly (about 30 s per case); set ``TXGRAPH_QMP_LIMITS=1`` to run them. The
64 MiB token size limit would take QSD a quarter of an hour per case, so it is
checked in-process only (tests/unit/qmp/test_qobject_limits.py, which also
covers the order of the checks); nesting (1024) is in test_qmp_wire.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.differential.test_malformed_qmp import Conn
from tests.support.qmp_server import ServerThread
from tests.support.qsd import QSD

pytestmark = [
    pytest.mark.qsd,
    pytest.mark.skipif(
        os.environ.get("TXGRAPH_QMP_LIMITS") != "1", reason="long run: set TXGRAPH_QMP_LIMITS=1"
    ),
]

CASES = {
    "count-exceeded-by-a-comma": b"[" + b"1," * 1048576 + b"]",
    "count-exceeded-by-the-closing-bracket": b"[" + b"1," * 1048575 + b"1]",
    "count-just-inside": b"[" + b"1," * 1048574 + b"1]",
}


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    qsd = QSD(listen=True)
    qsd._file.close()
    qsd.sock.close()
    txg = ServerThread(str(tmp_path_factory.mktemp("limits") / "txgraph.sock"))
    yield qsd.listen_path, txg.path
    txg.stop()
    qsd.close()


@pytest.mark.parametrize("name", list(CASES))
def test_limit_replies_match_qsd(peers: tuple[str, str], name: str) -> None:
    replies = []
    for path in peers:
        conn = Conn(path)
        try:
            replies.append(conn.exchange(CASES[name]))
        finally:
            conn.close()
    assert replies[1] == replies[0]
    assert len(replies[0]) < 10
