"""`txgraph serve` end to end: the real qemu.qmp client, real sockets, bad input.

The server runs as a child process exactly as a user starts it; the client is
the unmodified ``qemu.qmp`` library QEMU's own tooling uses.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from txgraph.peers import TxgraphDaemon


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    with TxgraphDaemon(workdir=str(tmp_path)) as d:
        yield d


def test_socket_is_private(daemon: TxgraphDaemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o600


def test_qemu_qmp_client_runs_the_graph_commands(daemon: TxgraphDaemon, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", str(top)],
        check=True,
    )

    async def session() -> None:
        client = QMPClient("e2e")
        await client.connect(daemon.socket_path)
        try:
            version = await client.execute("query-version")
            assert version["qemu"]["major"] == 7
            names = {c["name"] for c in await client.execute("query-commands")}
            assert {
                "blockdev-add",
                "blockdev-del",
                "object-add",
                "object-del",
                "query-named-block-nodes",
                "x-debug-query-block-graph",
            } <= names
            await client.execute(
                "object-add",
                {"qom-type": "throttle-group", "id": "tg0", "limits": {"iops-total": 100}},
            )
            await client.execute(
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": "top",
                    "file": {"driver": "file", "filename": str(top)},
                },
            )
            nodes = await client.execute("query-named-block-nodes", {"flat": True})
            by_drv = sorted((n["drv"], n["ro"]) for n in nodes)
            assert by_drv == [("file", False), ("file", True), ("qcow2", False), ("qcow2", True)]
            graph = await client.execute("x-debug-query-block-graph")
            assert sorted(e["name"] for e in graph["edges"]) == ["backing", "file", "file"]
            with pytest.raises(ExecuteError) as err:
                await client.execute("blockdev-del", {"node-name": "nothere"})
            assert str(err.value) == "Failed to find node with node-name='nothere'"
            await client.execute("blockdev-del", {"node-name": "top"})
            assert await client.execute("query-named-block-nodes") == []
            await client.execute("object-del", {"id": "tg0"})
        finally:
            await client.disconnect()

    asyncio.run(session())


def test_bad_input_changes_nothing_and_the_server_keeps_serving(daemon: TxgraphDaemon) -> None:
    assert daemon.execute("blockdev-add", {"driver": "null-co", "node-name": "keep"}) == {
        "return": {}
    }
    before = daemon.execute("x-debug-query-block-graph")
    bad: list[bytes] = [
        b'{"execute": "blockdev-add", "arguments": {"driver": }}',  # malformed JSON
        b'{"execute": "no-such-command"}',
        b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "x", "bogus": 1}}',
        b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": 7}}',
        b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "#block1"}}',
        b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "keep"}}',
        b'{"execute": "blockdev-add", "arguments": {"driver": "file", "node-name": "f", "filename": "/nonexistent/x"}}',
        b"[1, 2, 3]",
    ]
    replies = [daemon.send_raw(chunk) for chunk in bad]
    assert all("error" in r for r in replies), replies
    descs = [r["error"]["desc"] for r in replies]
    assert descs[0].startswith("JSON parse error")
    assert "The command no-such-command has not been found" in descs
    assert "Parameter 'bogus' is unexpected" in descs
    assert "Invalid node-name: '#block1'" in descs
    assert "Duplicate nodes with node-name='keep'" in descs
    assert "Could not open '/nonexistent/x': No such file or directory" in descs
    assert daemon.execute("x-debug-query-block-graph") == before
    assert daemon.execute("query-version")["return"]["qemu"]["minor"] == 2
