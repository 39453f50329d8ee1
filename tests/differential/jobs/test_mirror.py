"""blockdev-mirror and active commit, differentially against qemu-storage-daemon 7.2.

A mirror becomes READY once the target holds the source's data; job-complete
then pivots every user of the source onto the target, a soft cancel leaves the
target as a copy and the source in use, a force cancel (or any cancel before
READY) is a CANCELLED job. Guest writes during the mirror go through an NBD
export on the source (``qemu-io`` as the guest): after the pivot source and
target hold the same data, compared with ``qemu-img compare`` on both peers.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import cmd, qemu_img, qemu_io
from tests.differential.jobs.harness import Graph, JobScenario, Nodes, Run, Wait, job_differential
from tests.differential.jobs.test_stream import ADD_CHAIN, CHAIN_SETUP

pytestmark = pytest.mark.qsd

SETUP = (
    *CHAIN_SETUP,
    qemu_img("create -q -f qcow2 {dir}/tgt.qcow2 4M"),
    qemu_img("create -q -f qcow2 {dir}/big.qcow2 8M"),
    qemu_img("create -q -f qcow2 -b mid.qcow2 -F qcow2 {dir}/tgt-top.qcow2"),
)
IMAGES = ("top.qcow2", "mid.qcow2", "base.qcow2", "tgt.qcow2")


def _add(name: str, **extra: Any) -> dict[str, Any]:
    return cmd(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": name,
            "file": {"driver": "file", "filename": f"{name}.qcow2", "node-name": f"{name}-f"},
            **extra,
        },
    )


ADD_TGT = _add("tgt")
EXPORT = (
    cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}}),
    cmd(
        "block-export-add",
        {"type": "nbd", "id": "e", "node-name": "top", "writable": True, "name": "vm"},
    ),
)
URI = "nbd+unix:///vm?socket={dir}/nbd.sock"


def guest(*commands: str) -> Run:
    argv: list[str] = ["qemu-io", "-f", "raw", URI]
    for c in commands:
        argv += ["-c", c]
    return Run(tuple(argv))


def _done(job: str, event: str = "BLOCK_JOB_COMPLETED") -> tuple[Wait, Wait]:
    return Wait(event, {"device": job}), Wait("JOB_STATUS_CHANGE", {"id": job, "status": "null"})


READY = Wait("BLOCK_JOB_READY", {"device": "m"})
MIRROR = {"device": "top", "job-id": "m", "target": "tgt", "sync": "full"}


def scenario(
    name: str, *steps: Any, images: tuple[str, ...] = IMAGES, doc: str = ""
) -> JobScenario:
    return JobScenario(name, (ADD_CHAIN, ADD_TGT, *steps), SETUP, images, doc)


SCENARIOS = [
    scenario(
        "mirror-full-complete",
        cmd("blockdev-mirror", MIRROR),
        READY,
        cmd("query-jobs"),
        Graph(),
        cmd("job-complete", {"id": "m"}),
        *_done("m"),
        Graph(),
        Nodes(),
        doc="the pivot: the target takes the source's place",
    ),
    scenario(
        "mirror-full-with-guest-writes",
        *EXPORT,
        cmd("blockdev-mirror", {**MIRROR, "filter-node-name": "mt"}),
        READY,
        Graph(),
        guest("write -P 0x11 0 64k", "write -P 0x22 1M 128k", "write -z 3M 64k"),
        cmd("job-complete", {"id": "m"}),
        *_done("m"),
        Graph(),
        guest(
            "read -P 0x11 0 64k", "read -P 0x22 1M 128k", "read -P 0 3M 64k", "read -P 0xbb 2M 512k"
        ),
        doc="writes during READY reach the target; the export follows the pivot",
    ),
    scenario(
        "mirror-write-blocking",
        *EXPORT,
        cmd("blockdev-mirror", {**MIRROR, "copy-mode": "write-blocking"}),
        READY,
        guest("write -P 0x33 512k 64k"),
        cmd("job-complete", {"id": "m"}),
        *_done("m"),
        guest("read -P 0x33 512k 64k"),
    ),
    scenario(
        "mirror-soft-cancel-after-ready",
        *EXPORT,
        cmd("blockdev-mirror", MIRROR),
        READY,
        cmd("block-job-cancel", {"device": "m"}),
        *_done("m"),
        Graph(),
        guest("write -P 0x44 0 64k"),
        Nodes(),
        doc="COMPLETED without a pivot: the target keeps its copy, the source stays",
    ),
    scenario(
        "mirror-force-cancel-after-ready",
        cmd("blockdev-mirror", MIRROR),
        READY,
        cmd("block-job-cancel", {"device": "m", "force": True}),
        *_done("m", "BLOCK_JOB_CANCELLED"),
        Graph(),
    ),
    scenario(
        "mirror-pause-in-ready",
        cmd("blockdev-mirror", MIRROR),
        READY,
        cmd("job-pause", {"id": "m"}),
        Wait("JOB_STATUS_CHANGE", {"status": "standby"}),
        cmd("query-jobs"),
        cmd("query-block-jobs"),
        cmd("job-resume", {"id": "m"}),
        Wait("JOB_STATUS_CHANGE", {"status": "ready"}),
        cmd("job-pause", {"id": "m"}),
        Wait("JOB_STATUS_CHANGE", {"status": "standby"}),
        cmd("job-complete", {"id": "m"}),
        cmd("job-resume", {"id": "m"}),
        *_done("m"),
        Graph(),
        doc="pause of a READY job is standby; complete is allowed there",
    ),
    scenario(
        "mirror-cancel-before-ready",
        cmd("blockdev-mirror", {**MIRROR, "speed": 1}),
        cmd("job-complete", {"id": "m"}),
        cmd("block-job-cancel", {"device": "m"}),
        *_done("m", "BLOCK_JOB_CANCELLED"),
        Graph(),
        images=("top.qcow2",),
        doc="before READY even a soft cancel is a force cancel",
    ),
    scenario(
        "mirror-sync-top",
        _add("tgt-top", backing="mid"),
        cmd(
            "blockdev-mirror", {"device": "top", "job-id": "m", "target": "tgt-top", "sync": "top"}
        ),
        READY,
        cmd("job-complete", {"id": "m"}),
        *_done("m"),
        Graph(),
        Nodes(),
        images=("top.qcow2", "tgt-top.qcow2"),
    ),
    scenario(
        "mirror-sync-none",
        *EXPORT,
        cmd("blockdev-mirror", {**MIRROR, "sync": "none"}),
        READY,
        guest("write -P 0x55 64k 64k"),
        cmd("job-complete", {"id": "m"}),
        *_done("m"),
        Nodes(),
    ),
    scenario(
        "mirror-auto-finalize-off",
        cmd("blockdev-mirror", {**MIRROR, "auto-finalize": False, "auto-dismiss": False}),
        READY,
        cmd("job-complete", {"id": "m"}),
        Wait("BLOCK_JOB_PENDING", {"id": "m"}),
        Graph(),
        cmd("job-finalize", {"id": "m"}),
        Wait("JOB_STATUS_CHANGE", {"status": "concluded"}),
        cmd("query-jobs"),
        Graph(),
        cmd("job-dismiss", {"id": "m"}),
        Wait("JOB_STATUS_CHANGE", {"status": "null"}),
    ),
    scenario(
        "mirror-argument-errors",
        _add("big"),
        cmd("blockdev-mirror", {**MIRROR, "device": "mid"}),
        cmd("blockdev-mirror", {**MIRROR, "device": "nope"}),
        cmd("blockdev-mirror", {**MIRROR, "target": "nope"}),
        cmd("blockdev-mirror", {**MIRROR, "target": "top"}),
        cmd("blockdev-mirror", {**MIRROR, "target": "mid"}),
        cmd("blockdev-mirror", {**MIRROR, "granularity": 256}),
        cmd("blockdev-mirror", {**MIRROR, "granularity": 3 * 4096}),
        cmd("blockdev-mirror", {**MIRROR, "buf-size": -1}),
        cmd("blockdev-mirror", {**MIRROR, "sync": "incremental"}),
        cmd("blockdev-mirror", {**MIRROR, "job-id": "1m"}),
        cmd(
            "blockdev-mirror",
            {**MIRROR, "job-id": None}
            if False
            else {k: v for k, v in MIRROR.items() if k != "job-id"},
        ),
        cmd("blockdev-mirror", {**MIRROR, "speed": -1}),
        cmd("blockdev-mirror", {**MIRROR, "replaces": "nope"}),
        cmd("blockdev-mirror", {**MIRROR, "replaces": "mid"}),
        cmd("blockdev-mirror", {**MIRROR, "filter-node-name": "tgt"}),
        cmd("blockdev-mirror", {**MIRROR, "target": "big", "job-id": "b"}),
        *_done("b"),
        cmd("query-jobs"),
        Graph(),
        images=("top.qcow2",),
        doc="QEMU's checks in QEMU's order; a target of another size fails at run time",
    ),
    scenario(
        "active-commit",
        *EXPORT,
        cmd("block-commit", {"device": "top", "job-id": "c"}),
        Wait("BLOCK_JOB_READY", {"device": "c"}),
        Graph(),
        guest("write -P 0x66 0 64k"),
        cmd("job-complete", {"id": "c"}),
        *_done("c"),
        Graph(),
        Nodes(),
        guest("read -P 0x66 0 64k", "read -P 0xcc 1M 1M"),
        doc="a mirror of type commit into the base; the export pivots onto the base",
    ),
    scenario(
        "active-commit-soft-cancel",
        cmd("block-commit", {"device": "top", "job-id": "c", "base-node": "mid"}),
        Wait("BLOCK_JOB_READY", {"device": "c"}),
        Graph(),
        cmd("block-job-cancel", {"device": "c"}),
        *_done("c"),
        Graph(),
        Nodes(),
    ),
]


SCENARIOS.append(
    JobScenario(
        "mirror-metadata-preallocated-source",
        (
            ADD_CHAIN,
            ADD_TGT,
            _add("pm"),
            cmd("blockdev-mirror", {**MIRROR, "device": "pm"}),
            READY,
            cmd("job-complete", {"id": "m"}),
            *_done("m"),
            Nodes(),
        ),
        (
            *SETUP,
            qemu_img("create -q -f qcow2 -o preallocation=metadata {dir}/pm.qcow2 4M"),
            qemu_io("-f qcow2 -c 'write -P 0x55 1M 64k' {dir}/pm.qcow2"),
        ),
        ("pm.qcow2", "tgt.qcow2"),
        "every cluster of the source is allocated, but its file is a hole outside the "
        "written one: block status recurses into the file (metadata preallocation), the "
        "holes read as zeros and the target gets zero clusters, not copies",
    )
)


@pytest.mark.parametrize("job_scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_mirror_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)
