"""Differential harness for block jobs: the same job scenario on qemu-storage-daemon and txgraph.

A job scenario is setup actions (the scenario harness's :class:`Shell` & co.) and
steps, run in lockstep-free order on each peer in a directory of its own:

* a QMP command dict — its canonical reply is recorded (``query-jobs`` and
  ``query-block-jobs`` without the progress and ``busy`` members, which depend on
  where the job thread happens to be);
* :class:`Wait` — wait (with a deadline) for the next event of a name whose data
  contains the given members; records whether it came. Timing is made
  deterministic this way and with ``speed`` and pauses, never with sleeps;
* :class:`Graph` / :class:`Nodes` — record ``x-debug-query-block-graph`` /
  ``query-named-block-nodes`` in canonical form at that point.

After the steps the peer is closed and the whole event sequence is recorded
(timestamps dropped, auto node names canonical, ``offset`` of
BLOCK_JOB_CANCELLED dropped because it says where the cancel caught the job;
the paused/running pairs a drain causes are compared like every other event:
txgraph pauses the jobs above a drained node as QEMU does -- except between
independent jobs, whose ends fall where their threads happen to be), and so are the
images named by the scenario:
virtual size, allocation map, backing string and format, ``qemu-img check``'s
verdict (corruptions, leaks, compressed clusters), a vmdk's grains and content
(``qemu-img compare`` between the two peers' copies).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.differential.harness import SetupAction, _run_setup
from tests.support.guest_io import normalise_qemu_io
from tests.support.vmdk_grains import grains
from txgraph.oracle.canon import canon_graph, canon_nodes, canon_value
from txgraph.oracle.peers import EnginePeer, Peer, PeerFactory, QSDPeer

__all__ = [
    "canon_jobs",
    "Wait",
    "Run",
    "Graph",
    "Nodes",
    "substitute_dir",
    "JobScenario",
    "JobTrace",
    "run_job_scenario",
    "compare_job_traces",
    "job_differential",
]

#: members of query-jobs / query-block-jobs entries that say where the job thread is
_RACY = frozenset({"current-progress", "offset", "busy"})


@dataclass(frozen=True)
class Wait:
    """Wait for the next event ``event`` whose data contains ``match``."""

    event: str
    match: dict[str, Any] = field(default_factory=dict)
    timeout: float = 60.0


@dataclass(frozen=True)
class Run:
    """Run an external tool in the scenario directory (``{dir}`` substituted), e.g. qemu-io
    writing through an export while a job runs; records its exit status and output."""

    argv: tuple[str, ...]


@dataclass(frozen=True)
class Graph:
    """Record the canonical ``x-debug-query-block-graph``."""


@dataclass(frozen=True)
class Nodes:
    """Record the canonical ``query-named-block-nodes``."""


JobStep = dict[str, Any] | Wait | Run | Graph | Nodes


@dataclass(frozen=True)
class JobScenario:
    name: str
    steps: tuple[JobStep, ...]
    setup: tuple[SetupAction, ...] = ()
    #: image files (relative to the scenario directory) compared after the run
    images: tuple[str, ...] = ()
    doc: str = ""
    #: tools run on the images once the peer has closed them (their metadata is on disk)
    after: tuple[Run, ...] = ()
    #: compare events job by job (jobs that do not wait for each other)
    per_job_events: bool = False


@dataclass
class JobTrace:
    peer: str
    workdir: Path
    records: list[tuple[str, Any]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    images: dict[str, Any] = field(default_factory=dict)


def canon_jobs(value: Any) -> Any:
    if isinstance(value, list):
        return [{k: v for k, v in entry.items() if k not in _RACY} for entry in value]
    return value


def _job_of(entry: tuple[str, Any]) -> Any:
    data = entry[1]
    return data.get("id", data.get("device"))


def _canon_events(events: list[dict[str, Any]], workdir: str, per_job: bool = False) -> list[Any]:
    out: list[Any] = []
    for msg in events:
        data = dict(msg.get("data") or {})
        if msg["event"] == "BLOCK_JOB_CANCELLED" or (
            msg["event"] == "BLOCK_JOB_COMPLETED" and "error" in data
        ):
            data.pop("offset", None)  # where the cancel or the error caught the job
        out.append((msg["event"], canon_value(data, workdir)))
    if per_job:
        # Independent jobs finish in whatever order their threads do: compare each alone,
        # without the pauses one job's end causes in another that happens to still run.
        out = _without_drain_pairs(out)
        out.sort(key=lambda e: str(_job_of(e)))
    return out


def _without_drain_pairs(out: list[Any]) -> list[Any]:
    """Drop each JOB_STATUS_CHANGE paused (standby) directly followed, among the same
    job's events, by running (ready): the pause of one drained section."""
    drop: set[int] = set()
    last: dict[Any, int] = {}
    for i, entry in enumerate(out):
        job = _job_of(entry)
        prev = last.get(job)
        if (
            prev is not None
            and entry[0] == "JOB_STATUS_CHANGE"
            and out[prev][0] == "JOB_STATUS_CHANGE"
            and (out[prev][1].get("status"), entry[1].get("status"))
            in (("paused", "running"), ("standby", "ready"))
        ):
            drop.update((prev, i))
            last.pop(job)
            continue
        last[job] = i
    return [e for i, e in enumerate(out) if i not in drop]


def _image_facts(path: Path) -> Any:
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    mapping = json.loads(
        subprocess.run(
            ["qemu-img", "map", "-U", "--output=json", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    # Adjacent stretches that agree on depth, data and zero are one: qemu-img map splits
    # them where host offsets are not contiguous, which depends on the order in which
    # concurrent copies allocated clusters (QSD runs up to 16 at once), not on the data.
    merged: list[list[Any]] = []
    for m in mapping:
        key = (m["depth"], m["data"], m["zero"])
        if merged and tuple(merged[-1][2:]) == key and merged[-1][0] + merged[-1][1] == m["start"]:
            merged[-1][1] += m["length"]
        else:
            merged.append([m["start"], m["length"], *key])
    facts: dict[str, Any] = {
        "virtual-size": info.get("virtual-size"),
        "backing": info.get("backing-filename"),
        "backing-format": info.get("backing-filename-format"),
        "map": [tuple(m) for m in merged],
    }
    if info.get("format") == "vmdk":
        # what each grain stores (compressed streams of streamOptimized included), in guest
        # order: the allocation itself, whatever order concurrent copies wrote it in
        facts["grains"] = grains(path)
    if info.get("format") == "qcow2":
        # qemu-img map does not say how a cluster is stored; check counts compressed ones
        # (backup with compress: true writes compressed clusters to a qcow2 target)
        check = subprocess.run(
            ["qemu-img", "check", "-U", "--output=json", str(path)],
            capture_output=True,
            text=True,
        )
        if check.stdout.strip():
            result = json.loads(check.stdout)
            facts["compressed-clusters"] = result.get("compressed-clusters", 0)
            # a consistent image on both peers: no corruption, no leak, nothing unreadable
            facts["check"] = {k: result.get(k, 0) for k in ("check-errors", "corruptions", "leaks")}
    return facts


def _record(peer: Peer, step: JobStep, workdir: str) -> tuple[str, Any]:
    if isinstance(step, Wait):
        got = peer.wait_event(step.event, step.match, step.timeout)
        return f"wait {step.event} {step.match}", got is not None
    if isinstance(step, Run):
        argv = [a.replace("{dir}", workdir) for a in step.argv]
        res = subprocess.run(argv, capture_output=True, text=True, cwd=workdir, timeout=120)
        out = normalise_qemu_io(res.stdout, workdir) if argv[0] == "qemu-io" else res.stdout
        return f"run {' '.join(step.argv)}", (res.returncode, canon_value(out, workdir))
    if isinstance(step, Graph):
        reply = peer.execute({"execute": "x-debug-query-block-graph"})
        return "graph", canon_graph(reply["return"], workdir) if "return" in reply else reply
    if isinstance(step, Nodes):
        reply = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        # Jobs write: actual-size of writable nodes is the filesystem's block accounting.
        return "nodes", canon_nodes(reply["return"], workdir, True) if "return" in reply else reply
    reply = peer.execute(substitute_dir(step, workdir))
    if step["execute"] in ("query-jobs", "query-block-jobs") and "return" in reply:
        reply = {"return": canon_jobs(reply["return"])}
    reply.pop("id", None)
    if "error" in reply:
        reply = {
            "error": {"class": reply["error"].get("class"), "desc": reply["error"].get("desc")}
        }
    return json.dumps(step)[:200], canon_value(reply, workdir)


def substitute_dir(value: Any, workdir: str) -> Any:
    """``{dir}`` in every string of a command becomes the peer's scenario directory."""
    if isinstance(value, str):
        return value.replace("{dir}", workdir)
    if isinstance(value, dict):
        return {k: substitute_dir(v, workdir) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_dir(v, workdir) for v in value]
    return value


def run_job_scenario(scenario: JobScenario, factory: PeerFactory) -> JobTrace:
    """Run the scenario on a fresh peer in a fresh directory (kept for the image checks)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"txj-{scenario.name[:20]}-"))
    _run_setup(scenario.setup, workdir)
    peer = factory(workdir)
    trace = JobTrace(getattr(peer, "label", "?"), workdir)
    try:
        for step in scenario.steps:
            trace.records.append(_record(peer, step, str(workdir)))
        events = peer.received_events()
    finally:
        peer.close()
    trace.events = _canon_events(events, str(workdir), scenario.per_job_events)
    for run in scenario.after:
        trace.records.append(_record(peer, run, str(workdir)))
    for image in scenario.images:
        trace.images[image] = canon_value(_image_facts(workdir / image), str(workdir))
    return trace


def compare_job_traces(left: JobTrace, right: JobTrace, images: Sequence[str]) -> list[str]:
    """Human-readable differences; empty when the two runs agree."""
    out: list[str] = []
    for i, ((what, a), (_w, b)) in enumerate(zip(left.records, right.records)):
        if a != b:
            out.append(f"step {i} {what}:\n    {left.peer}: {a}\n    {right.peer}: {b}")
    if left.events != right.events:
        out.append(f"events:\n    {left.peer}: {left.events}\n    {right.peer}: {right.events}")
    for image in images:
        if left.images.get(image) != right.images.get(image):
            out.append(
                f"image {image}:\n    {left.peer}: {left.images.get(image)}\n"
                f"    {right.peer}: {right.images.get(image)}"
            )
        res = subprocess.run(
            ["qemu-img", "compare", "-U", str(left.workdir / image), str(right.workdir / image)],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            out.append(f"image {image} content: {res.stdout.strip()} {res.stderr.strip()}")
    return out


def job_differential(
    scenario: JobScenario, left: PeerFactory = QSDPeer, right: PeerFactory = EnginePeer
) -> list[str]:
    """Run on both peers (QSD first), compare, clean up; the differences."""
    a = run_job_scenario(scenario, left)
    try:
        b = run_job_scenario(scenario, right)
        try:
            return compare_job_traces(a, b, scenario.images)
        finally:
            shutil.rmtree(b.workdir, ignore_errors=True)
    finally:
        shutil.rmtree(a.workdir, ignore_errors=True)
