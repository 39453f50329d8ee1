"""NBD export read throughput: txgraph's NBD server vs qemu-storage-daemon's.

Not a timed test: run ``txgraph bench nbd [--workdir DIR]``.
Both servers export the same raw image (``raw`` over ``file``) on a unix
socket; the client is ``qemu-img convert -f raw -O raw nbd+unix://... out.raw``
(QEMU's own NBD client, structured replies, 8 coroutines in flight). Warm page
cache: one discarded warm-up per server, then rounds alternating txgraph and
the peer; the medians of wall time give MB/s, ``spread`` the min-max of each
side. The output file goes to /dev/shm when available (same for both
servers). Each round also copies the image file itself (the same command
without NBD): ``floor`` is that throughput, what a server costing nothing
would approach, and ``ratio_cap`` = floor / peer the ratio it would reach.
Each round also reads the same image through nbdkit's ``file`` plugin (C, a
thread per request, ``pread`` into a buffer, then ``send``), the third server on
the same kind of socket with the same client: ``nbdkit`` is its throughput,
``nbdkit_cap`` = nbdkit / peer, ``of_nbdkit`` = txgraph / nbdkit. What a C
server reaches over this transport tells the socket and the client's own cost
from the server's. Prints one JSON line ``{name, txgraph, peer, unit, ratio,
rounds, floor, ratio_cap, nbdkit, nbdkit_cap, of_nbdkit, spread, peer_desc,
nbdkit_desc}``; ratio = txgraph / peer. Progress goes to stderr; the image is
removed at the end unless ``keep``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from txgraph.io.nbd.server import NbdServer
from txgraph.io.runtime import Runtime
from txgraph.peers import QSD

MiB = 1 << 20
IMAGE_SIZE = 512 * MiB
ROUNDS = 5
#: seconds nbdkit may take to listen on its socket
NBDKIT_START_DEADLINE = 20.0


def _image(work: Path, size: int = IMAGE_SIZE) -> Path:
    """A fully allocated raw image with incompressible, non-zero content."""
    img = work / "nbd-bench.raw"
    if not img.exists() or img.stat().st_size != size:
        chunk = os.urandom(min(4 * MiB, size))
        with open(img, "wb") as f:
            for i in range(size // len(chunk)):
                # vary each chunk cheaply so no two are identical
                f.write(i.to_bytes(8, "little") + chunk[8:])
    return img


def _convert(uri: str, out: Path) -> float:
    """Wall time of one ``qemu-img convert`` of the whole export to a raw file."""
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out)],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - start
    out.unlink(missing_ok=True)
    return elapsed


@contextmanager
def _nbdkit_export(img: Path, sock: str) -> Iterator[None]:
    """nbdkit's ``file`` plugin serving ``img`` read-only on the unix socket ``sock``
    until the block ends; it also exits with this process (``--exit-with-parent``)."""
    exe = shutil.which("nbdkit")
    if exe is None:
        raise FileNotFoundError(
            errno.ENOENT, "not found (Debian's nbdkit; `make qemu` installs it)", "nbdkit"
        )
    Path(sock).unlink(missing_ok=True)  # a socket left by a killed run is not a listener
    proc = subprocess.Popen(
        [exe, "--exit-with-parent", "-f", "-r", "-U", sock, "file", f"file={img}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + NBDKIT_START_DEADLINE
        while not os.path.exists(sock):
            if proc.poll() is not None:
                why = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                raise OSError(errno.EIO, f"exited at start: {why.strip()[-300:]}", "nbdkit")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nbdkit did not listen on {sock} in {NBDKIT_START_DEADLINE} s")
            time.sleep(0.02)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _progress(msg: str) -> None:
    print(f"bench nbd: {msg}", file=sys.stderr, flush=True)


def run_nbd_benchmark(
    workdir: str | Path, *, keep: bool = False, rounds: int = ROUNDS, size: int = IMAGE_SIZE
) -> dict[str, Any]:
    """Measure both servers in one run (``rounds`` interleaved rounds, an image of ``size``
    bytes, a multiple of 4 MiB up to there); return the JSON row."""
    work = Path(workdir)
    made = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(work, max(1, rounds), size)
    finally:
        if not keep:
            (work / "nbd-bench.raw").unlink(missing_ok=True)
            if made:
                shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, rounds: int, size: int) -> dict[str, Any]:
    img = _image(work, size)
    # The copy lands in tmpfs when there is one: disk writeback of the output would
    # otherwise dominate and add noise to a measure of the servers' read path.
    shm = Path("/dev/shm")
    out = (
        shm if shm.is_dir() and os.access(shm, os.W_OK) else work
    ) / f"nbd-bench-{os.getpid()}.raw"
    mine_sock = str(work / "txgraph-nbd.sock")
    peer_sock = str(work / "qsd-nbd.sock")
    kit_sock = str(work / "nbdkit-nbd.sock")

    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(img)}, {}, True)
    rt.open_node("r", "raw", {}, {"file": "f"}, True)
    server = NbdServer(rt)
    server.start({"type": "unix", "path": mine_sock})
    server.add_export("disk", "r", False)
    try:
        with QSD() as qsd, _nbdkit_export(img, kit_sock):
            qsd.cmd(
                "blockdev-add",
                {
                    "driver": "raw",
                    "node-name": "r",
                    "read-only": True,
                    "file": {"driver": "file", "filename": str(img)},
                },
            )
            qsd.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": peer_sock}}})
            qsd.cmd(
                "block-export-add", {"type": "nbd", "id": "e", "node-name": "r", "name": "disk"}
            )
            mine_uri = f"nbd+unix:///disk?socket={mine_sock}"
            peer_uri = f"nbd+unix:///disk?socket={peer_sock}"
            kit_uri = f"nbd+unix:///disk?socket={kit_sock}"
            _convert(mine_uri, out)  # warm-ups (page cache, code paths)
            _convert(peer_uri, out)
            _convert(kit_uri, out)
            mine: list[float] = []
            peer: list[float] = []
            kit: list[float] = []
            local: list[float] = []
            for r in range(rounds):
                mine.append(_convert(mine_uri, out))
                peer.append(_convert(peer_uri, out))
                kit.append(_convert(kit_uri, out))
                local.append(_convert(str(img), out))
                _progress(f"round {r + 1}/{rounds}")
    finally:
        server.stop()
        rt.close_all()
    mb = size / 1e6
    t_mine, t_peer = mb / statistics.median(mine), mb / statistics.median(peer)
    t_kit = mb / statistics.median(kit)
    return {
        "name": "nbd_export_read_qemu_img_convert",
        "txgraph": round(t_mine, 1),
        "peer": round(t_peer, 1),
        "unit": "MB/s",
        "ratio": round(t_mine / t_peer, 3),
        "rounds": rounds,
        "floor": round(mb / statistics.median(local), 1),
        "ratio_cap": round(statistics.median(peer) / statistics.median(local), 3),
        "nbdkit": round(t_kit, 1),
        "nbdkit_cap": round(t_kit / t_peer, 3),
        "of_nbdkit": round(t_mine / t_kit, 3),
        "spread": {
            "txgraph": [round(mb / max(mine), 1), round(mb / min(mine), 1)],
            "peer": [round(mb / max(peer), 1), round(mb / min(peer), 1)],
            "nbdkit": [round(mb / max(kit), 1), round(mb / min(kit), 1)],
        },
        "peer_desc": "qemu-storage-daemon 7.2 NBD export, same image, same client",
        "nbdkit_desc": "nbdkit file plugin, read-only, same image, socket kind and client",
    }


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/txgraph-bench")
    print(json.dumps(run_nbd_benchmark(where, keep=True)))
