"""The runner's wait step (:data:`txgraph.fuzz.jobs.WAIT_EVENT`): a command, then a job event.

Each peer runs the step's command (if it has one) and then takes the job's
``JOB_STATUS_CHANGE`` events that came after the command was sent, in order,
until the job reaches the step's status, or one it rests in until a command
moves it on (the step's ``rests``: ``pending`` without auto-finalize,
``concluded`` without auto-dismiss), or ends (``null``, or ``concluded`` when
the status wanted was an earlier one), or the deadline passes. Events from
before the command are skipped: QEMU's drains pause and resume jobs
(``paused``/``running`` pairs txgraph does not have, see the job harness), and
a stale ``paused`` must not pass for the one a ``job-pause`` brings.

The step's reply is ``{"return": {"reply": COMMAND'S REPLY, "reached": STATUS}}``
(``reached`` is None when the deadline passed or the command was refused), so the
two peers are compared in the order of the waits; the QMP state after it is
compared as after any step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from txgraph.oracle.canon import canon_reply, substitute
from txgraph.oracle.peers import Peer

__all__ = ["run_wait"]


def run_wait(
    peer: Peer,
    args: dict[str, Any],
    workdir: str,
    auto: dict[str, str],
    stalled: Callable[[], bool] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Run one wait step on ``peer``: (the command's raw reply or None, the step's reply).

    ``stalled`` (model campaigns, :func:`txgraph.fuzz.stall.stalled`) says the job
    cannot change state before a command: once it does and every event it sent was
    taken, the wait ends as it would at its deadline."""
    seen = {id(e) for e in peer.received_events()}
    command = args.get("command")
    reply: dict[str, Any] | None = None
    canon: Any = None
    if isinstance(command, dict):
        sent = substitute(command, workdir, auto)
        reply = peer.execute(sent)
        canon = canon_reply(sent, reply, workdir)
        if "error" in reply:
            return reply, {"return": {"reply": canon, "reached": None}}
    job, want = args.get("job"), args.get("status")
    rests = list(args.get("rests") or [])
    deadline = time.monotonic() + float(args.get("timeout", 10))
    reached: str | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        event = peer.wait_event("JOB_STATUS_CHANGE", {"id": job}, 0.0)
        if event is None and stalled is not None and stalled():
            # no state change can come: only what was sent before the job stalled
            event = peer.wait_event("JOB_STATUS_CHANGE", {"id": job}, 0.0)
            if event is None:
                break
        if event is None:
            event = peer.wait_event("JOB_STATUS_CHANGE", {"id": job}, left)
        if event is None:
            break  # the deadline passed, or the daemon died (the caller sees that)
        if id(event) in seen:
            continue
        status = (event.get("data") or {}).get("status")
        if (
            status == want
            or status in rests
            or status == "null"
            or (status == "concluded" and want != "null")
        ):
            reached = str(status)
            break
    return reply, {"return": {"reply": canon, "reached": reached}}
