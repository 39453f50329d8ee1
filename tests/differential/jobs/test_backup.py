"""blockdev-backup with copy-before-write, differentially against qemu-storage-daemon 7.2.

The point of a backup: the target ends up with the guest view *at the moment
the backup started*, while the guest keeps writing. The guest writes through
an NBD export on the source during a rate-limited backup; on both peers the
target then holds the original data (checked with qemu-io patterns) and both
targets are equal (``qemu-img compare``).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.differential.harness import WriteFile, cmd, qemu_img, qemu_io
from tests.differential.jobs.harness import Graph, JobScenario, Nodes, Run, Wait, job_differential
from tests.differential.jobs.test_mirror import ADD_TGT, EXPORT, SETUP, _add, guest
from tests.differential.jobs.test_stream import ADD_CHAIN

pytestmark = pytest.mark.qsd

IMAGES = ("top.qcow2", "tgt.qcow2")
#: 4 MiB: 1 MiB random, 1 MiB of 0x5a, zeros (fixed seed: both peers get the same bytes)
_RANDOM = random.Random(9).randbytes(1 << 20) + b"\x5a" * (1 << 20) + bytes(2 << 20)
BACKUP = {"device": "top", "job-id": "b", "target": "tgt", "sync": "full"}


def _done(job: str, event: str = "BLOCK_JOB_COMPLETED") -> tuple[Wait, Wait]:
    return Wait(event, {"device": job}), Wait("JOB_STATUS_CHANGE", {"id": job, "status": "null"})


def target_reads(*commands: str) -> Run:
    """qemu-io on the target image itself (read-only, shared), after the job."""
    argv: list[str] = ["qemu-io", "-r", "-U", "{dir}/tgt.qcow2"]
    for c in commands:
        argv += ["-c", c]
    return Run(tuple(argv))


def scenario(
    name: str,
    *steps: Any,
    images: tuple[str, ...] = IMAGES,
    doc: str = "",
    after: tuple[Run, ...] = (),
    per_job: bool = False,
    setup: tuple[Any, ...] = (),
) -> JobScenario:
    return JobScenario(
        name,
        (ADD_CHAIN, ADD_TGT, *steps),
        (
            *SETUP,
            qemu_img("create -q -f qcow2 -b top.qcow2 -F qcow2 {dir}/ovl.qcow2"),
            qemu_img("create -q -f qcow2 {dir}/tgt2.qcow2 4M"),
            qemu_img("create -q -f qcow2 {dir}/bad.qcow2 4M"),
            *setup,
        ),
        images,
        doc,
        after,
        per_job,
    )


ADD_TGT2 = _add("tgt2")
#: a target whose data writes fail with EIO (blkdebug below the qcow2 format)
ADD_BAD = cmd(
    "blockdev-add",
    {
        "driver": "qcow2",
        "node-name": "bad",
        "file": {
            "driver": "blkdebug",
            "node-name": "bad-dbg",
            "inject-error": [{"event": "write_aio", "errno": 5, "once": False}],
            "image": {"driver": "file", "filename": "bad.qcow2", "node-name": "bad-f"},
        },
    },
)


def _add_flaky(errno: int) -> dict[str, Any]:
    """A target whose first data write fails with ``errno``, the later ones succeed."""
    return cmd(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": "bad",
            "file": {
                "driver": "blkdebug",
                "node-name": "bad-dbg",
                "inject-error": [{"event": "write_aio", "errno": errno, "once": True}],
                "image": {"driver": "file", "filename": "bad.qcow2", "node-name": "bad-f"},
            },
        },
    )


def _txn(*actions: dict[str, Any], **props: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"actions": list(actions)}
    if props:
        args["properties"] = props
    return cmd("transaction", args)


def _backup_action(**data: Any) -> dict[str, Any]:
    return {"type": "blockdev-backup", "data": {"sync": "full", **data}}


SCENARIOS = [
    scenario(
        "backup-full",
        cmd("blockdev-backup", BACKUP),
        *_done("b"),
        Graph(),
        Nodes(),
        after=(target_reads("read -P 0xaa 0 1M", "read -P 0xcc 1M 1M", "read -P 0xdd 3M 64k"),),
    ),
    scenario(
        "backup-point-in-time-under-guest-writes",
        *EXPORT,
        cmd("blockdev-backup", {**BACKUP, "speed": 1}),
        cmd("job-pause", {"id": "b"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        # (no named-node query here: how much a paused backup copied is a race in QSD)
        Graph(),
        guest(
            "write -P 0x11 0 64k",
            "write -P 0x22 1M 128k",
            "write -z 2M 64k",
            "write -P 0x33 3M 64k",
        ),
        cmd("block-job-set-speed", {"device": "b", "speed": 0}),
        cmd("job-resume", {"id": "b"}),
        *_done("b"),
        Graph(),
        guest("read -P 0x11 0 64k", "read -P 0x22 1M 128k"),
        after=(
            target_reads(
                "read -P 0xaa 0 1M",
                "read -P 0xcc 1M 1M",
                "read -P 0xbb 2M 512k",
                "read -P 0xdd 3M 64k",
            ),
        ),
        doc="the target is the guest view at the start; the guest sees its writes",
    ),
    scenario(
        "backup-sync-top",
        _add("ovl-target", backing="mid") if False else cmd("query-jobs"),
        cmd("blockdev-backup", {**BACKUP, "sync": "top"}),
        *_done("b"),
        Nodes(),
        doc="only what top itself allocates is copied",
    ),
    scenario(
        "backup-sync-none-until-cancel",
        *EXPORT,
        cmd("blockdev-backup", {**BACKUP, "sync": "none"}),
        Graph(),
        guest("write -P 0x44 0 64k"),
        cmd("query-jobs"),
        cmd("job-cancel", {"id": "b"}),
        *_done("b", "BLOCK_JOB_CANCELLED"),
        Graph(),
        after=(target_reads("read -P 0xaa 0 64k"),),
        doc="sync=none only saves what the guest overwrites; it runs until cancelled",
    ),
    scenario(
        "backup-cancel-always-forces",
        cmd("blockdev-backup", {**BACKUP, "speed": 1}),
        cmd("block-job-cancel", {"device": "b"}),
        *_done("b", "BLOCK_JOB_CANCELLED"),
        Graph(),
        images=("top.qcow2",),
    ),
    scenario(
        "backup-auto-dismiss-off",
        cmd("blockdev-backup", {**BACKUP, "auto-dismiss": False, "filter-node-name": "cbw"}),
        Wait("JOB_STATUS_CHANGE", {"status": "concluded"}),
        Graph(),
        cmd("query-jobs"),
        cmd("job-dismiss", {"id": "b"}),
        Wait("JOB_STATUS_CHANGE", {"status": "null"}),
        Graph(),
    ),
    scenario(
        "backup-argument-errors",
        _add("big"),
        cmd("blockdev-backup", {**BACKUP, "target": "top"}),
        cmd("blockdev-backup", {**BACKUP, "target": "big"}),
        cmd("blockdev-backup", {**BACKUP, "device": "nope"}),
        cmd("blockdev-backup", {**BACKUP, "target": "nope"}),
        cmd("blockdev-backup", {**BACKUP, "target": "mid"}),
        cmd("blockdev-backup", {**BACKUP, "sync": "incremental"}),
        cmd("blockdev-backup", {**BACKUP, "sync": "bitmap"}),
        cmd("blockdev-backup", {**BACKUP, "bitmap-mode": "always"}),
        cmd("blockdev-backup", {**BACKUP, "bitmap": "bm"}),
        cmd("blockdev-backup", {**BACKUP, "job-id": "1b"}),
        cmd("blockdev-backup", {k: v for k, v in BACKUP.items() if k != "job-id"}),
        cmd("blockdev-backup", {**BACKUP, "speed": -1}),
        cmd("blockdev-backup", {**BACKUP, "filter-node-name": "tgt"}),
        cmd("query-jobs"),
        Graph(),
        Nodes(),
        images=("top.qcow2",),
    ),
    scenario(
        "txn-backup-then-abort",
        _txn(
            _backup_action(device="top", target="tgt", **{"job-id": "b"}),
            {"type": "abort", "data": {}},
        ),
        cmd("query-jobs"),
        Graph(),
        images=("top.qcow2",),
        doc="the job was created and never started: no BLOCK_JOB_* events",
    ),
    scenario(
        "txn-two-backups-grouped",
        ADD_TGT2,
        _txn(
            _backup_action(device="top", target="tgt", speed=1, **{"job-id": "b"}),
            _backup_action(device="base", target="tgt2", **{"job-id": "c"}),
            **{"completion-mode": "grouped"},
        ),
        Wait("JOB_STATUS_CHANGE", {"id": "c", "status": "waiting"}),
        cmd("query-jobs"),
        cmd("block-job-set-speed", {"device": "b", "speed": 0}),
        *_done("b"),
        *_done("c"),
        Graph(),
        images=("top.qcow2", "tgt.qcow2", "tgt2.qcow2"),
        doc="the early finisher waits for its group; then both finalise, newest first",
    ),
    scenario(
        "txn-grouped-one-fails",
        ADD_TGT2,
        ADD_BAD,
        _txn(
            _backup_action(device="top", target="bad", **{"job-id": "b"}),
            _backup_action(device="base", target="tgt2", speed=1, **{"job-id": "c"}),
            **{"completion-mode": "grouped"},
        ),
        *_done("b"),
        *_done("c", "BLOCK_JOB_CANCELLED"),
        Graph(),
        images=("top.qcow2",),
        doc="one job's error cancels its whole group",
    ),
    scenario(
        "txn-individual-one-fails",
        ADD_TGT2,
        ADD_BAD,
        _txn(
            _backup_action(device="top", target="bad", **{"job-id": "b"}),
            _backup_action(device="base", target="tgt2", **{"job-id": "c"}),
        ),
        *_done("b"),
        *_done("c"),
        images=("top.qcow2", "tgt2.qcow2"),
        per_job=True,
    ),
    scenario(
        "backup-target-error-stop",
        ADD_BAD,
        cmd("blockdev-backup", {**BACKUP, "target": "bad", "on-target-error": "stop"}),
        Wait("BLOCK_JOB_ERROR", {"device": "b"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        cmd("query-block-jobs"),
        cmd("block-job-cancel", {"device": "b", "force": True}),
        *_done("b", "BLOCK_JOB_CANCELLED"),
        images=("top.qcow2",),
        doc="stop: the job pauses as if the user paused it, io-status failed",
    ),
    scenario(
        "backup-target-error-ignore",
        _add_flaky(5),
        cmd("blockdev-backup", {**BACKUP, "target": "bad", "on-target-error": "ignore"}),
        Wait("BLOCK_JOB_ERROR", {"device": "b", "action": "ignore"}),
        *_done("b"),
        images=("top.qcow2",),
        doc="ignore: the error is reported and the copy retried; the job then completes",
    ),
    scenario(
        "backup-target-enospc-stop-resume",
        _add_flaky(28),
        cmd("blockdev-backup", {**BACKUP, "target": "bad", "on-target-error": "enospc"}),
        Wait("BLOCK_JOB_ERROR", {"device": "b", "action": "stop"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        cmd("query-block-jobs"),
        cmd("job-resume", {"id": "b"}),
        *_done("b"),
        images=("top.qcow2",),
        doc="enospc: ENOSPC stops the job (io-status nospace); a resume goes on",
    ),
    scenario(
        "backup-onto-a-parent-of-the-source",
        cmd("blockdev-add", {"driver": "raw", "node-name": "dev", "file": "top"}),
        cmd("blockdev-add", {"driver": "raw", "node-name": "up", "file": "dev"}),
        cmd("blockdev-backup", {**BACKUP, "device": "dev", "target": "up"}),
        Graph(),
        images=("top.qcow2",),
        doc="found by the jobs reconfiguration machine: bdrv_replace_node leaves 'up' on "
        "'dev' (moving it would close a loop through the filter's target), so the "
        "filter's write unshare conflicts with it -- a permission conflict, no prefix",
    ),
    scenario(
        "insert-filter-over-a-frozen-link",
        cmd(
            "blockdev-add",
            {"driver": "copy-on-read", "node-name": "cor", "file": "top", "bottom": "mid"},
        ),
        cmd("blockdev-backup", {**BACKUP, "device": "mid"}),
        cmd("blockdev-backup", {**BACKUP, "device": "mid", "filter-node-name": "f"}),
        cmd("block-stream", {"device": "mid", "job-id": "s"}),
        cmd("query-jobs"),
        Graph(),
        images=("top.qcow2",),
        doc="a copy-on-read filter with bottom freezes top's backing link to mid: "
        "bdrv_insert_node of the copy-before-write (and of stream's copy-on-read) "
        "fails in bdrv_replace_node, 'Could not replace node: ' first",
    ),
    scenario(
        "backup-cancel-while-pending",
        cmd("blockdev-backup", {**BACKUP, "auto-finalize": False}),
        Wait("JOB_STATUS_CHANGE", {"id": "b", "status": "pending"}),
        cmd("query-jobs"),
        cmd("job-cancel", {"id": "b"}),
        cmd("query-jobs"),
        Graph(),
        doc="found by the jobs reconfiguration machine: a force cancel of a job that is "
        "done still counts (job_cancel_async_locked) and aborts its transaction",
    ),
    scenario(
        "backup-sync-top-of-an-unallocated-null-co",
        cmd("blockdev-add", {"driver": "null-co", "node-name": "nul", "size": 4194304}),
        cmd(
            "blockdev-backup",
            {**BACKUP, "device": "nul", "sync": "top", "auto-finalize": False},
        ),
        Wait("JOB_STATUS_CHANGE", {"id": "b", "status": "pending"}),
        cmd("query-jobs"),
        cmd("job-finalize", {"id": "b"}),
        *_done("b"),
        doc="found by the jobs reconfiguration machine: null-co without read-zeroes "
        "allocates nothing (null_co_block_status), so sync=top has nothing to copy",
    ),
    scenario(
        "backup-compress",
        cmd("blockdev-backup", {**BACKUP, "compress": True}),
        *_done("b"),
        Graph(),
        doc="a qcow2 target gets compressed clusters (qemu-img check counts them)",
    ),
    scenario(
        "backup-compress-under-guest-writes",
        *EXPORT,
        cmd("blockdev-backup", {**BACKUP, "compress": True, "speed": 1}),
        cmd("job-pause", {"id": "b"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        guest("write -P 0x11 0 64k", "write -P 0x22 1M 128k", "write -P 0x33 3M 64k"),
        cmd("block-job-set-speed", {"device": "b", "speed": 0}),
        cmd("job-resume", {"id": "b"}),
        *_done("b"),
        after=(
            target_reads(
                "read -P 0xaa 0 1M",
                "read -P 0xcc 1M 1M",
                "read -P 0xbb 2M 512k",
                "read -P 0xdd 3M 64k",
            ),
        ),
        doc="copy-before-write saves the old data compressed too (one block-copy state)",
    ),
    scenario(
        "backup-compress-small-zstd-clusters",
        _add("tz"),
        ADD_TGT2,
        cmd("blockdev-add", {"driver": "raw", "node-name": "traw", "file": "tgt2"}),
        cmd("blockdev-backup", {**BACKUP, "target": "traw", "compress": True}),
        cmd("blockdev-backup", {**BACKUP, "target": "tz", "compress": True}),
        *_done("b"),
        images=("top.qcow2", "tz.qcow2"),
        setup=(
            qemu_img(
                "create -q -f qcow2 -o cluster_size=4096,compression_type=zstd {dir}/tz.qcow2 4M"
            ),
        ),
        doc="raw cannot compress; 4 KiB zstd clusters: each 64 KiB block-copy chunk is "
        "16 compressed clusters (qcow2_co_pwritev_compressed_part)",
    ),
    scenario(
        "backup-compress-incompressible",
        cmd(
            "blockdev-add",
            {
                "driver": "raw",
                "node-name": "rnd",
                "file": {"driver": "file", "filename": "rnd.raw"},
            },
        ),
        cmd("blockdev-backup", {**BACKUP, "device": "rnd", "compress": True}),
        *_done("b"),
        images=("tgt.qcow2",),
        setup=(WriteFile("rnd.raw", _RANDOM),),
        doc="random data does not fit in cluster_size - 1 bytes: those clusters are "
        "written as normal clusters, the patterned ones compressed",
    ),
    scenario(
        "backup-metadata-preallocated-source",
        _add("pm"),
        cmd("blockdev-backup", {**BACKUP, "device": "pm"}),
        *_done("b"),
        images=("pm.qcow2", "tgt.qcow2"),
        setup=(
            qemu_img("create -q -f qcow2 -o preallocation=metadata {dir}/pm.qcow2 4M"),
            qemu_io("-f qcow2 -c 'write -P 0x55 1M 64k' {dir}/pm.qcow2"),
        ),
        doc="block status recurses into the file of a metadata-preallocated source: its "
        "holes read DATA|ZERO, and block-copy writes zeros for them (zero clusters in the "
        "target), the written cluster as data",
    ),
]


_PARAMS = [pytest.param(s, id=s.name) for s in SCENARIOS]


@pytest.mark.parametrize("job_scenario", _PARAMS)
def test_backup_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)


def test_point_in_time_holds_on_both_peers() -> None:
    """Not only equal: on QSD and on txgraph the target reads the data of the moment the
    backup started (every qemu-io pattern check passes) and the guest reads its writes."""
    import shutil

    from tests.differential.jobs.harness import EnginePeer, QSDPeer, run_job_scenario

    sc = next(s for s in SCENARIOS if s.name == "backup-point-in-time-under-guest-writes")
    for factory in (QSDPeer, EnginePeer):
        trace = run_job_scenario(sc, factory)
        try:
            runs = [(what, value) for what, value in trace.records if what.startswith("run ")]
            assert len(runs) == 3
            for what, (status, lines) in runs:
                assert status == 0, (trace.peer, what, lines)
                assert not [ln for ln in lines if "Pattern verification failed" in ln], (
                    trace.peer,
                    what,
                    lines,
                )
        finally:
            shutil.rmtree(trace.workdir, ignore_errors=True)
