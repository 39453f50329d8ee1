"""The proxy's command pipeline: dry run on a mirror, refuse or forward, re-sync, compare.

:class:`ProxyEngine` stands where :class:`txgraph.qmp.engine.Engine` stands for
``txgraph serve``: :class:`txgraph.qmp.server.QMPServer` gives it every
negotiated client's command (greeting, ``qmp_capabilities``, ``id`` echo and
parse errors are the server's, as for ``txgraph serve``) and subscribes to its
events. For one command:

1. a command that cannot change the graph (``query-*``, ``x-debug-*``,
   ``qom-list``/``qom-get``...) is forwarded as it is;
2. any other is run first on the mirror (a scratch engine rebuilt from the
   upstream's graph, :func:`txgraph.plan.verify.scratch_engine`) with
   :func:`txgraph.plan.verify.run_step` under the proxy's policy. Under
   ``safe``, a command QEMU would accept but txgraph's checker refuses (or one
   a dry run cannot simulate) never reaches QEMU: its reply is a
   ``GenericError`` with txgraph's explanation (and the structured verdict in
   ``__io.txgraph_explanation``); so does a command QEMU has and txgraph does not
   model that changes the graph or the images (:data:`UNCHECKABLE`: block_resize,
   drive-mirror, device_del...). Other commands txgraph does not know (``quit``,
   ``cont``, dirty bitmaps...) are forwarded and compared like any other;
3. otherwise the command goes upstream unchanged (its ``id`` too, which QEMU
   echoes), and QEMU's reply goes back unchanged;
4. the mirror is re-captured from the upstream and the upstream's reply and
   state compared with the prediction (:func:`txgraph.oracle.compare.
   compare_records`); a difference is broadcast as ``X_TXGRAPH_DRIFT``
   ``{"command", "when": "after", "differences"}``. Block-job commands are not
   compared (their graph changes as the job runs), only re-synchronised.

Before step 2 the mirror is compared with the upstream's state: another
monitor may have changed QEMU's graph, and the verdict must be on the graph as
it is. A difference re-synchronises the mirror first and is announced as
``X_TXGRAPH_DRIFT`` with ``"when": "before"``.

``x-txgraph-proxy-check`` is answered by the proxy itself (QEMU has no such
command): ``{"agrees", "differences", "policy"}``, the mirror against the
upstream's state now (re-synchronised when they differ).

Locking: ``_pipeline`` serialises whole commands across every client and
guards ``_mirror`` (owned by the engine, replaced on every re-sync); the
upstream's own lock is held for each exchange (:mod:`txgraph.proxy.upstream`).
QEMU runs a monitor's commands one at a time as well, so no client observes
an order QEMU could not have produced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from txgraph.errors import TxgraphError
from txgraph.oracle.canon import canon_reply
from txgraph.oracle.compare import StepRecord, compare_records
from txgraph.plan.client import capture_graph
from txgraph.plan.format import Step
from txgraph.plan.importer import ImportError_
from txgraph.plan.live import live_state
from txgraph.plan.verify import run_step, scratch_engine
from txgraph.proxy.upstream import Locked, Upstream
from txgraph.qmp.engine import Engine

__all__ = ["ProxyEngine", "DRIFT_EVENT", "CHECK_COMMAND", "passes_through"]

log = logging.getLogger(__name__)

DRIFT_EVENT = "X_TXGRAPH_DRIFT"
#: answered by the proxy itself: does the mirror agree with the upstream now?
CHECK_COMMAND = "x-txgraph-proxy-check"
_READ_ONLY = ("qom-list", "qom-get", "qmp_capabilities", "x-txgraph-query-generation")
#: QEMU 7.2 commands that change the block graph or the images' data, which txgraph does
#: not model (so cannot dry-run): the safe policy keeps them from QEMU
UNCHECKABLE = frozenset(
    {
        "block_resize",
        "blockdev-create",
        "change-backing-file",
        "drive-backup",
        "drive-mirror",
        "nbd-server-add",
        "nbd-server-remove",
        "x-blockdev-amend",
        "x-blockdev-set-iothread",
        "blockdev-snapshot-internal-sync",
        "blockdev-snapshot-delete-internal-sync",
        # QEMU's system emulator: devices own BlockBackends, media change the graph
        "device_add",
        "device_del",
        "blockdev-change-medium",
        "blockdev-insert-medium",
        "blockdev-remove-medium",
        "blockdev-open-tray",
        "blockdev-close-tray",
        "eject",
    }
)
_JOB_WORDS = ("job", "block-stream", "block-commit", "blockdev-mirror", "blockdev-backup")

EventListener = Callable[[dict[str, Any]], None]


def passes_through(name: str) -> bool:
    """Commands that cannot change the block graph: forwarded without a dry run."""
    return name.startswith(("query-", "x-debug-")) or name in _READ_ONLY


def _is_job_command(message: dict[str, Any]) -> bool:
    name = str(message.get("execute"))
    if any(word in name for word in _JOB_WORDS):
        return True
    actions = message.get("arguments", {}).get("actions", []) if name == "transaction" else []
    return any(
        isinstance(a, dict) and str(a.get("type")) in ("blockdev-backup", "drive-backup")
        for a in actions
    )


class ProxyEngine(Engine):
    """A QMP engine whose commands are checked on a mirror and run by the upstream QEMU."""

    def __init__(self, upstream: Upstream, policy: str = "safe") -> None:
        super().__init__()
        self.upstream = upstream
        self.policy = policy
        self._pipeline = threading.Lock()
        self._mirror: Engine | None = None
        self._listeners: list[EventListener] = []
        self._listeners_lock = threading.Lock()
        upstream.add_listener(self._relay)
        with self._pipeline, upstream.lock:
            self._mirror = self._resync()

    # -- events --------------------------------------------------------------------------
    def add_event_listener(self, listener: EventListener) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_event_listener(self, listener: EventListener) -> None:
        with self._listeners_lock:
            self._listeners.remove(listener)

    def emit_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """An event of the proxy's own, in QEMU's shape (``qmp_event_build_dict``)."""
        now = time.time_ns()
        event: dict[str, Any] = {
            "timestamp": {
                "seconds": now // 1_000_000_000,
                "microseconds": now // 1_000 % 1_000_000,
            },
            "event": name,
        }
        if data is not None:
            event["data"] = data
        self._relay(event)

    def _relay(self, event: dict[str, Any]) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    # -- commands ------------------------------------------------------------------------
    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        """The pipeline of the module docstring for one command message."""
        name = str(message.get("execute", message.get("exec-oob", "")))
        with self._pipeline:
            try:
                if name == CHECK_COMMAND:
                    reply: dict[str, Any] = {"return": self._check()}
                elif passes_through(name) or "exec-oob" in message:
                    with self.upstream.lock:
                        reply = self.upstream.send(message)
                else:
                    reply = self._checked(name, message)
            except (TxgraphError, ImportError_) as err:
                # the upstream went away or answered a capture query oddly: say so, keep
                # serving (the mirror stays as it was; the next command compares again)
                desc = err.desc if isinstance(err, TxgraphError) else str(err)
                reply = {"error": {"class": "GenericError", "desc": f"txgraph proxy: {desc}"}}
        if "id" in message and "id" not in reply:
            # QEMU echoes ids itself; the proxy's own answers (and "went away") must too
            reply["id"] = message["id"]
        return reply

    def _resync(self) -> Engine:
        """A new mirror from the upstream's graph (the caller holds the upstream lock)."""
        # The new mirror first: a failed capture leaves the old one in place.
        engine, _source = scratch_engine(capture_graph(Locked(self.upstream)))
        if self._mirror is not None:
            self._mirror.context.session.close()
        self._mirror = None
        return engine

    def _observed(self) -> tuple[Any, Any]:
        """The upstream's state, canonical (the caller holds the upstream lock)."""
        locked = Locked(self.upstream)
        return live_state(lambda m: locked.execute(m["execute"], m.get("arguments")))

    def _behind(self) -> list[str]:
        """How the upstream differs from the mirror now; re-synchronise if it does.

        Another monitor (libvirt, a second QMP client of QEMU) may have changed the
        graph since the last command: the verdict must be on QEMU's graph as it is.
        The caller holds the upstream lock.
        """
        mirror = self._mirror
        assert mirror is not None  # set in __init__ and by every re-sync
        differences = compare_records(
            StepRecord(0, "", None, *live_state(mirror.execute)),
            StepRecord(0, "", None, *self._observed()),
        )
        if differences:
            self._mirror = self._resync()
        return differences

    def _drift(self, name: str, when: str, differences: list[str]) -> None:
        if differences:
            log.warning("drift %s %s: %s", when, name, differences)
            self.emit_event(
                DRIFT_EVENT, {"command": name, "when": when, "differences": differences}
            )

    def _checked(self, name: str, message: dict[str, Any]) -> dict[str, Any]:
        with self.upstream.lock:
            self._drift(name, "before", self._behind())
        mirror = self._mirror
        assert mirror is not None
        session = mirror.context.session
        arguments = message.get("arguments", {})
        step = Step(name, dict(arguments) if isinstance(arguments, dict) else {})
        predicted = run_step(mirror, session, 0, step, self.policy)
        with self.upstream.lock:
            refusal = self._refusal(predicted) if self.policy == "safe" else None
            if refusal is not None:
                self._mirror = self._resync()  # the dry run changed the mirror
                if "id" in message:
                    refusal["id"] = message["id"]
                return refusal
            predicted_state = live_state(mirror.execute)
            reply = self.upstream.send(message)
            self._mirror = self._resync()
            differences = []
            if not _is_job_command(message):
                # a command txgraph does not model has no predicted reply; its state still is
                unknown = predicted.reply.get("error", {}).get("class") == "CommandNotFound"
                expected = None if unknown else canon_reply(message, predicted.reply, None)
                differences = compare_records(
                    StepRecord(0, name, expected, *predicted_state),
                    StepRecord(0, name, canon_reply(message, reply, None), *self._observed()),
                )
        self._drift(name, "after", differences)
        return reply

    def _check(self) -> dict[str, Any]:
        """``x-txgraph-proxy-check``: does the mirror agree with the upstream now?

        When it does not, the mirror is re-synchronised as well (the answer
        describes the state before that)."""
        with self.upstream.lock:
            differences = self._behind()
        return {"agrees": not differences, "differences": differences, "policy": self.policy}

    def _refusal(self, predicted: Any) -> dict[str, Any] | None:
        """The reply of a command the safe policy keeps from QEMU (None: forward it)."""
        name = predicted.step.execute
        error = predicted.reply.get("error", {})
        if name in UNCHECKABLE and error.get("class") == "CommandNotFound":
            desc = (
                f"txgraph refused {name}: txgraph does not model it, so it cannot check "
                "what it does to the block graph (use --policy qemu to pass it through)"
            )
            return {"error": {"class": "GenericError", "desc": desc}}
        if predicted.not_simulated:
            desc = f"txgraph refused {predicted.step.execute}: {predicted.not_simulated}"
            return {"error": {"class": "GenericError", "desc": desc}}
        if not predicted.accepted or predicted.ok:
            return None  # QEMU answers it (an error QEMU gives itself is harmless)
        verdict = predicted.verdict or {}
        violations = verdict.get("violations", [])
        sentence = violations[0].get("sentence", "") if violations else ""
        rule = violations[0].get("rule", "") if violations else ""
        desc = f"txgraph refused {predicted.step.execute} ({rule}): {sentence}".rstrip(": ")
        return {
            "error": {
                "class": "GenericError",
                "desc": desc,
                "__io.txgraph_explanation": {"policy": self.policy, "explanation": verdict},
            }
        }

    def close(self) -> None:
        with self._pipeline:
            if self._mirror is not None:
                self._mirror.context.session.close()
                self._mirror = None
        self.upstream.remove_listener(self._relay)
        self.context.session.close()
