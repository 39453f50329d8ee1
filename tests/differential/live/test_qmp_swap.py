"""Graph changes over QMP to ``txgraph serve`` while guests hammer its NBD export.

The QMP-level form of ``tests/interop/test_drain_swap.py``: the real commands a user
sends, to the real daemon process, while checksummed writers and readers run
through the export it serves. The chain::

    export e0 -> fmt (raw) -> [filter] -> top (qcow2) -> ... -> hd0 (qcow2) -> file

Each round inserts a throttle filter between ``fmt`` and the active qcow2 layer and
removes it again, alternating the QEMU way (``blockdev-add`` + ``blockdev-reopen`` of
``fmt``'s ``file``; back, then ``blockdev-del``) and the txgraph way
(``x-txgraph-insert-filter`` / ``x-txgraph-remove-filter``); every ``SNAP_EVERY``
rounds a ``blockdev-snapshot-sync`` puts a new overlay on top. Meanwhile three
writer threads and three reader threads (NBD clients) and a ``qemu-io`` loop use
the export.

Checked: every QMP command succeeds; ``x-txgraph-query-generation`` advances with
each change and an insert+remove pair leaves the graph (``x-debug-query-block-graph``:
nodes, edges, permissions) as it was; no
writer or reader error (every write and read is served, whatever graph it meets);
no torn block (each 4 KiB block carries its index, a sequence number and a CRC) and
no acknowledged write lost (a reader never sees a sequence older than one already
acknowledged; at the end the export and, after shutdown, the image chain hold
exactly the last acknowledged version of every block, compared by ``qemu-img
compare``); ``qemu-img check`` clean on every image.

Not checkable from outside: *which graph generation served a request*. The
Runtime's per-request probe (``Runtime.request_generation``) lives inside the server
process and neither QMP nor NBD exposes it, so "no request served by a mixed graph"
is shown only indirectly here (a mixed graph would show as a refused or misplaced
request, a torn block or a lost write); the in-process probe of test_drain_swap.py
remains the direct check.

Rounds: ``TXGRAPH_QMP_SWAP_ROUNDS`` (default 40, a few seconds; the issue's run is
1000). The snapshot test takes a snapshot every round, up to
``MAX_SNAPSHOTS``; ``TXGRAPH_QMP_SWAP_SNAP_EVERY=0`` turns its snapshots off.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from tests.differential.harness import canon_graph
from tests.support.guest_io import nbd_uri
from txgraph.io.nbd.client import NbdClient
from txgraph.peers import TxgraphDaemon

BLOCK = 4096
BLOCKS = 224  # checksummed area: blocks 0..223
QIO_W = 224 * BLOCK  # qemu-io writes 0x3c here (64 KiB) and reads it back
SIZE = 256 * BLOCK
ROUNDS = int(os.environ.get("TXGRAPH_QMP_SWAP_ROUNDS", "40"))
SNAP_EVERY = int(os.environ.get("TXGRAPH_QMP_SWAP_SNAP_EVERY", "1"))
MAX_SNAPSHOTS = 20


def _block(b: int, seq: int) -> bytes:
    rng = random.Random(b * 1_000_003 + seq)
    payload = rng.randbytes(BLOCK - 12)
    return struct.pack(">III", b, seq, zlib.crc32(payload)) + payload


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


class _Rig:
    """The daemon, its export and the guest threads; owned by the test's thread.

    ``acked[b]`` is written only by the one writer that owns block ``b`` (blocks are
    split between writers) and read by readers as a lower bound; ``errors`` is
    appended to from every thread (list.append is atomic under the GIL).
    """

    def __init__(self, tmp: Path, snap_every: int, client_timeout: float = 30.0) -> None:
        self.tmp = tmp
        self.snap_every = snap_every
        self.client_timeout = client_timeout
        base = bytearray(SIZE)
        for b in range(BLOCKS):
            base[b * BLOCK : (b + 1) * BLOCK] = _block(b, 0)
        (tmp / "seed.raw").write_bytes(bytes(base))
        res = _run(
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            str(tmp / "seed.raw"),
            str(tmp / "hd0.qcow2"),
        )
        assert res.returncode == 0, res.stderr
        self.daemon = TxgraphDaemon(workdir=str(tmp))
        self.sock = str(tmp / "nbd.sock")
        self.acked = [0] * BLOCKS
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.ops = 0
        self.top = "hd0"
        self.snapshots = 0
        self.commands = 0
        for c, a in (
            ("nbd-server-start", {"addr": {"type": "unix", "data": {"path": self.sock}}}),
            (
                "object-add",
                {
                    "qom-type": "throttle-group",
                    "id": "tg",
                    "limits": {"iops-total": 100000, "bps-total": 1 << 30},
                },
            ),
            (
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": "hd0",
                    "file": {"driver": "file", "filename": str(tmp / "hd0.qcow2")},
                },
            ),
            ("blockdev-add", {"driver": "raw", "node-name": "fmt", "file": "hd0"}),
            (
                "block-export-add",
                {"type": "nbd", "id": "e0", "node-name": "fmt", "name": "e0", "writable": True},
            ),
        ):
            self.qmp(c, a)

    # -- QMP -----------------------------------------------------------------------------
    def qmp(self, command: str, args: dict[str, Any] | None = None) -> Any:
        reply = self.daemon.execute(command, args)
        self.commands += 1
        if "error" in reply:
            raise AssertionError(f"{command} {args}: {reply['error']}")
        return reply["return"]

    def generation(self) -> int:
        return int(self.qmp("x-txgraph-query-generation")["generation"])

    def graph(self) -> Any:
        """The QEMU-visible graph (nodes, named edges, permissions), canonical."""
        return canon_graph(self.qmp("x-debug-query-block-graph"), str(self.tmp))

    def round(self, k: int) -> None:
        gen0, graph0 = self.generation(), self.graph()
        thr = f"thr{k}"
        if k % 2 == 0:  # QEMU's way: add the filter, re-point the parent, and back
            self.qmp(
                "blockdev-add",
                {"driver": "throttle", "node-name": thr, "throttle-group": "tg", "file": self.top},
            )
            self.qmp(
                "blockdev-reopen", {"options": [{"driver": "raw", "node-name": "fmt", "file": thr}]}
            )
            gen1 = self.generation()
            self.qmp(
                "blockdev-reopen",
                {"options": [{"driver": "raw", "node-name": "fmt", "file": self.top}]},
            )
            self.qmp("blockdev-del", {"node-name": thr})
        else:  # txgraph's extension commands
            self.qmp(
                "x-txgraph-insert-filter",
                {
                    "node": self.top,
                    "filter": {"driver": "throttle", "node-name": thr, "throttle-group": "tg"},
                },
            )
            gen1 = self.generation()
            self.qmp("x-txgraph-remove-filter", {"node": thr})
        gen2 = self.generation()
        if not gen0 < gen1 < gen2:
            self.errors.append(f"round {k}: generations {gen0}, {gen1}, {gen2}")
        if self.graph() != graph0:
            self.errors.append(f"round {k}: insert+remove left the graph changed")
        every = self.snap_every
        if every and k % every == every - 1 and self.snapshots < MAX_SNAPSHOTS:
            self.snapshots += 1
            name = f"ov{self.snapshots}"
            self.qmp(
                "blockdev-snapshot-sync",
                {
                    "node-name": self.top,
                    "format": "qcow2",
                    "snapshot-file": str(self.tmp / f"{name}.qcow2"),
                    "snapshot-node-name": name,
                },
            )
            self.top = name

    # -- guests ---------------------------------------------------------------------------
    @property
    def addr(self) -> dict[str, str]:
        return {"type": "unix", "path": self.sock}

    def writer(self, w: int, nw: int) -> None:
        rng = random.Random(w)
        mine = list(range(w, BLOCKS, nw))
        try:
            with NbdClient(self.addr, "e0", timeout=self.client_timeout) as c:
                c.sock.settimeout(self.client_timeout)  # connect() clears its own timeout
                while not self.stop.is_set():
                    b = rng.choice(mine)
                    seq = self.acked[b] + 1
                    c.write(b * BLOCK, _block(b, seq), fua=rng.random() < 0.1)
                    self.acked[b] = seq  # acknowledged by the server
                    self.ops += 1
                    if rng.random() < 0.05:
                        c.flush()
        except Exception as e:
            self.errors.append(f"writer {w}: {e!r}")

    def reader(self, r: int) -> None:
        rng = random.Random(100 + r)
        try:
            with NbdClient(
                self.addr, "e0", structured=bool(r % 2), timeout=self.client_timeout
            ) as c:
                c.sock.settimeout(self.client_timeout)
                while not self.stop.is_set():
                    b = rng.randrange(BLOCKS)
                    floor = self.acked[b]
                    data = c.read(b * BLOCK, BLOCK)
                    idx, seq, crc = struct.unpack_from(">III", data)
                    if idx != b or zlib.crc32(data[12:]) != crc:
                        self.errors.append(f"block {b}: torn or misplaced data")
                    elif seq < floor:
                        self.errors.append(f"block {b}: read seq {seq} after {floor} was acked")
                    self.ops += 1
        except Exception as e:
            self.errors.append(f"reader {r}: {e!r}")

    def qemu_io_loop(self) -> None:
        while not self.stop.is_set():
            res = _run(
                "qemu-io",
                "-f",
                "raw",
                "-c",
                f"write -P 0x3c {QIO_W} 65536",
                "-c",
                f"read -P 0x3c {QIO_W} 65536",
                nbd_uri(self.sock, "e0"),
            )
            if res.returncode or "failed" in res.stdout:
                self.errors.append(f"qemu-io: {res.stdout}{res.stderr}")
                return

    def expected(self) -> Path:
        data = bytearray(SIZE)
        for b in range(BLOCKS):
            data[b * BLOCK : (b + 1) * BLOCK] = _block(b, self.acked[b])
        data[QIO_W : QIO_W + 65536] = b"\x3c" * 65536
        path = self.tmp / "expected.raw"
        path.write_bytes(bytes(data))
        return path


def _stress(tmp_path: Path, rounds: int, snap_every: int, client_timeout: float) -> None:
    rig = _Rig(tmp_path, snap_every, client_timeout)
    threads = [threading.Thread(target=rig.writer, args=(w, 3)) for w in range(3)]
    threads += [threading.Thread(target=rig.reader, args=(r,)) for r in range(3)]
    threads.append(threading.Thread(target=rig.qemu_io_loop))
    try:
        for t in threads:
            t.start()
        start = time.monotonic()
        for k in range(rounds):
            rig.round(k)
            if rig.errors:
                break
        elapsed = time.monotonic() - start
        rig.stop.set()
        for t in threads:
            t.join(2 * client_timeout + 30)
        assert not any(t.is_alive() for t in threads), "a guest thread did not finish"
        assert rig.errors == [], rig.errors[:10]
        assert rig.ops > 0
        expected = rig.expected()
        cmp = _run(
            "qemu-img", "compare", "-f", "raw", "-F", "raw", str(expected), nbd_uri(rig.sock, "e0")
        )
        assert "Images are identical" in cmp.stdout, cmp.stdout + cmp.stderr
        print(
            f"{rounds} rounds ({rig.commands} QMP commands, {rig.snapshots} snapshots) in "
            f"{elapsed:.1f}s under {rig.ops} NBD requests"
        )
    finally:
        rig.stop.set()
        for t in threads:
            if t.is_alive():
                t.join(60)
        proc = rig.daemon.proc
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        rig.daemon.close()
    # offline, after a clean shutdown: the chain holds the acknowledged data, images clean
    top = tmp_path / f"{rig.top}.qcow2"
    cmp = _run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(rig.expected()), str(top))
    assert "Images are identical" in cmp.stdout, cmp.stdout + cmp.stderr
    for image in sorted(tmp_path.glob("*.qcow2")):
        check = _run("qemu-img", "check", str(image))
        assert check.returncode == 0, f"{image.name}: {check.stdout}{check.stderr}"


def test_filter_commands_under_nbd_io(tmp_path: Path) -> None:
    """Reopen-based and extension filter insertion/removal, ``TXGRAPH_QMP_SWAP_ROUNDS`` times."""
    _stress(tmp_path, ROUNDS, 0, 30.0)


def test_snapshot_commands_under_nbd_io(tmp_path: Path) -> None:
    """blockdev-snapshot-sync every round (onto fresh overlays) besides the filter swaps.

    The guests' request deadline is short (5 s) so that a request the server never
    answers shows as a failure within seconds.
    """
    _stress(tmp_path, max(6, min(ROUNDS, MAX_SNAPSHOTS)), SNAP_EVERY and 1, 5.0)
