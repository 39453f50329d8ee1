"""Self-referencing backing chains through ``./`` aliases: txgraph vs qemu-storage-daemon 7.2.

QSD 7.2 follows ``a.qcow2 -> ./a.qcow2`` level after level until the name is
too long for open(2), and answers with one ``Could not open backing file: ``
per level (about 2000) and ``File name too long``; a read-write top stops at
the image lock. txgraph must give the same bytes without opening thousands of
nodes (txgraph.ops.chain_guard), with bounded memory and no RecursionError.
Both peers run on the same directory, one after the other, because the
directory's length decides how many levels QEMU opens.
"""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, QSDPeer

pytestmark = pytest.mark.qsd


def _qcow2(path: Path, backing: str) -> None:
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            backing,
            "-F",
            "qcow2",
            str(path),
            "1M",
        ],
        check=True,
    )


def _adds(d: Path) -> list[dict[str, Any]]:
    def add(name: str, image: str, ro: bool = True) -> dict[str, Any]:
        return {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "qcow2",
                "node-name": name,
                "read-only": ro,
                "file": {"driver": "file", "filename": str(d / image)},
            },
        }

    return [
        add("a", "a.qcow2"),
        add("b", "b.qcow2"),
        add("d", "d.qcow2"),
        add("s", "s/t.qcow2"),
        add("arw", "a.qcow2", ro=False),
        {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
    ]


def test_dot_slash_loops_match_qsd(tmp_path: Path) -> None:
    d = tmp_path / "loop"
    (d / "s").mkdir(parents=True)
    _qcow2(d / "a.qcow2", "./a.qcow2")  # a -> ./a
    _qcow2(d / "b.qcow2", "./c.qcow2")  # b -> c -> ./b
    _qcow2(d / "c.qcow2", "./b.qcow2")
    _qcow2(d / "d.qcow2", "a.qcow2")  # d -> a -> ./a
    _qcow2(d / "s" / "t.qcow2", "../s/./t.qcow2")  # a longer alias through ..
    replies: dict[str, list[Any]] = {}
    for label, cls in (("qsd", QSDPeer), ("txgraph", EnginePeer)):
        peer = cls(d)
        try:
            replies[label] = [peer.execute(m) for m in _adds(d)]
        finally:
            peer.close()
    for i, (q, t) in enumerate(zip(replies["qsd"], replies["txgraph"])):
        assert q == t, f"step {i}: qsd {str(q)[-300:]!r} != txgraph {str(t)[-300:]!r}"
    first = replies["qsd"][0]["error"]["desc"]
    assert first.count("Could not open backing file: ") > 1000 and first.endswith(
        "File name too long"
    )
    assert replies["qsd"][4]["error"]["desc"] == (
        'Could not open backing file: Failed to get shared "write" lock'
    )


def test_absolute_self_loop_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    """QSD 7.2 never answers this one (it recurses until memory runs out); txgraph refuses."""
    _qcow2(tmp_path / "h.qcow2", str(tmp_path / "g.qcow2"))  # qemu-img refuses a self-name
    (tmp_path / "h.qcow2").rename(tmp_path / "g.qcow2")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peer = EnginePeer(tmp_path)
    try:
        reply = peer.execute(
            _adds(tmp_path)[0]
            | {
                "arguments": {
                    "driver": "qcow2",
                    "node-name": "g",
                    "read-only": True,
                    "file": {"driver": "file", "filename": str(tmp_path / "g.qcow2")},
                }
            }
        )
        nodes = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
    finally:
        peer.close()
    g = tmp_path / "g.qcow2"
    assert reply["error"]["desc"] == (
        f"Could not open backing file: Could not open backing file: Backing file '{g}' of '{g}' "
        "leads back into its own backing chain"
    )
    assert nodes["return"] == []
    # ru_maxrss is in KiB: the refusal costs far less than the 1-2 GiB a full unrolling took.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


def _chain(d: Path, links: int) -> Path:
    """``l000 <- l001 <- … <- l<links>``: one qemu-img template, names patched in place."""
    _qcow2(d / "tmpl.qcow2", "lXXX.qcow2")
    template = (d / "tmpl.qcow2").read_bytes()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(d / "l000.qcow2"), "1M"], check=True
    )
    for i in range(1, links + 1):
        (d / f"l{i:03d}.qcow2").write_bytes(
            template.replace(b"lXXX.qcow2", b"l%03d.qcow2" % (i - 1))
        )
    return d / f"l{links:03d}.qcow2"


def test_deep_chain_is_bounded_not_a_recursion_error(tmp_path: Path) -> None:
    """Up to MAX_CHAIN_DEPTH links open as in QEMU; one more is refused in QEMU's error shape
    (one prefix per level), never with Python's RecursionError text."""
    from txgraph.ops.chain_guard import MAX_CHAIN_DEPTH

    top = _chain(tmp_path, MAX_CHAIN_DEPTH + 1)
    peer = EnginePeer(tmp_path)
    try:
        ok = peer.execute(
            {
                "execute": "blockdev-add",
                "arguments": {
                    "driver": "qcow2",
                    "node-name": "ok",
                    "read-only": True,
                    "file": {
                        "driver": "file",
                        "filename": str(tmp_path / f"l{MAX_CHAIN_DEPTH:03d}.qcow2"),
                    },
                },
            }
        )
        assert ok == {"return": {}}
        deep = peer.execute(
            {
                "execute": "blockdev-add",
                "arguments": {
                    "driver": "qcow2",
                    "node-name": "deep",
                    "read-only": True,
                    "file": {"driver": "file", "filename": str(top)},
                },
            }
        )
    finally:
        peer.close()
    assert deep["error"]["desc"] == (
        "Could not open backing file: "
        * (MAX_CHAIN_DEPTH + 1)
        + f"Backing chain is deeper than {MAX_CHAIN_DEPTH} images "
        "(txgraph limit)"
    )
