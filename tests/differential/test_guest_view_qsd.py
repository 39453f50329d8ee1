"""V1-guest-view's explanation is true on qemu-storage-daemon 7.2.

The newcomer's chain is built on a real QSD and exported over NBD. txgraph
verifies the plan against the graph imported from that QSD (``txgraph plan
--graph-from-qmp``, block status from the images on disk) and refuses it under
``safe``, naming ranges and layers. The same steps are then sent to QSD, which
accepts them, and qemu-io reads through QSD's export: in every range the
explanation named the guest now reads the data of the layer it named ``after``
(zeroes for ``None``), and outside them what it read before. So the sentence
is a prediction about QEMU, checked against QEMU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.qsd import QSD
from tests.unit.plan.guestkit import (
    DEL_MID,
    PATTERN,
    REOPEN_CUT,
    REOPEN_SKIP_MID,
    TOP,
    MiB,
    make_chain,
    reads,
    state,
)
from txgraph.plan.format import substitute_dir


def _verify_against(monitor: str, plan: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "txgraph.cli",
            "plan",
            str(plan),
            "--graph-from-qmp",
            monitor,
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout)


@pytest.mark.parametrize(
    ("steps", "zero_ranges"),
    [([REOPEN_SKIP_MID, DEL_MID], False), ([REOPEN_CUT], True)],
    ids=["skip-mid", "cut-backing"],
)
def test_refusal_names_exactly_what_qsd_then_serves(
    images: Path, tmp_path: Path, steps: list[dict[str, Any]], zero_ranges: bool
) -> None:
    make_chain(images)
    # A second monitor for the CLI: a QMP socket serves one client at a time.
    monitor = str(tmp_path / "m2.sock")
    extra = ["--chardev", f"socket,id=m2,path={monitor},server=on,wait=off", "--monitor", "m2"]
    with QSD(extra) as qsd:
        _run(qsd, monitor, images, steps, zero_ranges)


def _run(
    qsd: QSD, monitor: str, images: Path, steps: list[dict[str, Any]], zero_ranges: bool
) -> None:
    for msg in substitute_dir(state(), str(images))[1:]:  # QSD needs no throttle group here
        assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg
    sock = str(images / "nbd.sock")
    plan = images.parent / "plan.json"
    plan.write_text(json.dumps(steps))

    rc, report = _verify_against(monitor, plan)
    assert rc == 1 and report["source"]["kind"] == "import"
    first = report["steps"][0]
    assert first["accepted"]  # QEMU accepts it...
    (v,) = [v for v in first["verdict"]["violations"] if v["rule"] == "V1-guest-view"]
    ranges = [(r["offset"], r["length"], r["before"], r["after"]) for r in v["ranges"]]
    assert (4 * MiB, 4 * MiB, "mid", None if zero_ranges else "base") in ranges
    assert all((a is None) == zero_ranges for _o, _n, _b, a in ranges)
    rc, qemu_report = _verify_against(monitor, plan, "--policy", "qemu")
    assert rc == 0 and qemu_report["ok"]

    # what the guest read before, per range, is the "before" layer's data
    assert reads(sock, "vm0", [(o, n, PATTERN[b]) for o, n, b, _a in ranges]) == []
    for msg in steps:  # ...and so does QSD
        assert qsd.execute(msg["execute"], msg.get("arguments")) == {"return": {}}, msg
    assert reads(sock, "vm0", [(o, n, PATTERN[a]) for o, n, _b, a in ranges]) == []
    # outside the named ranges nothing changed: top's own data is still served
    assert reads(sock, "vm0", [(0, MiB, TOP)]) == []
