"""Job divergences from qemu-storage-daemon 7.2 that ``txgraph fuzz`` found, pinned.

Each scenario is the shrunk finding rewritten in the job harness's terms (same steps on
QSD and on txgraph; replies, events without timestamps, ``query-jobs``, graph and
images compared). The fuzz signatures are named in each scenario's doc; each failed
before the fix it pins:

* a stream with nothing to stream ends before its command's reply (``job_exit`` is a
  bottom half that runs before the reply of a non-coroutine command), and a stream whose
  top is a filter over a node without backing ends with progress 0/0 (``stream_run``
  compares the *unfiltered* top with the base's overlay);
* ``blockdev-mirror`` decides ``zero_target`` on the sync mode given, before a ``top``
  mirror of a node without backing becomes ``full``: nothing is zeroed or marked dirty;
* ``replaces`` names a node reached from the source *down* through filters
  (``bdrv_recurse_can_replace``), and the check is made again at completion
  (``mirror_exit_common``): a refusal then fails the job with ``Operation not
  permitted`` and leaves the graph without a pivot;
* ``block-commit`` is an active commit (a mirror into the base) when someone writes the
  top, not only when the top is the device's node (``qmp_block_commit``);
* ``blockdev-reopen`` drains its subtrees before any check, so even a refused reopen
  wakes a rate-limited stream (QEMU 7.2 does not resume the sleep), and a stream ends
  at its backing's end (``stream_run``: "finish early if end of backing file has been
  reached"); the job's end is then handled before the next command runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import cmd, qemu_img, qemu_io
from tests.differential.jobs.harness import Graph, JobScenario, Nodes, Wait, job_differential

pytestmark = pytest.mark.qsd

SETUP = (
    qemu_img("create -q -f qcow2 {dir}/src.qcow2 1M"),
    qemu_io("-c 'write -P 0x11 0 64k' -c 'write -P 0x22 512k 64k' {dir}/src.qcow2"),
    qemu_img("create -q -f qcow2 {dir}/tgt.qcow2 1M"),
    qemu_img("create -q -f qcow2 {dir}/other.qcow2 1M"),
    qemu_img("create -q -f qcow2 {dir}/empty.qcow2 1M"),
)
IMAGES = ("src.qcow2", "tgt.qcow2", "other.qcow2")


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


def _done(job: str, event: str = "BLOCK_JOB_COMPLETED") -> tuple[Wait, Wait]:
    return Wait(event, {"device": job}), Wait("JOB_STATUS_CHANGE", {"id": job, "status": "null"})


def scenario(
    name: str, *steps: Any, doc: str = "", images: tuple[str, ...] = IMAGES
) -> JobScenario:
    return JobScenario(name, tuple(steps), SETUP, images, doc)


THROTTLE_GROUP = cmd("object-add", {"qom-type": "throttle-group", "id": "g"})

SCENARIOS = [
    scenario(
        "stream-without-backing-ends-before-the-reply",
        _add("empty", **{"read-only": True}),
        cmd("block-stream", {"device": "empty", "job-id": "j", "speed": 1}),
        # no wait: the job is gone when the reply comes
        cmd("query-jobs"),
        Graph(),
        Nodes(),
        doc="fuzz ba5a94e139/16ec22ca00/4ee34b6a2f/6414b28cb3/73f4003ed1/b900d6abd3/"
        "fcd5ae797b/a410d87b95/d136a3307a: a speed-1 stream with nothing to copy left "
        "its filter, its job and the read-write reopen behind on txgraph",
        images=(),
    ),
    scenario(
        "stream-of-a-filter-over-a-node-without-backing",
        THROTTLE_GROUP,
        _add("src"),
        cmd(
            "blockdev-add",
            {"driver": "throttle", "node-name": "thr", "file": "src", "throttle-group": "g"},
        ),
        cmd("block-stream", {"device": "thr", "job-id": "j", "auto-finalize": False}),
        Wait("JOB_STATUS_CHANGE", {"id": "j", "status": "pending"}),
        cmd("query-jobs"),
        cmd("query-block-jobs"),
        cmd("job-finalize", {"id": "j"}),
        *_done("j"),
        Graph(),
        doc="fuzz 1f20b050c6: QSD reports total-progress 0, txgraph reported the length",
    ),
    scenario(
        "mirror-top-of-a-node-without-backing",
        _add("src"),
        _add("tgt"),
        cmd("blockdev-mirror", {"device": "src", "job-id": "m", "target": "tgt", "sync": "top"}),
        Wait("BLOCK_JOB_READY", {"device": "m"}),
        cmd("query-block-jobs"),
        Nodes(),
        cmd("job-complete", {"id": "m"}),
        *_done("m"),
        Graph(),
        doc="fuzz c129c47ee6: the sync=top mirror zeroed and copied the whole target "
        "(READY len 1M, allocated zero clusters); QEMU copies only what the source holds",
    ),
    scenario(
        "mirror-replaces-a-node-below-a-filter",
        THROTTLE_GROUP,
        _add("src"),
        _add("tgt"),
        cmd(
            "blockdev-add",
            {"driver": "throttle", "node-name": "f", "file": "src", "throttle-group": "g"},
        ),
        cmd(
            "blockdev-mirror",
            {"device": "f", "job-id": "m", "target": "tgt", "sync": "full", "replaces": "src"},
        ),
        Wait("BLOCK_JOB_READY", {"device": "m"}),
        Graph(),
        cmd("job-complete", {"id": "m"}),
        *_done("m"),
        Graph(),
        Nodes(),
        doc="replaces below the mirrored filter is what bdrv_recurse_can_replace allows; "
        "txgraph refused it (its walk went up from the replaced node)",
    ),
    scenario(
        "mirror-replaces-rechecked-at-completion",
        THROTTLE_GROUP,
        _add("src"),
        _add("tgt"),
        _add("other"),
        cmd(
            "blockdev-add",
            {"driver": "throttle", "node-name": "f", "file": "src", "throttle-group": "g"},
        ),
        cmd(
            "blockdev-mirror",
            {
                "device": "f",
                "job-id": "m",
                "target": "tgt",
                "sync": "full",
                "replaces": "src",
                "filter-node-name": "mt",
            },
        ),
        Wait("BLOCK_JOB_READY", {"device": "m"}),
        # the filter now filters another node: replacing src would change what f shows
        cmd(
            "blockdev-reopen",
            {
                "options": [
                    {"driver": "throttle", "node-name": "f", "file": "other", "throttle-group": "g"}
                ]
            },
        ),
        cmd("job-complete", {"id": "m"}),
        *_done("m"),
        Graph(),
        Nodes(),
        doc="mirror_exit_common checks bdrv_recurse_can_replace again: the job fails with "
        "'Operation not permitted' and nothing pivots",
    ),
]


SCENARIOS.append(
    scenario(
        "commit-of-a-written-filter-is-an-active-commit",
        cmd(
            "blockdev-add",
            {"driver": "file", "filename": "{dir}/other.qcow2", "node-name": "raw"},
        ),
        cmd("blockdev-add", {"driver": "copy-on-read", "node-name": "cor", "file": "raw"}),
        # cor is both file (written) and backing of the qcow2 on top
        cmd("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "cor", "backing": "cor"}),
        cmd("block-commit", {"device": "q", "job-id": "c", "top-node": "cor"}),
        cmd(
            "block-commit",
            {"device": "q", "job-id": "c", "top-node": "cor", "backing-file": "x.qcow2"},
        ),
        Graph(),
        doc="fuzz 3cb501196d: a top with a writer makes qmp_block_commit start an active "
        "commit, whose mirror refuses a source and target that are one node below filters",
        images=(),
    )
)


SHORT_BACKING = (
    qemu_img("create -q -f raw {dir}/small.raw 64k"),
    qemu_io("-f raw -c 'write -P 0x33 0 64k' {dir}/small.raw"),
    qemu_img("create -q -f qcow2 {dir}/long.qcow2 1M"),
)
ADD_LONG = cmd(
    "blockdev-add",
    {
        "driver": "qcow2",
        "node-name": "long",
        "file": {"driver": "file", "filename": "long.qcow2", "node-name": "long-f"},
        "backing": {"driver": "file", "filename": "small.raw", "node-name": "small"},
    },
)
SCENARIOS.append(
    JobScenario(
        "stream-of-a-short-backing-ends-after-a-drain",
        (
            ADD_LONG,
            cmd("block-stream", {"device": "long", "job-id": "j", "speed": 1}),
            # the first chunk (the backing's 64k) is copied; the job sleeps for ~2 hours
            cmd("query-jobs"),
            # a reopen drains long's subtree before its checks: the job wakes up, and
            # past the backing's end there is nothing left (stream_run finishes early)
            cmd(
                "blockdev-reopen",
                {"options": [{"driver": "raw", "node-name": "long", "file": "long-f"}]},
            ),
            cmd("query-jobs"),
            Graph(),
            Nodes(),
        ),
        (*SETUP, *SHORT_BACKING),
        ("long.qcow2", "small.raw"),
        "fuzz 407d502b58/6ecd3bb29e/821e37af36/4ff93e8624: a refused blockdev-reopen had "
        "drained nothing on txgraph, and the stream went on copying zeroes past its "
        "backing's end, so it kept sleeping where QSD's ended",
    )
)


@pytest.mark.parametrize("job_scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fuzz_finding_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)
