"""Running one sequence: on txgraph alone (``model``) or on txgraph and a fresh QSD (``qsd``).

Each run gets fresh peers in fresh directories holding the same images
(:data:`~txgraph.fuzz.generate.IMAGES`; one directory per peer, because image
locks are real and would conflict across the two processes). After every step:

* ``qsd``: the canonical reply and state of both peers must be equal
  (:func:`txgraph.oracle.compare.lockstep`); a daemon that dies or hangs is a
  ``crash`` with what it printed (QEMU's assertion text);
* both modes, txgraph's own invariants: no Python exception or Python text in a
  reply, a refused command leaves the graph digest and the data plane exactly
  as before (all-or-nothing), and in ``model`` mode the whole graph satisfies
  every rule with the z3 and the networkx engines agreeing.

The first failure ends the run as its :class:`Divergence`; every step's
*behaviour* — command, outcome, masked error text, rule id — is returned for
coverage guidance.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txgraph.checker import check
from txgraph.fuzz.deadline import StepHang, TimedEnginePeer
from txgraph.fuzz.generate import Resources
from txgraph.fuzz.guest import GUEST_IO, guest_io_reply
from txgraph.fuzz.jobs import JOB_COMMANDS, WAIT_EVENT
from txgraph.fuzz.known import classify
from txgraph.fuzz.replies import reply_problem
from txgraph.fuzz.stall import SHORT, stalled, wait_cannot_end
from txgraph.fuzz.waits import run_wait
from txgraph.fuzz.workdir import REAPER, make_images
from txgraph.jobs.manager import manager_of
from txgraph.oracle.canon import canon_text, substitute
from txgraph.oracle.compare import StepRecord, compare_records, lockstep, snapshot
from txgraph.oracle.peers import EnginePeer, Peer, QSDPeer

__all__ = ["Divergence", "RunResult", "run_sequence", "behaviour", "StepSource"]

#: ``source(index, resources)``: the next message, or None to end the sequence
StepSource = Callable[[int, Resources], dict[str, Any] | None]

#: fragments that only Python, never QEMU, puts into an error text
_PYTHON_TEXT = re.compile(
    r"Traceback|object has no attribute|NoneType|KeyError|TypeError|"
    r"ValueError|IndexError|RecursionError|unexpected keyword|"
    r"takes \d+ positional|not subscriptable|embedded null"
)


@dataclass
class Divergence:
    """The first step where txgraph and QSD (or txgraph and its invariants) disagreed."""

    kind: str
    step: int
    command: str
    lines: list[str]
    signature: str
    #: the id of the known QEMU bug this is (:mod:`txgraph.fuzz.known`), else None
    known: str | None = None


@dataclass
class RunResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    behaviours: list[str] = field(default_factory=list)
    divergence: Divergence | None = None
    #: per step and peer, the canonical reply (``txgraph replay`` prints them)
    replies: list[dict[str, Any]] = field(default_factory=list)
    #: the most user-named nodes live at once (how deep a state the sequence built)
    live: int = 0


def _mask(text: str) -> str:
    """An error text with names, paths and numbers masked: one behaviour per message shape."""
    text = re.sub(r"'[^']*'", "'_'", text)
    text = re.sub(r"\{dir\}[^\s,:'\"]*", "PATH", text)
    return re.sub(r"\d+", "N", text)


def _label(message: dict[str, Any]) -> str:
    name = str(message.get("execute"))
    args = message.get("arguments") or {}
    if name == "blockdev-add":
        return f"{name}:{args.get('driver')}"
    if name == "transaction":
        return f"{name}:{'+'.join(str(a.get('type')) for a in args.get('actions', []))}"
    if name == GUEST_IO:  # the qemu-io operations, zero writes apart
        ops = [
            str(c).split()[0] + ("-z" if " -z " in str(c) else "") for c in args.get("commands", [])
        ]
        return f"{name}:{'+'.join(ops)}"
    if name == WAIT_EVENT:
        inner = args.get("command") or {}
        return f"{name}:{inner.get('execute', '')}:{args.get('status')}"
    if name == "blockdev-reopen":
        return f"{name}:{'+'.join(str(o.get('driver')) for o in args.get('options', []))}"
    return name


def behaviour(message: dict[str, Any], reply: dict[str, Any]) -> str:
    """``command | outcome | masked error text | rule id``: the unit of coverage."""
    if message.get("execute") == WAIT_EVENT:
        out = reply.get("return", {})
        inner = behaviour(
            (message.get("arguments") or {}).get("command") or {}, out.get("reply") or {}
        )
        return f"{_label(message)}|{inner}|reached={out.get('reached')}"
    if message.get("execute") == GUEST_IO:
        out = reply.get("return", {})
        failed = [line for line in out.get("output", []) if "failed" in line or "rror" in line]
        return f"{_label(message)}|rc={out.get('rc')}|{_mask(failed[0]) if failed else ''}|"
    if "error" not in reply:
        return f"{_label(message)}|ok"
    err = reply["error"]
    rule = (err.get("__io.txgraph_explanation") or {}).get("rule", "")
    return f"{_label(message)}|{err.get('class')}|{_mask(str(err.get('desc')))}|{rule}"


def _signature(kind: str, message: dict[str, Any], lines: list[str]) -> str:
    if kind == "crash":
        # a crash is its last words (QEMU's assertion, or the signal); what the daemon
        # printed before them (qemu-img's "Formatting ...") and the step it died on
        # differ from one instance to the next
        text = "\n".join(lines)
        abort = re.search(r"[^\s:]+:\d+: \w+: Assertion .*? failed\.", text)
        signal = re.search(r"\(exit status -?\d+\)\s*$", text)
        words = [w for w in text.splitlines() if w.strip()]
        shape = (
            abort.group(0)
            if abort
            else signal.group(0)
            if signal
            else _mask(words[-1] if words else "")
        )
        return hashlib.sha1(f"{kind}\n{shape}".encode()).hexdigest()[:10]
    shape = "\n".join(_mask(line) for line in lines[:3])
    return hashlib.sha1(f"{kind}\n{_label(message)}\n{shape}".encode()).hexdigest()[:10]


def _finding(kind: str, index: int, message: dict[str, Any], lines: list[str]) -> Divergence:
    """The divergence for a failure at step ``index``; a known QEMU bug gets its own
    kind (``qsd-crash`` or ``qsd-bug``) and the signature ``qemu-<id>``."""
    bug = classify(kind, lines, _label(message)) if kind in ("crash", "mismatch") else None
    if bug is not None:
        return Divergence(
            "qsd-crash" if kind == "crash" else "qsd-bug",
            index,
            _label(message),
            lines,
            f"qemu-{bug.id}",
            bug.id,
        )
    return Divergence(kind, index, _label(message), lines, _signature(kind, message, lines))


#: seconds without a reply after which qemu-storage-daemon counts as hung (commands take
#: milliseconds; the margin is for a loaded machine)
HANG_SECONDS = 30.0


class _Sides:
    """The peers of one run and their directories; closes and removes everything."""

    def __init__(self, against: str) -> None:
        self.dirs: list[Path] = []
        self.peers: list[Peer] = []
        sides: dict[str, list[Callable[[Path], Peer]]] = {
            "qsd": [QSDPeer, TimedEnginePeer],
            "model": [TimedEnginePeer],
            "qsd-only": [QSDPeer],
        }
        factories = sides[against]
        try:
            for factory in factories:
                d = Path(tempfile.mkdtemp(prefix="txgraph-fuzz-"))
                self.dirs.append(d)
                make_images(d)
                peer = factory(d)
                if isinstance(peer, QSDPeer):
                    # a daemon that has not answered in this long hangs (a QEMU deadlock):
                    # a finding, found sooner than QMPProcess's general deadline
                    peer._qsd.reply_timeout = HANG_SECONDS
                self.peers.append(peer)
        except BaseException:
            self.close()
            raise
        last = self.peers[-1]
        self.engine: EnginePeer | None = last if isinstance(last, EnginePeer) else None
        self.autos: list[dict[str, str]] = [{} for _ in self.peers]
        self.history: list[str] = []

    def session(self) -> Any:
        if self.engine is None or self.engine._engine is None:
            return None
        return self.engine._engine.context.session

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        REAPER.remove(self.dirs)


#: job statuses in which a job thread changes nothing (it waits for a command)
_QUIET = frozenset({"paused", "ready", "pending", "concluded", "null"})
#: members of query-jobs / query-block-jobs entries that say where the job thread is
#: (as the job differential harness drops them)
_RACY = frozenset({"current-progress", "offset", "busy"})


def _job_ids(session: Any) -> list[str]:
    if session is None or session.jobs is None:
        return []
    return [str(j["id"]) for j in manager_of(session).query_jobs()]


def _engine_state(sides: _Sides) -> tuple[str, Any] | None:
    """txgraph's digest and runtime state, or None while a job is in motion.

    The model invariants are checked at quiescent points only: with no job, or every
    job paused, READY, pending or concluded (after a wait step, for instance), so that
    they never race a job thread that is changing the graph.
    """
    session = sides.session()
    if session is None:
        return None
    with session.lock:
        if session.jobs is not None:
            manager = manager_of(session)
            # The job_exit bottom halves already due run now, as the engine runs them
            # before its next command: their graph changes belong to no command.
            manager.run_pending_exits()
            if any(_in_motion(job) for job in manager.jobs):
                return None
        return session.graph.digest(), session.runtime.state()


def _in_motion(job: Any) -> bool:
    """A job that may still change the graph by itself: not in a resting status, or
    READY but told to complete or cancel (its run is on its way out)."""
    if str(job.status) not in _QUIET:
        return True
    return not job.exited and (job.cancelled or bool(getattr(job, "should_complete", False)))


def _moving(sides: _Sides) -> bool:
    """A job is in motion (txgraph's view): not paused, READY, pending or concluded."""
    session = sides.session()
    if session is None or session.jobs is None:
        return False
    return any(j["status"] not in _QUIET for j in manager_of(session).query_jobs())


def _copies_on_read(sides: _Sides) -> bool:
    """A copy-on-read filter is in txgraph's graph: any read through it (a format probing
    its header on open) may write clusters into the image below, so ``actual-size`` follows
    the host from then on as after a guest write."""
    session = sides.session()
    if session is None:
        return False
    with session.lock:
        return any(node.driver == "copy-on-read" for node in session.graph.nodes.values())


def _settled(diff: list[str], wrote: bool, moving: bool) -> list[str]:
    """The difference lines that do not follow the host's timing: after guest or job writes
    ``actual-size`` (st_blocks); while a job moves, image sizes too (a file node's size is
    its file's, which grows as the job copies a chunk)."""
    if wrote:
        diff = [line for line in diff if ".actual-size:" not in line]
    if moving:
        diff = [line for line in diff if ".virtual-size:" not in line]
    return diff


def _calm_jobs(record: StepRecord) -> None:
    """Drop the racy members of a job query's canonical reply."""
    ret = record.reply.get("return") if isinstance(record.reply, dict) else None
    if isinstance(ret, list):
        record.reply = {
            "return": [
                {k: v for k, v in e.items() if k not in _RACY} if isinstance(e, dict) else e
                for e in ret
            ]
        }


def _wait_lockstep(
    sides: _Sides, message: dict[str, Any], wrote: bool
) -> tuple[list[StepRecord], list[dict[str, Any]], list[str]]:
    """A wait step on every peer (:func:`txgraph.fuzz.waits.run_wait`), recorded and compared
    as :func:`txgraph.oracle.compare.lockstep` does a command."""
    sides.history.append(json.dumps(message))
    records, raw = [], []
    args = message.get("arguments") or {}
    # txgraph alone: a job that cannot move before a command ends the wait early (a
    # differential run waits on both sides alike, so that QSD is never judged by txgraph)
    alone = len(sides.peers) == 1 and sides.engine is not None
    until: Callable[[], bool] | None = (
        (lambda: stalled(sides.session(), args.get("job"))) if alone else None
    )
    for i, (peer, d) in enumerate(zip(sides.peers, sides.dirs)):
        inner, reply = run_wait(peer, args, str(d), sides.autos[i], until)
        raw.append(inner or {})
        nodes, graph, sides.autos[i] = snapshot(peer, str(d), wrote)
        records.append(StepRecord(len(sides.history) - 1, sides.history[-1], reply, nodes, graph))
    diff = compare_records(records[0], records[1]) if len(records) > 1 else []
    return records, raw, diff


#: digest of a graph -> what the full check found on it (None: every rule holds).
#: The check is a pure function of the graph, and sequences that share a corpus
#: prefix revisit the same graphs again and again, so a graph is checked once per
#: worker process. Owned by that process's one campaign thread (no lock); cleared
#: when it grows past _MEMO_LIMIT entries.
_CHECKED: dict[str, tuple[str, list[str]] | None] = {}
_MEMO_LIMIT = 50_000
#: tests set this: a memo hit is checked again from scratch, and a different verdict is
#: the ``memo`` divergence (the proof that the digest covers all the check reads)
VERIFY_MEMO = False


def _full_check(sides: _Sides, digest: str) -> tuple[str, list[str]] | None:
    """The whole graph against every rule, with the z3 and the networkx engines agreeing."""
    if digest in _CHECKED and not VERIFY_MEMO:
        return _CHECKED[digest]
    session = sides.session()
    found: tuple[str, list[str]] | None = None
    if session is not None and session.graph.nodes:
        z3_verdict = check(session.graph, None, engine="z3")
        nx_verdict = check(session.graph, None, engine="structural")
        if z3_verdict.ok != nx_verdict.ok:
            found = "checker-engines", [f"z3 ok={z3_verdict.ok}, networkx ok={nx_verdict.ok}"]
        elif not z3_verdict.ok:
            first = z3_verdict.violations[0]
            found = "invariant", [f"[{first.rule}] {first.sentence}"]
    if digest in _CHECKED and _CHECKED[digest] != found:
        return "memo", [f"graph {digest[:12]}: memo {_CHECKED[digest]}, checked now {found}"]
    if len(_CHECKED) >= _MEMO_LIMIT:
        _CHECKED.clear()
    _CHECKED[digest] = found
    return found


def _invariants(
    sides: _Sides,
    message: dict[str, Any],
    reply: dict[str, Any],
    before: tuple[str, Any] | None,
    after: tuple[str, Any] | None,
    full_check: bool,
) -> tuple[str, list[str]] | None:
    """txgraph's own invariants after a step; ``before``/``after``: its state around it.

    ``full_check`` (model mode) adds the reply's QAPI validity and the whole-graph check.
    """
    err = reply.get("error")
    if err is not None:
        if err.get("class") == "PythonException":
            return "exception", [str(err.get("desc"))]
        if _PYTHON_TEXT.search(str(err.get("desc"))):
            return "python-text", [f"reply text: {err.get('desc')}"]
    if full_check and message.get("execute") not in (GUEST_IO, WAIT_EVENT):
        problem = reply_problem(str(message.get("execute")), reply)
        if problem is not None:
            return "qapi-reply", [problem]
    if err is not None:
        if before is not None and after != before:
            return "not-atomic", [
                "txgraph refused the command but its state changed",
                f"reply: {err.get('desc')}",
            ]
        if full_check and after == before:
            return None  # nothing changed: the graph is the one already checked
    if full_check and after is not None:
        return _full_check(sides, after[0])
    return None


def run_sequence(source: StepSource, against: str, max_steps: int = 40) -> RunResult:
    """Run the messages ``source`` yields on fresh peers until it stops or something diverges.

    ``against`` is ``qsd`` (txgraph and QSD compared), ``model`` (txgraph and its
    invariants) or ``qsd-only`` (QSD alone: only a crash or hang diverges).
    """
    result = RunResult()
    res = Resources()
    sides = _Sides(against)
    state: tuple[str, Any] | None = None
    wrote = False  # a guest I/O step ran (actual-size is no longer compared)
    try:
        for index in range(max_steps):
            session = sides.session()
            if session is not None:
                with session.lock:
                    res.refresh(session.graph)
                    res.jobs = _job_ids(session)
                result.live = max(result.live, len(res.live))
            message = source(index, res)
            if message is None:
                break
            result.steps.append(message)
            # the state after the previous step is the state before this one
            before = state if index else _engine_state(sides)
            name = message.get("execute")
            inner = message
            if name == GUEST_IO:
                wrote = True
                replies = {
                    peer.label: guest_io_reply(str(d), message.get("arguments") or {})
                    for peer, d in zip(sides.peers, sides.dirs)
                }
                result.replies.append(replies)
                reply = replies.get("txgraph", replies.get("qsd", {}))
                if _timed_out(replies.get("txgraph")) and not _timed_out(replies.get("qsd")):
                    # qemu-io got no answer from txgraph's NBD server (QSD's did answer)
                    lines = ["txgraph's NBD server did not answer qemu-io in time (a hang)"]
                    result.divergence = _finding("hang", index, message, lines)
                    break
                if against == "qsd" and replies["qsd"] != replies["txgraph"]:
                    qsd_out, txg_out = replies["qsd"]["return"], replies["txgraph"]["return"]
                    lines = [
                        f"guest-io.{k}: {json.dumps(qsd_out[k])[:400]}  !=  "
                        f"{json.dumps(txg_out[k])[:400]}"
                        for k in ("rc", "output")
                        if qsd_out[k] != txg_out[k]
                    ]
                    result.divergence = _finding("mismatch", index, message, lines)
                    break
            elif name == WAIT_EVENT:
                inner = (message.get("arguments") or {}).get("command") or message
                if inner.get("execute") in JOB_COMMANDS:
                    wrote = True  # jobs write: actual-size follows the host's timing
                records, raw, diff = _wait_lockstep(sides, message, wrote)
                result.replies.append({p.label: r.reply for p, r in zip(sides.peers, records)})
                first = raw[0].get("error", {})
                if first.get("class") == "PeerDied" or getattr(sides.peers[0], "death", None):
                    lines = [str(first.get("desc") or getattr(sides.peers[0], "death", ""))]
                    result.divergence = _finding("crash", index, message, lines)
                    break
                diff = _settled(diff, wrote, _moving(sides))
                if diff:
                    result.divergence = _finding("mismatch", index, message, diff)
                    break
                reply = step_reply = records[-1].reply  # what the behaviour records
                if against != "qsd" and inner is not message:  # the command's own reply
                    reply = raw[-1]
            elif against == "qsd":
                if name in JOB_COMMANDS:
                    wrote = True
                records, diff = lockstep(
                    sides.peers, [str(d) for d in sides.dirs], sides.autos, sides.history, message
                )
                if name in ("query-jobs", "query-block-jobs"):
                    for record in records:
                        _calm_jobs(record)
                    diff = compare_records(records[0], records[1])
                left, right = records[0].reply or {}, records[1].reply or {}
                result.replies.append({"qsd": left, "txgraph": right})
                reply = right
                death = getattr(sides.peers[0], "death", None)
                if ("error" in left and left["error"].get("class") == "PeerDied") or death:
                    # it died on the command, or right after its reply (the state queries)
                    lines = [str(left.get("error", {}).get("desc") or death)]
                    result.divergence = _finding("crash", index, message, lines)
                    break
                wrote = wrote or _copies_on_read(sides)
                diff = _settled(diff, wrote, _moving(sides))
                if diff:
                    result.divergence = _finding("mismatch", index, message, diff)
                    break
            else:
                session = sides.session()
                autos: dict[str, str] = {}
                if session is not None:
                    with session.lock:  # job threads change the graph under this lock
                        autos = {
                            canon_text(n, None): n for n in session.graph.nodes if n.startswith("#")
                        }
                sent = substitute(message, str(sides.dirs[0]), autos)
                if name == "x-txgraph-wait-job" and wait_cannot_end(
                    session, sent.get("arguments") or {}
                ):
                    # the job cannot get there before a command: the engine runs the wait
                    # and answers its timeout error at once instead of in 10 s
                    sent = {**sent, "arguments": {**sent["arguments"], "timeout": SHORT}}
                reply = sides.peers[0].execute(sent)
                result.replies.append({sides.peers[0].label: reply})
                if reply.get("error", {}).get("class") == "PeerDied":
                    lines = [str(reply["error"].get("desc"))]
                    result.divergence = _finding("crash", index, message, lines)
                    break
            if name != WAIT_EVENT:
                step_reply = reply
            accepted = "error" not in reply
            res.note(message, accepted)
            result.behaviours.append(behaviour(message, step_reply))
            state = _engine_state(sides)
            broken = _invariants(
                sides,
                inner,
                reply,
                before if state is not None else None,
                state,
                full_check=against == "model",
            )
            if broken is not None:
                kind, lines = broken
                result.divergence = _finding(kind, index, message, lines)
                break
    except StepHang as hang:
        # the engine did not answer (a deadlock, a wait without end): the step is the
        # finding; where the engine was stuck is its signature
        lines = [f"txgraph did not answer within {hang.seconds:g} s (a hang)"]
        lines += [f"stuck in {where}" for where in hang.where]
        result.divergence = _finding("hang", len(result.steps) - 1, result.steps[-1], lines)
    finally:
        sides.close()
    return result


def _timed_out(reply: dict[str, Any] | None) -> bool:
    """A guest I/O step's reply says qemu-io timed out (:func:`guest_io_reply`)."""
    return reply is not None and reply.get("return", {}).get("rc") == -1
