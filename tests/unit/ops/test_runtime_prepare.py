"""The Runtime's prepare/commit/abort split and its BlockBackends, on real image files.

QEMU's ``bdrv_reopen_prepare``/``_commit``/``_abort`` shape applied to every
data-plane change: a prepared driver object is real (it read the header, holds
an fd) but no request can reach it until ``apply`` publishes it; discarding it
closes its descriptor; a failing ``apply`` leaves prepared objects prepared
(the transaction's abort discards them) and the live ones as they were.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from pathlib import Path

import pytest

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import DriverNode
from txgraph.io.registry import DRIVERS, register
from txgraph.io.runtime import (
    CloseBackend,
    OpenBackend,
    OpenNode,
    ReopenNode,
    Runtime,
    SetChild,
)

if "x-test-fill" not in DRIVERS:

    @register("x-test-fill")
    class _Fill(DriverNode):
        """Every byte reads as the ``fill`` option (tells nodes apart in the stress test)."""

        driver_name = "x-test-fill"

        def read(self, offset: int, length: int) -> bytes:
            return bytes([int(self.options["fill"])]) * length

        def write(self, offset: int, data: bytes) -> None:
            raise IOFailure("read-only test node", errno.EROFS)

        def size(self) -> int:
            return 4096


def _fds_on(path: Path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return n


@pytest.fixture
def img(tmp_path: Path) -> Path:
    path = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    return path


def test_prepared_node_is_real_but_unreachable_until_apply(img: Path) -> None:
    rt = Runtime()
    info = rt.prepare_open(OpenNode("f", "file", {"filename": str(img)}))
    assert info.virtual_size > 0 and _fds_on(img) >= 1  # its fd (and the mapping's dup)
    rt.prepare_open(OpenNode("q", "qcow2", {}, {"file": "f"}))
    assert rt.info("q").format == "qcow2"  # header read through the prepared file
    assert not rt.has_node("f") and not rt.has_node("q") and rt.node_names() == []
    gen = rt.generation
    rt.apply([OpenNode("f", "file"), OpenNode("q", "qcow2")])
    assert rt.has_node("q") and rt.generation == gen + 1 and not rt.is_prepared("q")
    rt.close_all()
    assert _fds_on(img) == 0


def test_discard_closes_the_prepared_descriptor(img: Path) -> None:
    rt = Runtime()
    rt.prepare_open(OpenNode("f", "file", {"filename": str(img)}))
    assert _fds_on(img) >= 1
    rt.discard_prepared("f")
    assert _fds_on(img) == 0 and rt.state() == ()


def test_failed_apply_keeps_prepared_objects_prepared_and_live_ones_unchanged(img: Path) -> None:
    rt = Runtime()
    rt.open_node("n", "null-co", {"size": 1 << 20}, {}, False)
    rt.open_node("r", "raw", {}, {"file": "n"}, False)
    rt.prepare_open(OpenNode("f", "file", {"filename": str(img)}))
    before, drains = rt.state(), rt.drain_count
    with pytest.raises(KeyError):
        rt.apply(
            [OpenNode("f", "file"), SetChild("r", "file", "f"), SetChild("r", "file", "missing")]
        )
    assert rt.state() == before and rt.is_prepared("f") and rt.drain_count == drains + 1
    assert rt.node("r").children["file"].node_name == "n"
    rt.discard_prepared("f")
    rt.close_all()


def test_reopen_prepare_validates_without_changing_the_driver(tmp_path: Path) -> None:
    rt = Runtime()
    rt.open_node("n", "null-co", {"size": 1 << 20}, {}, False)
    rt.open_node("r", "raw", {}, {"file": "n"}, False)
    with pytest.raises(OpenError, match="cannot be greater than size"):
        rt.prepare_reopen("r", {"offset": 2 << 20}, False)
    assert rt.node("r").size() == 1 << 20
    rt.prepare_reopen("r", {"offset": 512 << 10}, False)
    assert rt.node("r").size() == 1 << 20  # validated only
    rt.apply([ReopenNode("r", {"offset": 512 << 10}, False)])
    assert rt.node("r").size() == 512 << 10


def test_backend_root_follows_the_delta_and_empties_with_enomedium() -> None:
    rt = Runtime()
    rt.open_node("a", "null-co", {"size": 1 << 20}, {}, False)
    rt.open_node("b", "null-co", {"size": 2 << 20}, {}, False)
    rt.apply([OpenBackend("bb"), SetChild("bb", "root", "a")])
    with rt.request():
        assert rt.backend_root("bb").node_name == "a"
    rt.apply([SetChild("bb", "root", "b")])
    assert rt.backend_root_name("bb") == "b"
    rt.apply([CloseBackend("bb")])
    with rt.request(), pytest.raises(IOFailure) as err:
        rt.backend_root("bb")
    assert err.value.errno == errno.ENOMEDIUM


def test_backend_retarget_stress_no_request_sees_a_mixed_graph() -> None:
    """Readers resolve the backend root inside ``request()`` while the root flips 400 times.

    Generation parity names the root (even: ``a``, odd: ``b``), so a request that
    resolved the root of one generation and ran in another would be caught.
    """
    rt = Runtime()
    rt.open_node("a", "x-test-fill", {"fill": 1}, {}, False)
    rt.open_node("b", "x-test-fill", {"fill": 2}, {}, False)
    # this apply makes generation g+1: pick the root that parity names
    rt.apply([OpenBackend("bb"), SetChild("bb", "root", "b" if rt.generation % 2 == 0 else "a")])
    assert rt.backend_root_name("bb") == ("a" if rt.generation % 2 == 0 else "b")
    stop = threading.Event()
    bad: list[str] = []
    served = [0]

    def reader() -> None:
        while not stop.is_set():
            with rt.request() as gen:
                data = rt.backend_root("bb").read(0, 1)
            if data != (b"\x01" if gen % 2 == 0 else b"\x02"):
                bad.append(f"generation {gen} read {data!r}")
            served[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(400):
            nxt = "b" if rt.backend_root_name("bb") == "a" else "a"
            rt.apply([SetChild("bb", "root", nxt)])
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert bad == [] and served[0] > 0
