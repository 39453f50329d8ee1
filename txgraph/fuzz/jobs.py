"""Block-job actions of the generator: each job a resource with a life cycle.

A job step starts ``block-stream``, ``block-commit``, ``blockdev-mirror`` or
``blockdev-backup`` under a job id (``j0``/``j1``, sometimes a stale or no id)
and queues the rest of the job's life in :attr:`Resources.pending`, drawn in
turn with other steps possibly in between: pauses and resumes, speed changes,
``query-jobs``, a cancel, ``job-complete`` once a mirror (or an active commit)
is READY, ``job-finalize`` when auto-finalize is off, ``job-dismiss`` when
auto-dismiss is off.

Timing is made deterministic the way the job differential harness
(``tests/differential/jobs/harness.py``) does it, never with sleeps: a job that
stays in flight between steps runs at ``speed`` 1 (one chunk, then a rate-limit
sleep longer than any sequence) or is paused, READY, pending or concluded; every
command whose effect comes from the job thread (a start at full speed, a speed
change to 0, a pause, a cancel, ``job-complete``) runs together with the wait
for the event that says the job got there, as one *wait step*
(:data:`WAIT_EVENT`, run by the runner like guest I/O, not QMP: each peer runs
the command, then waits for the next event of that name whose data contains the
match; the reply and the event's data are the step's reply). So QSD and txgraph
are compared in the order of the waits, and the state after a step is never
caught half-way through a job's move. Model campaigns with txgraph's extensions
sometimes wait with ``x-txgraph-wait-job`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from txgraph.fuzz.generate import Generator

__all__ = ["WAIT_EVENT", "JOB_ACTIONS", "JOB_COMMANDS"]

#: the runner's wait step: ``{"command": QMP (optional), "job": ID, "status": S, "timeout": T}``
WAIT_EVENT = "x-fuzz-wait-event"
#: commands that start a job (their job id becomes a resource when accepted)
JOB_COMMANDS = ("block-stream", "block-commit", "blockdev-mirror", "blockdev-backup")
_IDS = ["j0", "j1"]
#: mirror and backup targets: node name -> image (1 MiB, as the chain b1 -> b0)
_TARGETS = {"t0": "o0.qcow2", "t1": "o1.qcow2"}
#: long enough for a 1-2 MiB job on a loaded machine; a wait that never ends costs this
_TIMEOUT = 10.0

Stage = Callable[["Generator"], dict[str, Any] | None]


def _cmd(execute: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        msg["arguments"] = arguments
    return msg


def wait_step(
    command: dict[str, Any] | None, job: str, status: str, rests: list[str] | None = None
) -> dict[str, Any]:
    """``command`` (if any), then the wait until ``job`` reaches ``status``, or one of the
    statuses it ``rests`` in until told to go on (``pending`` without auto-finalize,
    ``concluded`` without auto-dismiss), or ends."""
    args: dict[str, Any] = {"job": job, "status": status, "timeout": _TIMEOUT}
    if rests:
        args["rests"] = rests
    if command is not None:
        args["command"] = command
    return _cmd(WAIT_EVENT, args)


def _stage(job: str, make: Callable[[Generator], dict[str, Any] | None]) -> Stage:
    """A stage that applies only while ``job`` exists (its start may have been refused)."""
    return lambda g: make(g) if job in g.res.jobs else None


def _rests(args: dict[str, Any]) -> list[str]:
    """Where a job started with ``args`` stops until a command moves it on."""
    out = ["pending"] if args.get("auto-finalize") is False else []
    return out + (["concluded"] if args.get("auto-dismiss") is False else [])


def _then(
    job: str,
    command: Callable[[Generator], dict[str, Any]],
    status: str,
    rests: list[str] | None = None,
) -> Stage:
    """``command`` and the wait until ``job`` reached ``status``; in model campaigns with
    extensions, every other time the command and then ``x-txgraph-wait-job`` as two steps."""

    def make(g: Generator) -> dict[str, Any]:
        msg = command(g)
        if g.extensions and g.rng.random() < 0.5:
            g.res.pending.insert(
                0,
                _stage(
                    job,
                    lambda g: _cmd(
                        "x-txgraph-wait-job", {"job": job, "event": status, "timeout": _TIMEOUT}
                    ),
                ),
            )
            return msg
        return wait_step(msg, job, status, rests)

    return _stage(job, make)


def _chains(g: Generator) -> list[str]:
    return sorted(
        n for n, (drv, kids) in g.res.live.items() if drv == "qcow2" and "backing" in kids
    )


def _start(g: Generator) -> dict[str, Any] | None:
    if not g.res.live:
        return None
    kind = g.rng.choice(JOB_COMMANDS)
    chains = _chains(g)
    roots = [n for n in chains if n in g.res.parentless]  # what a mirror needs
    if kind == "blockdev-mirror" and roots:
        chains = roots
    device = g.pick(chains) if chains and g.rng.random() < 0.8 else g.node()
    if kind in ("blockdev-mirror", "blockdev-backup") and g.rng.random() < 0.5:
        fresh = [t for t in _TARGETS if t not in g.res.live]
        if fresh:
            # a target of the source's size first (a resource the job then refers to)
            g.res.pending.insert(0, _start)
            return _cmd(
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": fresh[0],
                    "file": {"driver": "file", "filename": "{dir}/" + _TARGETS[fresh[0]]},
                },
            )
    r = g.rng.random()
    job = g.rng.choice(_IDS) if r < 0.92 else ("" if r < 0.94 else None)
    args: dict[str, Any] = {"device": device}
    if job is not None:
        args["job-id"] = job
    ready = False  # READY before it ends: job-complete or a cancel ends it
    if kind == "block-commit":
        kids = g.res.live.get(device, ("", {}))[1]
        if "backing" in kids and g.rng.random() < 0.3:
            args["top-node"] = kids["backing"]  # intermediate (it may have no backing itself)
        ready = "top-node" not in args
    elif kind in ("blockdev-mirror", "blockdev-backup"):
        targets = sorted(n for n in g.res.parentless if n != device)
        mine = [t for t in targets if t in _TARGETS]
        targets = mine if mine and g.rng.random() < 0.8 else targets
        args["target"] = g.pick(targets) if targets and g.rng.random() < 0.9 else g.node()
        args["sync"] = g.rng.choice(["full", "full", "top", "none"])
        ready = kind == "blockdev-mirror"
    elif kind == "block-stream" and g.rng.random() < 0.2:
        args["base-node"] = g.node()
    if g.rng.random() < 0.25:
        args["auto-finalize"] = False
    if g.rng.random() < 0.25:
        args["auto-dismiss"] = False
    ident = job or device  # a job without an id is named after its device
    end = _end(args)
    rests = _rests(args)
    if ready:
        # a mirror may be READY at once: the start and the wait for READY are one step
        g.res.pending.extend(_after_ready(g, ident, args))
        return wait_step(_cmd(kind, args), ident, "ready", rests)
    # a backup with sync=none copies before writes until it is cancelled: it never ends
    endless = kind == "blockdev-backup" and args.get("sync") == "none"
    plan = "cancel" if endless else g.rng.choice(["run", "slow", "slow", "cancel"])
    if plan == "run":
        g.res.pending.extend(_finish(ident, args))
        return wait_step(_cmd(kind, args), ident, end, rests)
    args["speed"] = 1  # one chunk, then a sleep longer than any sequence
    if plan == "slow":
        g.res.pending.extend(
            [
                _stage(ident, lambda g: _cmd("query-jobs")),
                _then(ident, lambda g: _pause(g, ident), "paused", rests),
                _stage(ident, lambda g: _cmd("query-block-jobs")),
                _then(ident, lambda g: _cmd("job-resume", {"id": ident}), "running", rests),
                _then(
                    ident,
                    lambda g: _cmd("block-job-set-speed", {"device": ident, "speed": 0}),
                    end,
                    rests,
                ),
                *_finish(ident, args),
            ]
        )
    else:
        g.res.pending.extend(
            [
                _then(ident, lambda g: _cancel(g, ident), _cancelled_end(args), _rests(args)),
                *_dismiss(ident, args),
            ]
        )
    return _cmd(kind, args)


def _end(args: dict[str, Any]) -> str:
    """The status a job that succeeds stops at by itself."""
    if args.get("auto-finalize") is False:
        return "pending"
    return "concluded" if args.get("auto-dismiss") is False else "null"


def _cancelled_end(args: dict[str, Any]) -> str:
    return "concluded" if args.get("auto-dismiss") is False else "null"


def _dismiss(job: str, args: dict[str, Any]) -> list[Stage]:
    if args.get("auto-dismiss") is not False:
        return []
    return [
        _stage(job, lambda g: _cmd("query-jobs")),
        _stage(job, lambda g: _cmd("job-dismiss", {"id": job})),
    ]


def _finish(job: str, args: dict[str, Any]) -> list[Stage]:
    """After the job stopped by itself: finalize (it waits in pending), then dismiss."""
    stages: list[Stage] = []
    if args.get("auto-finalize") is False:
        stages.append(_then(job, lambda g: _cmd("job-finalize", {"id": job}), _cancelled_end(args)))
    return stages + _dismiss(job, args)


def _after_ready(g: Generator, job: str, args: dict[str, Any]) -> list[Stage]:
    if g.rng.random() < 0.7:
        return [
            _then(job, lambda g: _cmd("job-complete", {"id": job}), _end(args)),
            *_finish(job, args),
        ]
    return [
        _then(job, lambda g: _cancel(g, job), _cancelled_end(args), _rests(args)),
        *_dismiss(job, args),
    ]


def _pause(g: Generator, job: str) -> dict[str, Any]:
    if g.rng.random() < 0.5:
        return _cmd("job-pause", {"id": job})
    return _cmd("block-job-pause", {"device": job})


def _cancel(g: Generator, job: str) -> dict[str, Any]:
    if g.rng.random() < 0.5:
        return _cmd("job-cancel", {"id": job})
    return _cmd("block-job-cancel", {"device": job, "force": g.rng.random() < 0.5})


def _verb(g: Generator) -> dict[str, Any] | None:
    """A verb on a job that is not (or no longer) in that state, or on no job at all;
    only verbs that change nothing asynchronously when they are refused or take effect."""
    if not g.res.jobs and g.rng.random() < 0.7:
        return None
    job = g.pick(g.res.jobs, g.rng.choice(_IDS))
    verb = g.rng.choice(["job-finalize", "job-dismiss", "block-job-set-speed"])
    if verb == "block-job-set-speed":
        return _cmd(verb, {"device": job, "speed": g.rng.choice([1, 2])})
    return _cmd(verb, {"id": job})


def _query(g: Generator) -> dict[str, Any]:
    return _cmd(g.rng.choice(["query-jobs", "query-block-jobs"]))


JOB_ACTIONS: list[Stage] = [_start, _start, _start, _verb, _query]
