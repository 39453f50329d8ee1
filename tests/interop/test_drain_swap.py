"""Drained atomic swap under live NBD I/O (reference/qemu-graph.md §6).

A throttle filter is inserted into and removed from the middle of an
exported chain 1,000 times while checksummed writers and readers (txgraph's
NBD client in threads, plus qemu-io processes) hammer the export. The chain::

    export -> fmt(raw) -> pA(probe) -> [thr_k(throttle) -> mark_k] -> pB(probe) -> data(file)

Two probes check every request: ``pA`` notes the thread's entry, ``mark_k``
flags that the request went through the filter, ``pB`` checks that (1) the
Runtime's generation is still the one the request started in and (2) the path
the request took is the one that generation's graph has (filter present in
odd generations). A swap that is not atomic — an edge moved under a running
request — breaks (1) or (2); ``test_the_check_catches_a_non_atomic_swap``
proves the check fires when the drain is switched off.
"""

from __future__ import annotations

import contextlib
import random
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from nbd_support import run

from txgraph.io.driver import BlockStatus, DriverNode
from txgraph.io.nbd.client import NbdClient
from txgraph.io.nbd.server import NbdServer
from txgraph.io.registry import register
from txgraph.io.runtime import CloseNode, OpenNode, Runtime, SetChild

BLOCK = 4096
BLOCKS = 224  # checksummed area: blocks 0..223 (896 KiB)
QIO_W = 224 * BLOCK  # qemu-io writes pattern 0x3c here (64 KiB)
QIO_R = 240 * BLOCK  # and reads a fixed 0xa5 region here (64 KiB)
SIZE = 256 * BLOCK
_tl = threading.local()


class _Probe(DriverNode):
    """Pass-through filter over ``file`` used only to observe requests."""

    runtime: Runtime | None = None
    violations: list[str]
    sleep = 0.0

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        self.violations = []
        self.counts = [0, 0]

    def _enter(self) -> None: ...

    def _around(self, fn: Any, *args: Any, **kw: Any) -> Any:
        self._enter()
        return fn(*args, **kw)

    def read(self, offset: int, length: int) -> bytes:
        return self._around(lambda: self.children["file"].read(offset, length))  # type: ignore[no-any-return]

    def write(self, offset: int, data: bytes) -> None:
        self._around(lambda: self.children["file"].write(offset, data))

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self._around(
            lambda: self.children["file"].write_zeroes(offset, length, may_unmap=may_unmap)
        )

    def flush(self) -> None:
        self._around(lambda: self.children["file"].flush())

    def size(self) -> int:
        return self.children["file"].size()

    def block_status(self, offset: int, length: int) -> BlockStatus:
        return self._around(lambda: self.children["file"].block_status(offset, length))  # type: ignore[no-any-return]


@register("x-test-probe-top")
class _Top(_Probe):
    def _around(self, fn: Any, *args: Any, **kw: Any) -> Any:
        _tl.via = False
        _tl.seen = True
        if self.sleep:
            time.sleep(self.sleep)  # widen the window a broken swap would hit
        return fn()


@register("x-test-mark")
class _Mark(_Probe):
    def _around(self, fn: Any, *args: Any, **kw: Any) -> Any:
        _tl.via = True
        return fn()


@register("x-test-probe-bottom")
class _Bottom(_Probe):
    base_gen = 0

    def _around(self, fn: Any, *args: Any, **kw: Any) -> Any:
        rt = self.runtime
        assert rt is not None
        entry = rt.request_generation()
        if entry is None or not getattr(_tl, "seen", False):
            self.violations.append("request outside a Runtime.request() bracket")
        else:
            now = rt.generation
            expect_filter = (entry - self.base_gen) % 2 == 1
            via = bool(getattr(_tl, "via", False))
            if now != entry:
                self.violations.append(f"generation moved from {entry} to {now} mid-request")
            elif via != expect_filter:
                self.violations.append(
                    f"generation {entry}: filter={expect_filter} but "
                    f"request went {'through' if via else 'around'} it"
                )
            self.counts[via] += 1
        _tl.seen = False
        return fn()


def _block(b: int, seq: int) -> bytes:
    rng = random.Random(b * 1_000_003 + seq)
    payload = rng.randbytes(BLOCK - 12)
    return struct.pack(">III", b, seq, zlib.crc32(payload)) + payload


class _Rig:
    def __init__(self, tmp: Path, runtime: Runtime) -> None:
        self.image = tmp / "data.raw"
        base = bytearray(SIZE)
        for b in range(BLOCKS):
            base[b * BLOCK : (b + 1) * BLOCK] = _block(b, 0)
        base[QIO_R : QIO_R + 65536] = b"\xa5" * 65536
        self.image.write_bytes(bytes(base))
        rt = self.rt = runtime
        rt.throttle_groups.add("tg", {"iops-total": 4000, "bps-total": 64 << 20})
        rt.open_node("data", "file", {"filename": str(self.image)}, {}, False)
        rt.open_node("pB", "x-test-probe-bottom", {}, {"file": "data"}, False)
        rt.open_node("pA", "x-test-probe-top", {}, {"file": "pB"}, False)
        rt.open_node("fmt", "raw", {}, {"file": "pA"}, False)
        self.top = rt.node("pA")
        self.bottom = rt.node("pB")
        assert isinstance(self.top, _Top) and isinstance(self.bottom, _Bottom)
        self.bottom.runtime = rt
        self.bottom.base_gen = rt.generation
        self.server = NbdServer(rt)
        self.sock = str(tmp / "nbd.sock")
        self.server.start({"type": "unix", "path": self.sock})
        self.server.add_export("disk", "fmt", True)
        self.acked = [0] * BLOCKS
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.ops = 0

    @property
    def addr(self) -> dict[str, str]:
        return {"type": "unix", "path": self.sock}

    def swap(self, cycles: int, dwell: float = 0.0005) -> None:
        """Insert and remove the throttle filter ``cycles`` times.

        ``dwell`` lets requests run in each graph; back-to-back drains would
        starve them (the drain is writer-preferring) and test only one shape.
        """
        for k in range(cycles):
            self.rt.apply(
                [
                    OpenNode(f"mark{k}", "x-test-mark", {}, {"file": "pB"}),
                    OpenNode(f"thr{k}", "throttle", {"throttle-group": "tg"}, {"file": f"mark{k}"}),
                    SetChild("pA", "file", f"thr{k}"),
                ]
            )
            time.sleep(dwell)
            self.rt.apply(
                [SetChild("pA", "file", "pB"), CloseNode(f"thr{k}"), CloseNode(f"mark{k}")]
            )
            time.sleep(dwell)

    def writer(self, w: int, nw: int) -> None:
        rng = random.Random(w)
        mine = list(range(w, BLOCKS, nw))
        try:
            with NbdClient(self.addr, "disk") as c:
                while not self.stop.is_set():
                    b = rng.choice(mine)
                    seq = self.acked[b] + 1
                    c.write(b * BLOCK, _block(b, seq), fua=rng.random() < 0.1)
                    self.acked[b] = seq  # acknowledged by the server
                    self.ops += 1
                    if rng.random() < 0.02:
                        c.flush()
        except Exception as e:
            self.errors.append(f"writer {w}: {e!r}")

    def reader(self, r: int) -> None:
        rng = random.Random(100 + r)
        try:
            with NbdClient(self.addr, "disk", structured=bool(r % 2)) as c:
                while not self.stop.is_set():
                    b = rng.randrange(BLOCKS)
                    floor = self.acked[b]
                    data = c.read(b * BLOCK, BLOCK)
                    idx, seq, crc = struct.unpack_from(">III", data)
                    if idx != b or zlib.crc32(data[12:]) != crc:
                        self.errors.append(f"block {b}: torn or misplaced data")
                    elif seq < floor:
                        self.errors.append(f"block {b}: read seq {seq} after seq {floor} was acked")
                    self.ops += 1
        except Exception as e:
            self.errors.append(f"reader {r}: {e!r}")

    def qemu_io_loop(self) -> None:
        uri = f"nbd+unix:///disk?socket={self.sock}"
        while not self.stop.is_set():
            res = run(
                "qemu-io",
                "-f",
                "raw",
                "-c",
                f"write -P 0x3c {QIO_W} 65536",
                "-c",
                f"read -P 0x3c {QIO_W} 65536",
                "-c",
                f"read -P 0xa5 {QIO_R} 65536",
                uri,
                check=False,
            )
            if res.returncode or "Pattern verification failed" in res.stdout:
                self.errors.append(f"qemu-io: {res.stdout}{res.stderr}")
                return

    def close(self) -> None:
        if self.server.running:
            self.server.stop()
        self.rt.close_all()


@contextlib.contextmanager
def _workload(
    rig: _Rig, writers: int = 3, readers: int = 3, qemu_io: bool = True
) -> Iterator[None]:
    threads = [threading.Thread(target=rig.writer, args=(w, writers)) for w in range(writers)]
    threads += [threading.Thread(target=rig.reader, args=(r,)) for r in range(readers)]
    if qemu_io:
        threads.append(threading.Thread(target=rig.qemu_io_loop))
    for t in threads:
        t.start()
    try:
        time.sleep(0.05)
        yield
    finally:
        rig.stop.set()
        for t in threads:
            t.join(30)


def test_throttle_insert_remove_1000_times_under_nbd_io(tmp_path: Path) -> None:
    rig = _Rig(tmp_path, Runtime())
    try:
        start = time.monotonic()
        with _workload(rig):
            rig.swap(1000)
        elapsed = time.monotonic() - start
        assert rig.errors == []
        assert rig.bottom.violations == []
        through, around = rig.bottom.counts[1], rig.bottom.counts[0]
        assert through > 100 and around > 100, (through, around)
        assert rig.rt.generation == rig.bottom.base_gen + 2000
        assert not any(n.startswith(("thr", "mark")) for n in rig.rt.node_names())
        assert rig.rt.throttle_groups.get("tg").members == set()  # type: ignore[union-attr]
        # No acknowledged write was lost: the export and the file hold exactly the last
        # acknowledged version of every block (qemu-img compare as the independent reader).
        expected = bytearray(rig.image.read_bytes())
        for b in range(BLOCKS):
            expected[b * BLOCK : (b + 1) * BLOCK] = _block(b, rig.acked[b])
        expected[QIO_W : QIO_W + 65536] = b"\x3c" * 65536
        ref = tmp_path / "expected.raw"
        ref.write_bytes(bytes(expected))
        out = run(
            "qemu-img",
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            str(ref),
            f"nbd+unix:///disk?socket={rig.sock}",
        ).stdout
        assert "Images are identical" in out
        print(
            f"2000 swaps in {elapsed:.2f}s, {rig.ops} NBD requests, "
            f"{through} through the filter, {around} around it"
        )
    finally:
        rig.close()
    assert rig.image.read_bytes() == bytes(expected)


class _NoDrainRuntime(Runtime):
    """A deliberately broken Runtime: graph changes do not wait for requests."""

    @contextlib.contextmanager
    def drained(self) -> Iterator[None]:
        yield


def test_the_check_catches_a_non_atomic_swap(tmp_path: Path) -> None:
    rig = _Rig(tmp_path, _NoDrainRuntime())
    rig.top.sleep = 0.0005
    try:
        with _workload(rig, writers=2, readers=2, qemu_io=False):
            deadline = time.monotonic() + 5
            while not rig.bottom.violations and time.monotonic() < deadline:
                rig.swap(20)
    finally:
        rig.close()
    assert rig.bottom.violations, "the atomicity check is blind: it passed without a drain"


@pytest.mark.parametrize("n", [1])
def test_swap_waits_for_a_throttled_request(tmp_path: Path, n: int) -> None:
    """A request parked in the throttle queue is released by the drain, not waited out."""
    rig = _Rig(tmp_path, Runtime())
    try:
        # 1 byte/s: the second read would wait about 500 s, far beyond any deadline below
        rig.rt.throttle_groups.set_limits("tg", {"bps-total": 1})
        rig.rt.apply(
            [
                OpenNode("markx", "x-test-mark", {}, {"file": "pB"}),
                OpenNode("thrx", "throttle", {"throttle-group": "tg"}, {"file": "markx"}),
                SetChild("pA", "file", "thrx"),
            ]
        )
        with NbdClient(rig.addr, "disk") as c:
            c.read(0, 512)  # fills the bucket
            t = threading.Thread(target=c.read, args=(0, 512), daemon=True)
            t.start()
            group = rig.rt.throttle_groups.get("tg")
            assert group is not None
            deadline = time.monotonic() + 60
            while not group._queues[False]:  # the second read now waits in the group
                assert time.monotonic() < deadline, "the second read never reached the throttle"
                time.sleep(0.005)
            swap = threading.Thread(
                target=rig.rt.apply,
                daemon=True,
                args=([SetChild("pA", "file", "pB"), CloseNode("thrx"), CloseNode("markx")],),
            )
            swap.start()
            swap.join(60)
            assert not swap.is_alive(), "the swap waited for the throttle schedule"
            t.join(60)
            assert not t.is_alive()
        assert rig.bottom.violations == []
    finally:
        rig.close()
