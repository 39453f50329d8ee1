"""`txgraph proxy` in front of a real qemu-storage-daemon, driven by the `qemu.qmp` library.

QSD serves the seed's state (a qcow2 disk over its backing chain, exported as
``vm0``) on two monitors: the proxy's upstream, and the test's own connection
to look at QSD's graph behind the proxy. The proxy runs as a child process,
as users run it; it and QSD are stopped on every exit path.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from tests.support.qsd import QSD
from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.plan.format import load_json

pytestmark = pytest.mark.qsd


@pytest.fixture
def proxied(images: Path, tmp_path: Path) -> Iterator[tuple[QSD, str]]:
    make_images(images)
    upstream = str(tmp_path / "up.sock")
    listen = str(tmp_path / "proxy.sock")
    extra = ["--chardev", f"socket,id=up,path={upstream},server=on,wait=off", "--monitor", "up"]
    with QSD(extra, workdir=str(images)) as qsd:
        for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
            assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg
        proc = subprocess.Popen(
            [sys.executable, "-m", "txgraph.cli", "proxy", "--listen", listen,
             "--upstream", upstream, "--policy", "safe"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            # the socket file appears at bind(), a moment before listen(): wait for a connect
            while not _accepts(listen):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.02)
            yield qsd, listen
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def _accepts(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except ConnectionRefusedError:
            return False
    return True


async def _client(path: str) -> QMPClient:
    qmp = QMPClient("test")
    await asyncio.wait_for(qmp.connect(path), 30)
    return qmp


def _graph(qsd: QSD) -> Any:
    return qsd.cmd("x-debug-query-block-graph")


def test_unsafe_refused_safe_forwarded(proxied: tuple[QSD, str], images: Path) -> None:
    qsd, path = proxied
    backing = next(
        n["node-name"]
        for n in qsd.cmd("query-named-block-nodes", {"flat": True})
        if n["node-name"].startswith("#block")
    )

    async def script() -> None:
        qmp = await _client(path)
        try:
            version = await qmp.execute("query-version")
            assert version == qsd.cmd("query-version")
            before = _graph(qsd)
            # the backing cut under the exported disk: QEMU accepts it, the guest loses data
            with pytest.raises(ExecuteError) as refused:
                await qmp.execute(
                    "blockdev-reopen",
                    {"options": [{"driver": "qcow2", "node-name": "disk", "file": "disk-file",
                                  "backing": None}]},
                )  # fmt: skip
            assert refused.value.error_class == "GenericError"
            assert str(refused.value).startswith("txgraph refused blockdev-reopen (S")
            assert _graph(qsd) == before  # never reached QSD
            names = {n["node-name"] for n in qsd.cmd("query-named-block-nodes")}
            assert backing in names
            # a safe command is forwarded and the mirror agrees with QSD afterwards
            added = await qmp.execute(
                "blockdev-add", {"driver": "null-co", "node-name": "n0", "size": 1 << 20}
            )
            assert added == {}
            assert "n0" in {n["node-name"] for n in qsd.cmd("query-named-block-nodes")}
            check = await qmp.execute("x-txgraph-proxy-check")
            assert check == {"agrees": True, "differences": [], "policy": "safe"}
            # QEMU's own refusal passes through unchanged
            with pytest.raises(ExecuteError) as qemu_error:
                await qmp.execute("blockdev-del", {"node-name": "disk"})
            assert str(qemu_error.value) == "Node disk is in use"
            assert qmp.events.empty()  # no drift
        finally:
            await qmp.disconnect()

    asyncio.run(script())


def test_drift_behind_the_proxy_is_an_event(proxied: tuple[QSD, str]) -> None:
    qsd, path = proxied

    async def script() -> None:
        qmp = await _client(path)
        try:
            # another monitor changes QSD's graph: the mirror does not know it
            qsd.cmd("blockdev-add", {"driver": "null-co", "node-name": "intruder"})
            await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "n1"})
            event = await asyncio.wait_for(qmp.events.get(), 30)
            assert event["event"] == "X_TXGRAPH_DRIFT"
            assert event["data"]["command"] == "blockdev-add"
            assert any("intruder" in d for d in event["data"]["differences"])
            # re-synchronised: the mirror agrees again
            check = await qmp.execute("x-txgraph-proxy-check")
            assert check["agrees"] is True
        finally:
            await qmp.disconnect()

    asyncio.run(script())


def test_negotiation_rules_as_qemu(proxied: tuple[QSD, str]) -> None:
    import json

    _qsd, path = proxied
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(path)
        f = sock.makefile("rwb")
        assert "QMP" in json.loads(f.readline())
        f.write(b'{"execute": "query-version", "id": 1}\n')
        f.flush()
        assert json.loads(f.readline()) == {
            "id": 1,
            "error": {
                "class": "CommandNotFound",
                "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
            },
        }
        f.write(b'{"execute": "qmp_capabilities"}{"execute": "query-block", "id": "x"}\n')
        f.flush()
        assert json.loads(f.readline()) == {"return": {}}
        assert json.loads(f.readline()) == {"return": [], "id": "x"}


def test_stress_several_clients(proxied: tuple[QSD, str]) -> None:
    """Four clients at once, each adding, querying and deleting its own nodes."""
    qsd, path = proxied
    before = _graph(qsd)

    async def worker(index: int) -> list[str]:
        qmp = await _client(path)
        try:
            for round_ in range(6):
                name = f"c{index}r{round_}"
                await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": name})
                nodes = await qmp.execute("query-named-block-nodes")
                assert name in {n["node-name"] for n in nodes}
                await qmp.execute("blockdev-del", {"node-name": name})
            drifts = []
            while not qmp.events.empty():
                drifts.append(str(qmp.events.get_nowait()))
            return drifts
        finally:
            await qmp.disconnect()

    async def script() -> None:
        results = await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(4))), 240)
        assert results == [[], [], [], []]
        qmp = await _client(path)
        try:
            assert (await qmp.execute("x-txgraph-proxy-check"))["agrees"] is True
        finally:
            await qmp.disconnect()

    asyncio.run(script())
    assert _graph(qsd) == before
