"""dmg chunks Debian's QEMU 7.2 cannot decode (bzip2: no dmg-bz2 module) read as EIO on both peers.

The same hand-made image is exported read-only by qemu-storage-daemon and by
txgraph; ``qemu-io`` reads every 4 KiB through each export: the sectors of the
bzip2 chunk fail with EIO, all others read the same bytes on both.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer
from tests.differential.scenarios.formats_dmg import dmg_image
from tests.interop.test_formats_data import _export, sockdir  # noqa: F401  (fixture)

pytestmark = pytest.mark.qsd


def _dump(uri: str, offset: int) -> tuple[str, bytes]:
    """``qemu-io`` reads 4 KiB at ``offset``: (error text or "", the bytes read)."""
    res = subprocess.run(
        ["qemu-io", "-r", "-f", "raw", "-c", f"read -v {offset} 4096", uri],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in (res.stdout + res.stderr).splitlines():
        if line.startswith("read failed: "):
            return line.split(": ", 1)[1], b""
    data = bytearray()
    for line in res.stdout.splitlines():
        if line[:8].isalnum() and ":  " in line:
            data += bytes.fromhex(line.split(":  ", 1)[1][:48].replace(" ", ""))
    return "", bytes(data)


def test_bzip2_chunk_is_eio_elsewhere_data(tmp_path: Path, sockdir: Path) -> None:  # noqa: F811
    got: dict[str, list[tuple[str, bytes]]] = {}
    for factory in (QSDPeer, EnginePeer):
        work = tmp_path / factory.label
        work.mkdir()
        (work / "b.dmg").write_bytes(dmg_image(bzip=True))
        peer: Peer = factory(work)
        try:
            uri = _export(peer, "dmg", work / "b.dmg", False, sockdir)
            got[factory.label] = [_dump(uri, off) for off in range(0, 64 * 512, 4096)]
        finally:
            peer.close()
    assert got["txgraph"] == got["qsd"]
    errors = [e for e, _ in got["qsd"]]
    assert errors[-2:] == ["Input/output error"] * 2, errors  # sectors 48-63: the bzip2 chunk
    assert not any(errors[:-2]) and all(len(d) == 4096 for _, d in got["qsd"][:-2])
