"""Live-data differential harness: graph changes under guest I/O, QSD 7.2 against txgraph.

A :class:`LiveScenario` has a setup (images made with ``qemu-img`` and filled with
``qemu-io``, run once per peer in that peer's own directory) and steps:

* a QMP command dict (``{dir}`` and ``{#blockN}`` placeholders as in
  :mod:`tests.differential.harness`): recorded are the canonical reply and, after it,
  the canonical ``query-named-block-nodes``/``x-debug-query-block-graph`` state and
  ``query-block-exports``;
* :class:`IO`: ``qemu-io`` as the NBD client of an export (exit status, result lines;
  :mod:`tests.support.guest_io`);
* :class:`View`: size and checksum of an export's whole guest view;
* :class:`Split`: different QMP steps per peer (a QEMU recipe on QSD, the txgraph
  extension command that should be equivalent on txgraph); recorded are the error
  texts of failed sub-steps and the state after them.

Before the first step the harness runs ``nbd-server-start`` on ``{dir}/nbd.sock``
(itself a compared step). After the last one the peer is shut down as a user does
(SIGINT; QSD closes every node, ``txgraph serve`` ends its asyncio loop) and every
image file of the directory is checked offline (:mod:`tests.support.image_checks`).

The QSD side is a real ``qemu-storage-daemon``; the txgraph side is ``txgraph serve
--qmp`` in a child process, exactly what a user runs (:class:`txgraph.peers.TxgraphDaemon`).

Command line: ``python -m tests.differential.live.harness NAME...`` prints the diff.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.differential.harness import SetupAction, _run_setup, cmd
from tests.support.guest_io import export_digest, run_qemu_io
from tests.support.image_checks import workdir_report
from txgraph.oracle.canon import canon_reply
from txgraph.oracle.canon import substitute as _substitute
from txgraph.oracle.compare import StepRecord, _diff_values, compare_records
from txgraph.oracle.compare import snapshot as _snapshot
from txgraph.oracle.peers import _start_qsd
from txgraph.peers import QMPProcess, TxgraphDaemon

__all__ = [
    "IO",
    "io",
    "View",
    "Split",
    "LiveStep",
    "LiveScenario",
    "LivePeer",
    "LiveTrace",
    "LiveComparison",
    "LiveRecord",
    "Runner",
    "diff_record",
    "diff_images",
    "run_live",
    "compare_live",
    "live_differential",
    "qsd_peer",
    "txgraph_peer",
    "start_nbd",
    "SHUTDOWN_TIMEOUT",
]

SHUTDOWN_TIMEOUT = 20.0


@dataclass(frozen=True)
class IO:
    """``qemu-io -f raw nbd+unix:///EXPORT?socket=... -c CMD...`` (``ro``: open with ``-r``)."""

    export: str
    commands: tuple[str, ...]
    ro: bool = False


def io(export: str, *commands: str, ro: bool = False) -> IO:
    return IO(export, tuple(commands), ro)


@dataclass(frozen=True)
class View:
    """Size and sha256 of the whole guest view of ``export``."""

    export: str


@dataclass(frozen=True)
class Split:
    """``qsd`` steps on QSD, ``txgraph`` steps on txgraph (recipe vs extension)."""

    qsd: tuple[dict[str, Any], ...]
    txgraph: tuple[dict[str, Any], ...]
    doc: str = ""


LiveStep = dict[str, Any] | IO | View | Split


@dataclass(frozen=True)
class LiveScenario:
    name: str
    steps: tuple[LiveStep, ...]
    setup: tuple[SetupAction, ...] = ()
    doc: str = ""
    #: ``issue 7: <root cause>`` when txgraph is known to differ (strict xfail)
    xfail: str | None = None
    theme: str = ""


@dataclass
class LivePeer:
    """One running daemon in its scenario directory, with its NBD socket there."""

    label: str
    proc: QMPProcess
    workdir: Path

    @property
    def nbd_socket(self) -> str:
        return str(self.workdir / "nbd.sock")

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        """One QMP message; a dead peer becomes a ``PeerDied`` error reply (compared)."""
        try:
            return self.proc.send_raw(json.dumps(message))
        except (RuntimeError, OSError, ValueError) as exc:
            return {"error": {"class": "PeerDied", "desc": f"{self.label}: {exc}"}}

    def shutdown(self) -> int | None:
        """SIGINT and wait (QEMU's ``termsig_handler`` path; txgraph's KeyboardInterrupt)."""
        p = self.proc.proc
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        rc = p.returncode
        try:
            self.proc.close()
        except OSError:
            pass
        return rc


PeerFactory = Callable[[Path], LivePeer]


def qsd_peer(workdir: Path) -> LivePeer:
    return LivePeer("qsd", _start_qsd(str(workdir)), workdir)


def txgraph_peer(workdir: Path) -> LivePeer:
    return LivePeer("txgraph", TxgraphDaemon(workdir=str(workdir)), workdir)


@dataclass
class LiveRecord:
    index: int
    command: str
    data: dict[str, Any]
    state: StepRecord | None = None


@dataclass
class LiveTrace:
    peer: str
    scenario: str
    records: list[LiveRecord] = field(default_factory=list)
    images: dict[str, Any] = field(default_factory=dict)
    setup_error: str | None = None


def _describe(step: LiveStep) -> str:
    if isinstance(step, IO):
        return f"IO {step.export}{' (ro)' if step.ro else ''}: " + "; ".join(step.commands)
    if isinstance(step, View):
        return f"VIEW {step.export}"
    if isinstance(step, Split):
        return f"SPLIT {step.doc or ''} qsd={len(step.qsd)} txgraph={len(step.txgraph)} steps"
    return json.dumps(step)


class Runner:
    """Runs steps on one peer, tracking QEMU's auto node names for placeholders."""

    def __init__(self, peer: LivePeer) -> None:
        self.peer = peer
        self.d = str(peer.workdir)
        _, _, self.auto = _snapshot(peer, self.d, True)  # type: ignore[arg-type]

    def state(self, index: int, command: str, reply: Any) -> StepRecord:
        nodes, graph, self.auto = _snapshot(self.peer, self.d, True)  # type: ignore[arg-type]
        return StepRecord(index, command, reply, nodes, graph)

    def exports(self) -> Any:
        msg = cmd("query-block-exports")
        rep = canon_reply(msg, self.peer.execute(msg), self.d)
        if isinstance(rep, dict) and isinstance(rep.get("return"), list):
            return sorted(rep["return"], key=lambda e: json.dumps(e, sort_keys=True))
        return rep

    def qmp(self, message: dict[str, Any]) -> Any:
        sent = _substitute(message, self.d, self.auto)
        return canon_reply(sent, self.peer.execute(sent), self.d, True)

    def run(self, index: int, step: LiveStep) -> LiveRecord:
        desc = _describe(step)
        if isinstance(step, IO):
            res = run_qemu_io(
                self.peer.nbd_socket, step.export, list(step.commands), self.d, step.ro
            )
            return LiveRecord(index, desc, {"rc": res.rc, "out": list(res.lines)})
        if isinstance(step, View):
            return LiveRecord(
                index, desc, {"view": export_digest(self.peer.nbd_socket, step.export, self.d)}
            )
        if isinstance(step, Split):
            mine = step.qsd if self.peer.label == "qsd" else step.txgraph
            errors = []
            for sub in mine:
                reply = self.qmp(sub)
                if isinstance(reply, dict) and "error" in reply:
                    errors.append(f"{sub.get('execute')}: {reply['error'].get('desc')}")
            return LiveRecord(
                index,
                desc,
                {"errors": errors, "exports": self.exports()},
                self.state(index, desc, None),
            )
        reply = self.qmp(step)
        return LiveRecord(index, desc, {"exports": self.exports()}, self.state(index, desc, reply))


def start_nbd(peer: LivePeer) -> dict[str, Any]:
    """The ``nbd-server-start`` step every live run begins with (socket in the run's dir)."""
    return cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": peer.nbd_socket}}})


def run_live(scenario: LiveScenario, factory: PeerFactory) -> LiveTrace:
    """Set up a fresh directory, run the scenario on one peer, shut down, check the images."""
    workdir = Path(tempfile.mkdtemp(prefix=f"txl-{scenario.name[:16]}-"))
    trace = LiveTrace("?", scenario.name)
    try:
        try:
            _run_setup(scenario.setup, workdir)
        except Exception as exc:  # a broken setup is reported, not raised mid-comparison
            trace.setup_error = str(exc)
            return trace
        peer = factory(workdir)
        trace.peer = peer.label
        try:
            runner = Runner(peer)
            for i, step in enumerate((start_nbd(peer), *scenario.steps)):
                trace.records.append(runner.run(i, step))
        finally:
            peer.shutdown()
        trace.images = workdir_report(workdir)
        return trace
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class LiveComparison:
    scenario: str
    diffs: list[tuple[int, str, list[str]]] = field(default_factory=list)
    setup_error: str | None = None

    @property
    def equal(self) -> bool:
        return not self.diffs and self.setup_error is None

    def __bool__(self) -> bool:
        return self.equal

    def __str__(self) -> str:
        if self.setup_error:
            return f"[{self.scenario}] setup failed: {self.setup_error}"
        if not self.diffs:
            return f"[{self.scenario}] equal"
        lines = [
            f"[{self.scenario}] qsd (left) vs txgraph (right): {len(self.diffs)} "
            f"step(s) differ, first at step {self.diffs[0][0]}"
        ]
        for index, command, diff in self.diffs[:5]:
            lines.append(f"  step {index}: {command[:300]}")
            lines.extend(f"    {ln}" for ln in diff[:12])
        return "\n".join(lines)


def diff_record(a: LiveRecord, b: LiveRecord) -> list[str]:
    """Differences of one step on two peers: QMP reply and state, then the step's data."""
    out: list[str] = []
    if a.state is not None and b.state is not None:
        out += compare_records(a.state, b.state)
    _diff_values(a.data, b.data, "", out)
    return out


def diff_images(left: dict[str, Any], right: dict[str, Any]) -> list[str]:
    """Differences of two :func:`tests.support.image_checks.workdir_report` results."""
    out: list[str] = []
    _diff_values(left, right, "images", out, limit=20)
    return out


def compare_live(left: LiveTrace, right: LiveTrace) -> LiveComparison:
    """Step by step: QMP reply and state, guest I/O outcome, guest view; then every image."""
    comp = LiveComparison(left.scenario)
    if left.setup_error or right.setup_error:
        comp.setup_error = left.setup_error or right.setup_error
        return comp
    for a, b in zip(left.records, right.records):
        out = diff_record(a, b)
        if out:
            comp.diffs.append((a.index, a.command, out))
    if len(left.records) != len(right.records):
        comp.diffs.append((len(left.records), "<end>", ["step counts differ"]))
    out = diff_images(left.images, right.images)
    if out:
        comp.diffs.append((len(left.records), "<final image checks>", out))
    return comp


def live_differential(
    scenario: LiveScenario, left: PeerFactory = qsd_peer, right: PeerFactory = txgraph_peer
) -> LiveComparison:
    return compare_live(run_live(scenario, left), run_live(scenario, right))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.differential.live.harness [--self] [--show] NAME...``."""
    from tests.differential.live.scenarios import BY_NAME

    args = list(sys.argv[1:] if argv is None else argv)
    self_check = "--self" in args
    show = "--show" in args
    rc = 0
    for name in [a for a in args if not a.startswith("--")]:
        s = BY_NAME[name]
        if show:
            for r in run_live(s, qsd_peer).records:
                print(r.index, r.command, json.dumps(r.data)[:400])
            continue
        comp = live_differential(s, right=qsd_peer if self_check else txgraph_peer)
        print(comp)
        rc |= 0 if comp else 1
    return rc


if __name__ == "__main__":
    from tests.differential.live import harness as _h

    sys.exit(_h.main())
