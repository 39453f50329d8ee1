"""Import-then-apply against QEMU itself (qemu-system-x86_64 7.2's QMP socket).

The same plans as against qemu-storage-daemon (a subset: the seed's section-3
plan and one of each compiled shape), on ``-machine none`` with the seed's
state; and a guest device's root, which QEMU 7.2 cannot move to a filter,
refused before anything is sent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.differential.test_apply_qemu import PLANS, _plans, _seed_state
from tests.unit.plan.plankit import make_images
from txgraph.peers import QMPProcess
from txgraph.plan.client import capture_graph
from txgraph.plan.format import parse_plan, substitute_dir
from txgraph.plan.live import ApplyError, apply_to_qemu
from txgraph.plan.seal import seal_report
from txgraph.plan.verify import verify_plan

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
pytestmark = pytest.mark.qsd

SUBSET = (
    "seed-section3",
    "filter-over-protocol",
    "snapshot-cache-direct",
    "replace-export-root",
    "cache-direct-inherited",
)


@contextmanager
def _qemu(workdir: Path, *extra: str) -> Iterator[QMPProcess]:
    if not os.access(QEMU, os.X_OK):
        pytest.fail("qemu-system-x86_64 is not installed; run `make test`, which installs it")
    tmp = tempfile.mkdtemp(prefix="qemu-")
    sock = os.path.join(tmp, "qmp.sock")
    args = [QEMU, "-S", "-nodefaults", "-display", "none", "-qmp",
            f"unix:{sock},server=on,wait=off", *extra]  # fmt: skip
    proc = QMPProcess(args, sock, tmp, str(workdir))
    try:
        yield proc
    finally:
        proc.close()


@pytest.mark.parametrize(("name", "raw"), [p for p in _plans() if p[0] in SUBSET], ids=list(SUBSET))
def test_prediction_equals_observation_on_qemu(name: str, raw: Any, images: Path) -> None:
    with _qemu(images, "-machine", "none") as qemu:
        _seed_state(qemu, images)  # type: ignore[arg-type]
        plan = parse_plan(substitute_dir(raw, str(images)))
        report = seal_report(verify_plan(plan, capture_graph(qemu)).to_dict())
        assert report["ok"]
        outcome = apply_to_qemu(report, qemu)
        assert outcome.problems == []
        assert outcome.ok and outcome.sent == outcome.total >= len(plan.steps)


def test_a_device_root_has_no_qemu_form(images: Path) -> None:
    make_images(images)
    with _qemu(
        images, "-machine", "q35",
        "-blockdev", f"driver=file,node-name=disk-file,filename={images}/disk0.qcow2",
        "-blockdev", "driver=qcow2,node-name=disk,file=disk-file",
        "-device", "virtio-blk-pci,drive=disk,id=vd0",
    ) as qemu:  # fmt: skip
        imp = capture_graph(qemu)
        assert imp.owned == {"disk-file": True}  # a --blockdev of its own
        steps = [PLANS["cor-filter"][0]]
        report = seal_report(verify_plan(parse_plan(steps), imp).to_dict())
        assert report["ok"]
        before = qemu.cmd("x-debug-query-block-graph")
        with pytest.raises(ApplyError) as refused:
            apply_to_qemu(report, qemu)
        assert str(refused.value) == (
            "step 1 (x-txgraph-insert-filter disk): QEMU 7.2 has no command that moves the "
            "root of '/machine/peripheral/vd0/virtio-backend' to 'cor0'"
        )
        assert qemu.cmd("x-debug-query-block-graph") == before
