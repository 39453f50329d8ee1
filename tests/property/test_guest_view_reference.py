"""V1-guest-view, computed in O(change), equals a whole-disk reference on random sequences.

The fuzzer's generator drives an Engine (``qemu`` policy, so every command QEMU
accepts is applied) over real qcow2/raw images that hold data at random
offsets, with NBD exports and reopens that drop or move backing links. Around
every command the reference reads the *data plane* only: for every export, the
served chain of the live driver objects (:func:`txgraph.io.chain.chain`) and
every layer's block status over the whole disk, one call per run. The ranges
whose serving layer differs between before and after must be exactly the
ranges the guest-view rule recorded for that command (``Session.guest_view_sink``):
same roots, same offsets and lengths, same layers before and after.
"""

from __future__ import annotations

import atexit
import itertools
import random
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.support.backing_cuts import backing_cut
from txgraph.checker.verdict import Violation
from txgraph.fuzz.generate import QSD_FAMILIES, Generator, Resources, image_commands
from txgraph.io.allocation import _walk
from txgraph.io.chain import chain
from txgraph.io.driver import DriverNode
from txgraph.model.node import ParentKind
from txgraph.ops.session import Session
from txgraph.oracle.canon import canon_text, substitute
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine

#: (offset, length, layer or None for zeroes)
Piece = tuple[int, int, str | None]

_SETUP: list[dict[str, Any]] = [
    {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "qcow2",
            "node-name": "n0",
            "file": {"driver": "file", "filename": "{dir}/b1.qcow2", "node-name": "n0f"},
        },
    },
    {
        "execute": "nbd-server-start",
        "arguments": {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}},
    },
    {
        "execute": "block-export-add",
        "arguments": {"type": "nbd", "id": "e0", "node-name": "n0", "writable": True},
    },
]


_TEMPLATE: Path | None = None


def _fill(workdir: Path) -> None:
    """The fuzzer's images, with data at fixed 64 KiB-aligned offsets (made once, copied)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        template = Path(tempfile.mkdtemp(prefix="txgraph-guestview-images-"))
        atexit.register(shutil.rmtree, template, True)
        rng = random.Random(0)
        for argv in image_commands():
            subprocess.run(argv, cwd=template, check=True, capture_output=True, timeout=60)
        for image in sorted(template.iterdir()):
            if image.suffix == ".raw":
                continue  # a raw layer is allocated everywhere anyway
            cmds: list[str] = []
            for _ in range(rng.randint(1, 4)):
                off = rng.randrange(0, 16) * 65536
                size = rng.choice([4096, 65536])
                cmds += ["-c", f"write -q -P {rng.randint(1, 255)} {off} {size}"]
            subprocess.run(
                ["qemu-io", "-f", "qcow2", *cmds, str(image)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        _TEMPLATE = template
    for image in _TEMPLATE.iterdir():
        shutil.copyfile(image, workdir / image.name)


def _own(node: DriverNode, size: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    _walk(node, 0, min(size, node.size()), out)
    return out


def _view(top: DriverNode) -> list[Piece]:
    """Which layer serves each byte of the guest's disk, by brute force over whole layers."""
    size = top.size()
    bounds = {0, size}
    layers = chain(top)
    runs = {layer.node_name: _own(layer, size) for layer in layers}
    for layer in layers:
        bounds.add(min(size, layer.size()))
        for off, n in runs[layer.node_name]:
            bounds.update((off, min(size, off + n)))
    edges = sorted(b for b in bounds if 0 <= b <= size)
    pieces: list[Piece] = []
    for lo, hi in itertools.pairwise(edges):
        who: str | None = None
        for layer in layers:
            if lo >= layer.size():
                break  # past this layer's end: zeroes
            if any(off <= lo and hi <= off + n for off, n in runs[layer.node_name]):
                who = layer.node_name
                break
        if pieces and pieces[-1][2] == who and pieces[-1][0] + pieces[-1][1] == lo:
            pieces[-1] = (pieces[-1][0], pieces[-1][1] + hi - lo, who)
        else:
            pieces.append((lo, hi - lo, who))
    return pieces


def _views(session: Session) -> dict[str, tuple[str, list[Piece]]]:
    out: dict[str, tuple[str, list[Piece]]] = {}
    rt = session.runtime
    for key, backend in session.graph.backends.items():
        if backend.kind is not ParentKind.ROOT or key.startswith("bb:job:"):
            continue
        if rt.backend_root_name(key) is None:
            continue
        with rt.request():
            top = rt.backend_root(key)
            out[key] = (top.node_name, _view(top))
    return out


def _changes(old: list[Piece], new: list[Piece]) -> list[tuple[int, int, str | None, str | None]]:
    bounds = sorted({p[0] for p in old} | {p[0] for p in new} | {p[0] + p[1] for p in old + new})
    out: list[tuple[int, int, str | None, str | None]] = []

    def at(pieces: list[Piece], x: int) -> str | None:
        return next(p[2] for p in pieces if p[0] <= x < p[0] + p[1])

    end = min(old[-1][0] + old[-1][1], new[-1][0] + new[-1][1]) if old and new else 0
    for lo, hi in itertools.pairwise(bounds):
        if hi > end:
            break
        a, b = at(old, lo), at(new, lo)
        if a != b:
            if out and out[-1][2:] == (a, b) and out[-1][0] + out[-1][1] == lo:
                out[-1] = (out[-1][0], out[-1][1] + hi - lo, a, b)
            else:
                out.append((lo, hi - lo, a, b))
    return out


@given(st.integers(0, 2**32 - 1))
def test_guest_view_equals_the_whole_disk_reference(seed: int) -> None:
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="txgraph-guestview-"))
    session = Session(policy="qemu")
    compared = 0
    try:
        _fill(workdir)
        engine = Engine(CommandContext(session))
        res = Resources()
        # no job actions: a job's copy changes which layer serves a range (not its data)
        # from its own thread, between the steps this reference compares
        gen = Generator(rng, [f for f in QSD_FAMILIES if f != "jobs"], res)
        for message in _SETUP:
            assert "return" in engine.execute(substitute(message, str(workdir), {})), message
        for _ in range(14):
            res.refresh(session.graph)
            message = backing_cut(rng, res, 0.5) if rng.random() < 0.4 else gen.next()
            if message is None:
                continue
            autos = {canon_text(n, None): n for n in session.graph.nodes if n.startswith("#")}
            before = _views(session)
            sink: list[Violation] = []
            session.guest_view_sink = sink
            try:
                reply = engine.execute(substitute(message, str(workdir), autos))
            finally:
                session.guest_view_sink = None
            res.note(message, "error" not in reply)
            after = _views(session)
            want = {
                key: _changes(before[key][1], after[key][1]) for key in before.keys() & after.keys()
            }
            want = {k: v for k, v in want.items() if v}
            got = {v.root: list(v.ranges) for v in sink}
            assert got == want, (message, got, want)
            compared += 1
        assert compared > 0
    finally:
        session.close()
        shutil.rmtree(workdir, ignore_errors=True)
