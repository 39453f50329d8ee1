"""QEMU 7.2 bugs the fuzzer keeps finding, each pinned by a test of its own.

A campaign against qemu-storage-daemon re-finds these again and again; they
are QEMU's, not txgraph's, so they must not read as txgraph divergences:
:func:`classify` gives a matching finding the kind ``qsd-crash`` (the daemon
aborted) or ``qsd-bug`` (the daemon answered, but its state after the step is
wrong) and a fixed signature ``qemu-<id>``, so all instances merge into one
entry and the campaign's exit status ignores them (``txgraph fuzz`` exits 1
only for findings that are not known here). The test named in each entry pins
the bug on QSD alone and shows what txgraph does instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["KnownBug", "KNOWN_BUGS", "classify", "QEMU_KINDS"]

#: the kinds of findings that are QEMU's bugs (not txgraph divergences)
QEMU_KINDS = ("qsd-crash", "qsd-bug")


@dataclass(frozen=True)
class KnownBug:
    id: str
    #: ``crash``: matched against what the daemon printed when it died;
    #: ``mismatch``: every line of the difference must match
    kind: str
    pattern: re.Pattern[str]
    #: the test that pins it (path::name)
    test: str
    summary: str
    #: when set, the step the finding came at must match it too (its fuzz label, e.g.
    #: ``block-stream`` or ``x-txgraph-wait:block-stream:concluded``): for bugs whose
    #: own words are too general (a bare SIGSEGV, a leaked anonymous BlockBackend)
    command: re.Pattern[str] | None = None
    #: when set, the first line of a mismatch must match it (the bug's own mark), the
    #: others ``pattern`` (its consequences)
    first: re.Pattern[str] | None = None


KNOWN_BUGS: tuple[KnownBug, ...] = (
    KnownBug(
        "drained-end-no-poll",
        "crash",
        re.compile(
            r"bdrv_parent_drained_end_single_no_poll: Assertion "
            r"`c->parent_quiesce_counter > 0' failed"
        ),
        "tests/differential/test_random_reconfig.py::test_qsd_crash_same_child_as_file_and_backing",
        "one node as file and backing of a qcow2, then a parent's file re-pointed at it",
    ),
    KnownBug(
        "do-drained-end",
        "crash",
        re.compile(r"bdrv_do_drained_end: Assertion `bs->quiesce_counter > 0' failed"),
        "tests/differential/test_qemu_bugs.py::"
        "test_qsd_aborts_snapshotting_the_overlay_of_the_same_transaction",
        "a transaction whose second blockdev-snapshot-sync snapshots the overlay the "
        "first one created, into the same file",
    ),
    KnownBug(
        "data-file-after-failed-reopen",
        "mismatch",
        re.compile(
            r"nodes\[[^\]]+\]\.image\.format-specific\.data\.data-file-raw: "
            r"only in left: false"
        ),
        "tests/differential/test_qemu_bugs.py::"
        "test_qsd_failed_reopen_leaves_a_stale_qcow2_data_file",
        "a refused blockdev-reopen that also named another file leaves a qcow2 whose "
        "data file is no longer its file child",
    ),
    KnownBug(
        "stream-concluded-query-segv",
        "crash",
        re.compile(r"\(exit status -11\)"),
        "tests/differential/test_qemu_bugs_jobs.py::"
        "test_qsd_segfaults_querying_nodes_after_a_concluded_stream",
        "query-named-block-nodes after a concluded, undismissed block-stream: SIGSEGV "
        "on the stream's detached copy-on-read filter (fixed in 10.2, 9dbfd4e28d)",
        re.compile(r"block-stream"),
    ),
    KnownBug(
        "stream-leaks-blockbackend",
        "mismatch",
        # the backend and its root edge, and the consistent-read it passes down the
        # top's children (their edges differ in perm only)
        re.compile(
            r'^graph\.(nodes|edges): only in left: +\["<block-backend:root->[^>"]*>"'
            r'|^graph\.edges: only in (left|right): +\["[^"<]+", "[^"]+", "\w+", '
        ),
        "tests/differential/jobs/test_qsd_job_bugs.py::"
        "test_qsd_leaks_the_stream_blockbackend_of_a_refused_block_stream",
        "a block-stream refused after its BlockBackend was made (a refused job child) "
        "leaves that anonymous BlockBackend on the top (stream_start's error path)",
        re.compile(r"block-stream"),
        re.compile(r'^graph\.nodes: only in left: +\["<block-backend:root->[^>"]*>", '),
    ),
)


def classify(kind: str, lines: list[str], command: str = "") -> KnownBug | None:
    """The known QEMU bug a finding is, if any (``kind``: ``crash`` or ``mismatch``;
    ``command``: the fuzz label of the step it came at)."""
    text = "\n".join(lines)
    for bug in KNOWN_BUGS:
        if bug.kind != kind:
            continue
        if bug.command is not None and not bug.command.search(command):
            continue
        if kind == "crash" and bug.pattern.search(text):
            return bug
        if bug.first is not None and not (lines and bug.first.search(lines[0])):
            continue
        if kind == "mismatch" and lines and all(bug.pattern.search(line) for line in lines):
            return bug
    return None
