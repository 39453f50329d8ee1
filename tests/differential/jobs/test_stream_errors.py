"""block-stream source-read errors and ``on-error``, differentially against QSD 7.2.

mid's file sits under a blkdebug node whose rule arms on ``read_aio``: qcow2
raises that event only before a *data* read (``BLKDBG_EVENT(bs->file, ...)``
in ``qcow2_co_preadv_task``), so the chain opens and the first data cluster
the stream copies out of mid fails. Each policy of ``block_job_error_action``
is compared with QSD: ``report`` ends the job with the error, ``stop`` pauses
it (io-status failed) until a resume or cancel, ``ignore`` reports and goes
on, ``enospc`` stops on ENOSPC and reports anything else.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.harness import cmd
from tests.differential.jobs.harness import Graph, JobScenario, Nodes, Wait, job_differential
from tests.differential.jobs.test_stream import CHAIN_SETUP, IMAGES, _done, _file

pytestmark = pytest.mark.qsd


def _chain_with_bad_mid(errno: int, *, once: bool) -> tuple[dict[str, Any], ...]:
    """top <- mid <- base, mid's data reads failing with ``errno`` (once or always).

    Added bottom-up by reference: nested, the header's ``mid.qcow2`` would travel
    through blkdebug's ``x-image`` into its image child and clash with the
    child's own filename (NESTED_BLKDEBUG_REFUSED below).
    """
    return (
        cmd("blockdev-add", {"driver": "qcow2", "node-name": "base", "file": _file("base")}),
        cmd("blockdev-add", _file("mid")),
        cmd(
            "blockdev-add",
            {
                "driver": "blkdebug",
                "node-name": "mid-dbg",
                "inject-error": [{"event": "read_aio", "errno": errno, "once": once}],
                "image": "mid-f",
            },
        ),
        cmd(
            "blockdev-add",
            {"driver": "qcow2", "node-name": "mid", "file": "mid-dbg", "backing": "base"},
        ),
        cmd(
            "blockdev-add",
            {"driver": "qcow2", "node-name": "top", "file": _file("top"), "backing": "mid"},
        ),
    )


#: the nested form: QEMU passes the backing filename down into blkdebug's image
NESTED_BLKDEBUG_REFUSED = cmd(
    "blockdev-add",
    {
        "driver": "qcow2",
        "node-name": "top",
        "file": _file("top"),
        "backing": {
            "driver": "qcow2",
            "node-name": "mid",
            "file": {"driver": "blkdebug", "node-name": "mid-dbg", "image": _file("mid")},
        },
    },
)


STREAM = {"device": "top", "job-id": "j"}


def scenario(name: str, add: tuple[dict[str, Any], ...], *steps: Any, doc: str = "") -> JobScenario:
    return JobScenario(name, (*add, *steps), CHAIN_SETUP, IMAGES, doc)


SCENARIOS = [
    scenario(
        "nested-blkdebug-gets-the-backing-filename",
        (NESTED_BLKDEBUG_REFUSED,),
        Graph(),
        doc="blkdebug_parse_filename hands 'mid.qcow2' to the image child: "
        "Can't specify 'file' and 'filename'",
    ),
    scenario(
        "stream-read-error-report",
        _chain_with_bad_mid(5, once=False),
        cmd("block-stream", STREAM),
        *_done("j"),
        Graph(),
        Nodes(),
        doc="report (the default): BLOCK_JOB_ERROR, then COMPLETED with the error; "
        "the top keeps its backing",
    ),
    scenario(
        "stream-read-error-stop-cancel",
        _chain_with_bad_mid(5, once=False),
        cmd("block-stream", {**STREAM, "on-error": "stop"}),
        Wait("BLOCK_JOB_ERROR", {"device": "j"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        cmd("query-block-jobs"),
        cmd("query-jobs"),
        cmd("job-cancel", {"id": "j"}),
        *_done("j", "BLOCK_JOB_CANCELLED"),
        Graph(),
    ),
    scenario(
        "stream-read-error-stop-resume",
        _chain_with_bad_mid(5, once=True),
        cmd("block-stream", {**STREAM, "on-error": "stop"}),
        Wait("BLOCK_JOB_ERROR", {"device": "j", "action": "stop"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        cmd("query-block-jobs"),
        cmd("block-job-resume", {"device": "j"}),
        *_done("j"),
        Graph(),
        doc="the once rule is gone: the resumed job retries the chunk and finishes",
    ),
    scenario(
        "stream-read-error-ignore",
        _chain_with_bad_mid(5, once=True),
        cmd("block-stream", {**STREAM, "on-error": "ignore"}),
        Wait("BLOCK_JOB_ERROR", {"device": "j", "action": "ignore"}),
        *_done("j"),
        Graph(),
    ),
    scenario(
        "stream-read-enospc-stops",
        _chain_with_bad_mid(28, once=True),
        cmd("block-stream", {**STREAM, "on-error": "enospc"}),
        Wait("BLOCK_JOB_ERROR", {"device": "j", "action": "stop"}),
        Wait("JOB_STATUS_CHANGE", {"status": "paused"}),
        cmd("query-block-jobs"),
        cmd("job-resume", {"id": "j"}),
        *_done("j"),
    ),
    scenario(
        "stream-read-eio-under-enospc-reports",
        _chain_with_bad_mid(5, once=False),
        cmd("block-stream", {**STREAM, "on-error": "enospc"}),
        *_done("j"),
        doc="enospc reports errors other than ENOSPC",
    ),
]


@pytest.mark.parametrize("job_scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_stream_errors_against_qsd(job_scenario: JobScenario) -> None:
    diffs = job_differential(job_scenario)
    assert not diffs, "\n".join(diffs)
