"""Encrypted qcow v1 (legacy AES-CBC), which qemu-storage-daemon 7.2 opens read-write.

The image is made by ``qemu-img create -o encrypt.format=aes`` and filled by
``qemu-io``; each peer gets the secret by ``object-add`` and exports the node
over NBD. Reads through txgraph's export equal ``qemu-img convert`` of the
image; the same ``qemu-io`` writes go through both peers' writable exports
(partial sectors, new clusters, zero writes) and the two copies then hold the
same guest data (``qemu-img compare`` through the cipher).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer
from tests.interop.test_formats_data import _ok, sockdir  # noqa: F401  (fixture)

pytestmark = pytest.mark.qsd

_SECRET = ["--object", "secret,id=s0,data=hunter2"]


def _opts(path: Path) -> str:
    return f"driver=qcow,file.filename={path},encrypt.key-secret=s0"


def _run(*argv: str | Path) -> str:
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr or res.stdout
    return res.stdout


def _make(d: Path) -> Path:
    img = d / "e.qcow"
    _run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow",
        *_SECRET,
        "-o",
        "encrypt.format=aes,encrypt.key-secret=s0",
        img,
        "2M",
    )
    _run(
        "qemu-io",
        *_SECRET,
        "--image-opts",
        "-c",
        "write -P 0x11 0 70000",
        "-c",
        "write -P 0x22 1M 4096",
        _opts(img),
    )
    return img


def _export(peer: Peer, img: Path, writable: bool, sock: Path) -> str:
    _ok(peer, "object-add", **{"qom-type": "secret", "id": "s0", "data": "hunter2"})
    args: dict[str, Any] = {
        "driver": "qcow",
        "node-name": "q",
        "read-only": not writable,
        "file": {"driver": "file", "filename": str(img)},
        "encrypt": {"format": "aes", "key-secret": "s0"},
    }
    _ok(peer, "blockdev-add", **args)
    _ok(peer, "nbd-server-start", addr={"type": "unix", "data": {"path": str(sock)}})
    _ok(
        peer,
        "block-export-add",
        type="nbd",
        id="e",
        name="e",
        **{"node-name": "q"},
        writable=writable,
    )
    return f"nbd+unix:///e?socket={sock}"


def test_reads_and_writes_match_qsd(tmp_path: Path, sockdir: Path) -> None:  # noqa: F811
    outputs: dict[str, list[str]] = {}
    for factory in (QSDPeer, EnginePeer):
        work = tmp_path / factory.label
        work.mkdir()
        img = _make(work)
        expected = work / "expected.raw"
        _run("qemu-img", "convert", *_SECRET, "--image-opts", _opts(img), "-O", "raw", expected)
        peer: Peer = factory(work)
        try:
            uri = _export(peer, img, True, sockdir / f"{factory.label}.sock")
            got = work / "got.raw"
            _run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, got)
            assert got.read_bytes() == expected.read_bytes(), factory.label
            out = _run(
                "qemu-io",
                "-f",
                "raw",
                "-c",
                "write -P 0x33 100 3000",
                "-c",
                "write -P 0x44 1536k 8k",
                "-c",
                "write -z 65536 4096",
                "-c",
                "write -P 0x55 2097000 152",
                "-c",
                "flush",
                uri,
            )
            outputs[factory.label] = [ln for ln in out.splitlines() if "ops/sec" not in ln]
        finally:
            peer.close()
    assert outputs["txgraph"] == outputs["qsd"]
    left, right = tmp_path / "qsd" / "e.qcow", tmp_path / "txgraph" / "e.qcow"
    _run("qemu-img", "compare", *_SECRET, "--image-opts", _opts(left), _opts(right))
    info = _run("qemu-img", "info", *_SECRET, "--image-opts", _opts(right))
    assert "encrypted: yes" in info
