"""Commit into a base shorter than the top, differentially against qemu-storage-daemon 7.2.

QEMU grows the base to the top's length before it copies (commit_run, and
mirror_run for an active commit: ``blk_truncate`` of the base, for which the
job's base BlockBackend took ``resize``). The images are compared after the
job on both peers (virtual size, ``qemu-img map``, ``compare`` and ``check``);
the cases: a qcow2 base whose L1 table fits, one whose L1 table must grow
(1 MiB to 1 GiB), a base with a backing file longer than its old size (the
new area becomes zero clusters so the backing's data does not show through),
a raw base (the file grows), the active commit, a fixed-size raw base (the job
fails: ``Operation not supported``) and a base that an export keeps from
resizing (refused at the start with the permission conflict).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import cmd, qemu_img, qemu_io
from tests.differential.jobs.harness import Graph, JobScenario, Nodes, Wait, job_differential

pytestmark = pytest.mark.qsd


def _file(name: str, ext: str = "qcow2") -> dict[str, Any]:
    return {"driver": "file", "filename": f"{name}.{ext}", "node-name": f"{name}-f"}


def _chain(base: dict[str, Any]) -> dict[str, Any]:
    return cmd(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": "top",
            "file": _file("top"),
            "backing": {
                "driver": "qcow2",
                "node-name": "mid",
                "file": _file("mid"),
                "backing": base,
            },
        },
    )


QCOW2_BASE = {"driver": "qcow2", "node-name": "base", "file": _file("base")}
CHAIN = _chain(QCOW2_BASE)


def _done(job: str, event: str = "BLOCK_JOB_COMPLETED") -> tuple[Wait, Wait]:
    return Wait(event, {"device": job}), Wait("JOB_STATUS_CHANGE", {"id": job, "status": "null"})


def _setup(base_size: str, size: str, base_fmt: str = "qcow2") -> tuple[Any, ...]:
    """base (0xaa at 0-512k) <- mid (0xcc at 2M-3M, and at the end) <- top (0xdd at 3M)."""
    base = f"{{dir}}/base.{base_fmt}"
    return (
        qemu_img(f"create -q -f {base_fmt} {base} {base_size}"),
        qemu_io(f"-f {base_fmt} -c 'write -P 0xaa 0 512k' {base}"),
        qemu_img(f"create -q -f qcow2 -b base.{base_fmt} -F {base_fmt} {{dir}}/mid.qcow2 {size}"),
        qemu_io("-c 'write -P 0xcc 2M 1M' {dir}/mid.qcow2"),
        qemu_img(f"create -q -f qcow2 -b mid.qcow2 -F qcow2 {{dir}}/top.qcow2 {size}"),
        qemu_io("-c 'write -P 0xdd 3M 64k' {dir}/top.qcow2"),
    )


COMMIT = {"device": "top", "job-id": "c", "top-node": "mid", "base-node": "base"}
IMAGES = ("top.qcow2", "mid.qcow2", "base.qcow2")

SCENARIOS = [
    JobScenario(
        "commit-into-smaller-base",
        (CHAIN, cmd("block-commit", COMMIT), *_done("c"), Graph(), Nodes()),
        _setup("1M", "4M"),
        IMAGES,
        doc="the base grows from 1 MiB to 4 MiB, then mid's data lands in it",
    ),
    JobScenario(
        "commit-into-smaller-base-l1-grows",
        (
            CHAIN,
            cmd("block-commit", COMMIT),
            *_done("c"),
            Nodes(),
        ),
        (
            *_setup("1M", "1G"),
            qemu_io("-c 'write -P 0xee 700M 128k' {dir}/mid.qcow2"),
        ),
        IMAGES,
        doc="1 MiB to 1 GiB: the base's L1 table needs a second entry (qcow2_grow_l1_table)",
    ),
    JobScenario(
        "commit-into-smaller-base-over-a-longer-backing",
        (
            _chain(
                {
                    **QCOW2_BASE,
                    "backing": {"driver": "qcow2", "node-name": "b0", "file": _file("b0")},
                }
            ),
            cmd("block-commit", COMMIT),
            *_done("c"),
            Nodes(),
        ),
        (
            qemu_img("create -q -f qcow2 {dir}/b0.qcow2 4M"),
            qemu_io("-c 'write -P 0x11 0 4M' {dir}/b0.qcow2"),
            qemu_img("create -q -f qcow2 -b b0.qcow2 -F qcow2 {dir}/base.qcow2 1M"),
            qemu_io("-c 'write -P 0xaa 0 512k' {dir}/base.qcow2"),
            qemu_img("create -q -f qcow2 -b base.qcow2 -F qcow2 {dir}/mid.qcow2 4M"),
            qemu_io("-c 'write -P 0xcc 2M 1M' {dir}/mid.qcow2"),
            qemu_img("create -q -f qcow2 -b mid.qcow2 -F qcow2 {dir}/top.qcow2 4M"),
        ),
        (*IMAGES, "b0.qcow2"),
        doc="b0 is longer than base was: the new area is zeroed (BDRV_REQ_ZERO_WRITE), "
        "so b0's 0x11 stays hidden as it was",
    ),
    JobScenario(
        "commit-into-smaller-raw-base",
        (
            _chain({"driver": "raw", "node-name": "base", "file": _file("base", "raw")}),
            cmd("block-commit", COMMIT),
            *_done("c"),
            Nodes(),
        ),
        _setup("1M", "4M", "raw"),
        ("top.qcow2", "mid.qcow2", "base.raw"),
        doc="a raw base grows with its file (ftruncate)",
    ),
    JobScenario(
        "active-commit-into-smaller-base",
        (
            CHAIN,
            cmd("block-commit", {"device": "top", "job-id": "c", "base-node": "base"}),
            Wait("BLOCK_JOB_READY", {"device": "c"}),
            Nodes(),
            cmd("job-complete", {"id": "c"}),
            *_done("c"),
            Graph(),
            Nodes(),
        ),
        _setup("1M", "4M"),
        IMAGES,
        doc="mirror_run grows the base before the copy; READY, then the pivot onto it",
    ),
    JobScenario(
        "commit-into-fixed-size-raw-base",
        (
            _chain(
                {
                    "driver": "raw",
                    "node-name": "base",
                    "size": 1048576,
                    "file": _file("base", "raw"),
                }
            ),
            cmd("block-commit", COMMIT),
            *_done("c"),
            Nodes(),
        ),
        _setup("1M", "4M", "raw"),
        ("top.qcow2", "mid.qcow2", "base.raw"),
        doc="raw_co_truncate refuses a fixed size: the job ends with ENOTSUP, "
        "nothing copied, the chain as before",
    ),
    JobScenario(
        "commit-into-smaller-base-an-export-holds",
        (
            CHAIN,
            cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}}),
            cmd("block-export-add", {"type": "nbd", "id": "e", "node-name": "base"}),
            cmd("block-commit", COMMIT),
            cmd("block-commit", {"device": "top", "job-id": "c", "base-node": "base"}),
            cmd("query-jobs"),
            Graph(),
        ),
        _setup("1M", "4M"),
        IMAGES,
        doc="the export does not share resize: both commits are refused at the start",
    ),
]


@pytest.mark.parametrize("job_scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_commit_grow_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)
