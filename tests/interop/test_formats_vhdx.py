"""vhdx log replay by txgraph, checked by the real qemu-img and qemu-io.

A block allocation whose BAT update is still only in the log (written by
txgraph's log writer without its flush: a crash between the two) is replayed
when txgraph opens the image read-write; afterwards ``qemu-img check`` is
clean, QEMU opens the image read-only (no log left to replay) and reads the
block's data where the replayed BAT entry points.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.differential.scenarios.formats_vhdx import vhdx_pending_log
from txgraph.io.runtime import Runtime

pytestmark = pytest.mark.qsd


def _run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, res.stderr or res.stdout
    return res


def test_txgraph_replays_a_pending_log(tmp_path: Path) -> None:
    img = tmp_path / "l.vhdx"
    _run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", img, "3M")
    vhdx_pending_log(tmp_path, "l.vhdx", 0x6B)
    refused = _run("qemu-img", "info", "-f", "vhdx", img, check=False)
    assert "contains a log that needs to be replayed" in refused.stderr
    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(img)}, {}, False)
    rt.open_node("m", "vhdx", {}, {"file": "f"}, False)
    node = rt._nodes["m"]
    assert getattr(node, "log_replayed", False)
    assert node.read(4096, 4096) == b"\x6b" * 4096
    for name in ("m", "f"):
        rt._nodes[name].close()
    assert "No errors were found" in _run("qemu-img", "check", "-f", "vhdx", img).stdout
    out = _run(
        "qemu-io", "-r", "-f", "vhdx", "-c", "read -P 0x6b 4k 4k", "-c", "read -P 0 0 4k", img
    ).stdout
    assert "Pattern verification failed" not in out and out.count("read 4096/4096") == 2
