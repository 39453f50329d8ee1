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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from tests.support.qsd import QSD
from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.plan.format import load_json

pytestmark = pytest.mark.qsd


#: the backing cut under the exported disk: QEMU accepts it, the guest then reads zeros
_CUT = {"driver": "qcow2", "node-name": "disk", "file": "disk-file", "backing": None}


@contextmanager
def _proxy(listen: str, upstream: str, policy: str) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "txgraph.cli", "proxy", "--listen", listen,
         "--upstream", upstream, "--policy", policy],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # the socket file appears at bind(), a moment before listen(): wait for a connect
        while not _accepts(listen):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.02)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def proxied(images: Path, tmp_path: Path) -> Iterator[tuple[QSD, str]]:
    make_images(images)
    upstream = str(tmp_path / "up.sock")
    listen = str(tmp_path / "proxy.sock")
    extra = ["--chardev", f"socket,id=up,path={upstream},server=on,wait=off", "--monitor", "up"]
    with QSD(extra, workdir=str(images)) as qsd:
        for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
            assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg
        with _proxy(listen, upstream, "safe"):
            yield qsd, listen


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
                await qmp.execute("blockdev-reopen", {"options": [_CUT]})
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
            assert event["data"]["when"] == "before"
            assert any("intruder" in d for d in event["data"]["differences"])
            # re-synchronised before the command was judged: it went as predicted
            check = await qmp.execute("x-txgraph-proxy-check")
            assert check["agrees"] is True
            assert qmp.events.empty()
        finally:
            await qmp.disconnect()

    asyncio.run(script())


def _raw_session(path: str, lines: list[bytes]) -> list[Any]:
    """The greeting and one answer per line, read from a fresh raw connection."""
    import json

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(path)
        f = sock.makefile("rwb")
        out = [json.loads(f.readline())]
        for line in lines:
            f.write(line + b"\n")
            f.flush()
            out.append(json.loads(f.readline()))
        return out


#: negotiation, ids and the oob rules, exactly as QSD answers them
_WIRE = [
    b'{"execute": "query-version", "id": 1}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
    b'{"execute": "qmp_capabilities"}',
    b'{"exec-oob": "query-version", "id": "o"}',
    b'{"execute": "query-block", "id": {"a": [1]}}',
    b'{"execute": "query-version", "id": 2, "control": {}}',
    b'{"execute": "no-such-command", "id": 3}',
]
_WIRE_NO_OOB = [b'{"execute": "qmp_capabilities"}', b'{"exec-oob": "query-version", "id": 4}']


def test_wire_rules_as_qsd(proxied: tuple[QSD, str], tmp_path: Path) -> None:
    _qsd, path = proxied
    sock = str(tmp_path / "plain.sock")
    extra = ["--chardev", f"socket,id=p,path={sock},server=on,wait=off", "--monitor", "p"]
    with QSD(extra) as plain:
        assert plain.cmd("query-version")  # up and listening on its second monitor too
        for lines in (_WIRE, _WIRE_NO_OOB):
            assert _raw_session(path, lines) == _raw_session(sock, lines)
    greeting = _raw_session(path, [])[0]
    assert greeting["QMP"]["capabilities"] == ["oob"]


def test_policy_qemu_forwards_what_safe_refuses(images: Path, tmp_path: Path) -> None:
    make_images(images)
    upstream = str(tmp_path / "up.sock")
    listen = str(tmp_path / "proxy.sock")
    extra = ["--chardev", f"socket,id=up,path={upstream},server=on,wait=off", "--monitor", "up"]
    with QSD(extra, workdir=str(images)) as qsd, _proxy(listen, upstream, "qemu"):
        for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
            assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg

        async def script() -> None:
            qmp = await _client(listen)
            try:
                # the state was built behind the proxy (it started on an empty QSD)
                check = await qmp.execute("x-txgraph-proxy-check")
                assert check["agrees"] is False
                assert (
                    "nodes only in right: ['#block0', '#block1', 'disk', 'disk-file']"
                    in check["differences"]
                )
                await qmp.execute("blockdev-reopen", {"options": [_CUT]})
                check = await qmp.execute("x-txgraph-proxy-check")
                assert check == {"agrees": True, "differences": [], "policy": "qemu"}
                assert qmp.events.empty()  # the prediction held
            finally:
                await qmp.disconnect()

        asyncio.run(script())
        disk = next(n for n in qsd.cmd("query-named-block-nodes") if n["node-name"] == "disk")
        assert "backing_file" not in disk or disk.get("backing_file_depth") == 0


def test_stress_several_clients(proxied: tuple[QSD, str]) -> None:
    """Four clients at once, each adding, querying and deleting its own nodes, with a
    refused command each in between: every reply as expected, no drift, QSD's graph as
    it was, and the mirror agreeing with it at the end."""
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
                if round_ == index:  # refusals interleave with the others' commands
                    with pytest.raises(ExecuteError, match="txgraph refused blockdev-reopen"):
                        await qmp.execute("blockdev-reopen", {"options": [_CUT]})
            drifts = []
            while not qmp.events.empty():
                drifts.append(str(await qmp.events.get()))
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


def test_qemu_events_pass_through(proxied: tuple[QSD, str]) -> None:
    """QSD's own events reach the proxy's clients unchanged (block-export-del's
    BLOCK_EXPORT_DELETED), and the mirror follows the export's removal."""
    qsd, path = proxied

    async def script() -> None:
        qmp = await _client(path)
        try:
            await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"})
            await qmp.execute("block-export-add", {"type": "nbd", "id": "e1", "node-name": "n0"})
            await qmp.execute("block-export-del", {"id": "e1"})
            event = await asyncio.wait_for(qmp.events.get(), 30)
            assert event["event"] == "BLOCK_EXPORT_DELETED"
            assert event["data"] == {"id": "e1"}
            assert (await qmp.execute("x-txgraph-proxy-check"))["agrees"] is True
            assert qmp.events.empty()  # no drift
        finally:
            await qmp.disconnect()

    asyncio.run(script())
    assert [e["id"] for e in qsd.cmd("query-block-exports")] == ["vm0"]


def test_upstream_gone_is_a_qmp_error(proxied: tuple[QSD, str]) -> None:
    """QEMU dies under the proxy: its clients get GenericErrors, never a Python text,
    and the proxy still answers (and stops cleanly at the end of the fixture)."""
    qsd, path = proxied

    async def script() -> None:
        qmp = await _client(path)
        try:
            qsd.proc.kill()
            qsd.proc.wait(20)
            for command, arguments in (
                ("query-version", None),
                ("blockdev-add", {"driver": "null-co", "node-name": "n0"}),
                ("x-txgraph-proxy-check", None),
            ):
                with pytest.raises(ExecuteError) as gone:
                    await qmp.execute(command, arguments)
                assert gone.value.error_class == "GenericError"
                assert "The upstream QEMU went away" in str(gone.value), str(gone.value)
        finally:
            await qmp.disconnect()

    asyncio.run(script())


def test_commands_txgraph_does_not_model(proxied: tuple[QSD, str], images: Path) -> None:
    """block_resize changes an image txgraph cannot dry-run: refused under safe. A dirty
    bitmap leaves the graph alone: forwarded, QSD's answer passed on, no drift."""
    qsd, path = proxied

    async def script() -> None:
        qmp = await _client(path)
        try:
            with pytest.raises(ExecuteError, match="txgraph refused block_resize: txgraph does"):
                await qmp.execute("block_resize", {"node-name": "disk", "size": 128 << 20})
            await qmp.execute("block-dirty-bitmap-add", {"node": "disk", "name": "b0"})
            with pytest.raises(ExecuteError) as dup:
                await qmp.execute("block-dirty-bitmap-add", {"node": "disk", "name": "b0"})
            assert str(dup.value) == "Bitmap already exists: b0"
            assert (await qmp.execute("x-txgraph-proxy-check"))["agrees"] is True
            assert qmp.events.empty()
        finally:
            await qmp.disconnect()

    asyncio.run(script())
    disk = next(n for n in qsd.cmd("query-named-block-nodes") if n["node-name"] == "disk")
    assert disk["image"]["virtual-size"] == 64 << 20  # not resized
    assert [b["name"] for b in disk["dirty-bitmaps"]] == ["b0"]


def test_no_upstream_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    res = subprocess.run(
        [sys.executable, "-m", "txgraph.cli", "proxy", "--listen", str(tmp_path / "p.sock"),
         "--upstream", str(missing)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 1
    assert res.stderr == (
        f"Error: cannot connect to the upstream QMP socket {missing}: No such file or directory\n"
    )
    assert not (tmp_path / "p.sock").exists()
