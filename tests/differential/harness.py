"""Differential harness: run one QMP scenario on qemu-storage-daemon and on txgraph, compare.

The oracle is always a live qemu-storage-daemon 7.2 (QSD); nothing is recorded.

Vocabulary
----------
* A :class:`Scenario` is a name, a *setup* (image files made with the real ``qemu-img`` /
  ``qemu-io`` or written byte by byte, in a fresh directory per peer; ``{dir}`` in any
  argument or command string is replaced by that directory) and a list of *steps*: QMP
  command dicts (``{"execute": ..., "arguments": ...}``) or :class:`Raw` wire text.
* A :class:`Peer` is one side: :class:`QSDPeer` (a real daemon) or :class:`EnginePeer`
  (txgraph's in-process :class:`txgraph.qmp.engine.Engine`).
* :func:`run_scenario` runs the setup and the steps on a peer and returns a :class:`Trace`:
  after *every* step the canonical reply plus the canonical state
  (``query-named-block-nodes {flat: true}`` projected per node, and
  ``x-debug-query-block-graph`` as a multiset of nodes and edges).
* :func:`compare_traces` returns a :class:`Comparison`; ``str()`` of it is a compact diff.

Canonicalisation
----------------
* Every string has the peer's scenario directory replaced by ``{dir}`` and QEMU's auto node
  names ``#block<counter><2 random digits>`` replaced by ``#block<counter>`` (txgraph emulates
  the counter, so this comparison is strict).
* Step arguments may name auto nodes as ``{#block<counter>}``; the placeholder is resolved on
  each peer to the real name found in the previous state.
* Graph: numeric ids are dropped; nodes are ``(name, type)``, edges
  ``(parent, child, edge name, sorted perm, sorted shared-perm)``. Block backends with an empty
  name are named ``<bb:edge-name->child>`` (and ``#k`` when several look alike).
* Named nodes: a mapping canonical name -> projection of the fields that define behaviour
  (see :data:`NODE_FIELDS` / :data:`IMAGE_FIELDS`); ``actual-size`` only for read-only nodes
  or when the scenario declares it does no guest writes (all scenarios here do none).

Command line::

    python -m tests.differential.harness NAME [NAME...]   # QSD vs txgraph, prints a diff
    python -m tests.differential.harness --self NAME      # QSD vs QSD (harness self-check)
    python -m tests.differential.harness --list           # all scenario names
    python -m tests.differential.harness --show NAME      # the QSD trace only
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txgraph.oracle.canon import (  # noqa: F401  (re-exported for the scenario modules)
    IMAGE_FIELDS,
    NODE_FIELDS,
    canon_graph,
    canon_nodes,
    canon_reply,
    canon_text,
)
from txgraph.oracle.canon import substitute as _substitute
from txgraph.oracle.compare import StepRecord, compare_records, lockstep  # noqa: F401
from txgraph.oracle.compare import snapshot as _snapshot
from txgraph.oracle.peers import EnginePeer, Peer, PeerFactory, QSDPeer

__all__ = [
    "Raw",
    "Step",
    "Shell",
    "WriteFile",
    "MkDir",
    "Chmod",
    "Call",
    "SetupAction",
    "Scenario",
    "Peer",
    "QSDPeer",
    "EnginePeer",
    "StepRecord",
    "Trace",
    "Comparison",
    "run_scenario",
    "run_steps",
    "compare_traces",
    "compare_records",
    "canon_text",
    "canon_nodes",
    "canon_graph",
    "canon_reply",
    "qemu_img",
    "qemu_io",
    "cmd",
    "main",
]

# --------------------------------------------------------------------------------------
# Scenario description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """Raw bytes sent on the QMP wire (for malformed-JSON steps).

    The in-process engine has no wire; for it the step is run only if the text parses as a
    JSON object, otherwise it is skipped and not compared.
    """

    text: str


Step = dict[str, Any] | Raw


@dataclass(frozen=True)
class Shell:
    """Run an external tool (argv; ``{dir}`` substituted in each argument)."""

    argv: tuple[str, ...]


@dataclass(frozen=True)
class WriteFile:
    """Write ``data`` to ``{dir}/path`` (for hand-made hostile image headers)."""

    path: str
    data: bytes


@dataclass(frozen=True)
class MkDir:
    """Create the directory ``{dir}/path``."""

    path: str


@dataclass(frozen=True)
class Chmod:
    """``chmod`` ``{dir}/path`` to ``mode``."""

    path: str
    mode: int


@dataclass(frozen=True)
class Call:
    """Call ``fn(workdir, *args)`` (byte-level patches of images made by qemu-img)."""

    fn: Callable[..., None]
    args: tuple[Any, ...] = ()


SetupAction = Shell | WriteFile | MkDir | Chmod | Call


def qemu_img(args: str) -> Shell:
    """``qemu-img`` with shell-like argument splitting, e.g. ``qemu_img("create -f qcow2 {dir}/a 1M")``."""
    return Shell(("qemu-img", *shlex.split(args)))


def qemu_io(args: str) -> Shell:
    """``qemu-io`` with shell-like argument splitting (use it to put data into images)."""
    return Shell(("qemu-io", *shlex.split(args)))


def cmd(execute: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """A QMP command message."""
    msg: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        msg["arguments"] = arguments
    return msg


@dataclass(frozen=True)
class Scenario:
    """One differential scenario: setup actions and QMP steps (see module docstring)."""

    name: str
    steps: tuple[Step, ...]
    setup: tuple[SetupAction, ...] = ()
    doc: str = ""
    #: the scenario makes a peer write guest data; then ``actual-size`` of rw nodes is ignored
    writes: bool = False
    theme: str = ""


def _run_setup(actions: Iterable[SetupAction], workdir: Path) -> None:
    d = str(workdir)
    for act in actions:
        if isinstance(act, Shell):
            argv = [a.replace("{dir}", d) for a in act.argv]
            res = subprocess.run(argv, capture_output=True, text=True, cwd=workdir)
            if res.returncode != 0:
                raise RuntimeError(
                    f"setup {' '.join(argv)} failed: {res.stderr.strip() or res.stdout}"
                )
        elif isinstance(act, WriteFile):
            (workdir / act.path).write_bytes(act.data)
        elif isinstance(act, MkDir):
            (workdir / act.path).mkdir(parents=True, exist_ok=True)
        elif isinstance(act, Chmod):
            os.chmod(workdir / act.path, act.mode)
        elif isinstance(act, Call):
            act.fn(workdir, *act.args)
        else:  # pragma: no cover - exhaustive
            raise TypeError(f"unknown setup action {act!r}")


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


@dataclass
class Trace:
    """The run of a scenario on one peer."""

    peer: str
    scenario: str
    records: list[StepRecord] = field(default_factory=list)
    setup_error: str | None = None


def _describe(step: Step) -> str:
    if isinstance(step, Raw):
        return f"RAW {step.text!r}"
    return json.dumps(step, sort_keys=False)


def run_steps(
    peer: Peer,
    steps: Sequence[Step],
    workdir: Path,
    *,
    writes: bool = False,
    scenario: str = "",
    trace: Trace | None = None,
) -> Trace:
    """Run ``steps`` on an already set-up ``peer`` and record reply + state after each."""
    d = str(workdir)
    trace = trace if trace is not None else Trace(peer.label, scenario)
    _, _, auto = _snapshot(peer, d, writes)
    for i, step in enumerate(steps):
        if isinstance(step, Raw):
            text = _substitute(step.text, d, auto)
            reply = peer.send_raw(text)
            sent: dict[str, Any] | Raw = step
        else:
            sent = _substitute(step, d, auto)
            reply = peer.execute(sent)
        nodes, graph, auto = _snapshot(peer, d, writes)
        trace.records.append(
            StepRecord(i, _describe(step), canon_reply(sent, reply, d, writes), nodes, graph)
        )
    return trace


def run_scenario(
    scenario: Scenario, peer_factory: PeerFactory, base_tmp: Path | None = None
) -> Trace:
    """Set up a fresh directory, start a peer in it, run every step, return the trace."""
    workdir = Path(tempfile.mkdtemp(prefix=f"txd-{scenario.name[:20]}-", dir=base_tmp))
    try:
        try:
            _run_setup(scenario.setup, workdir)
        except Exception as exc:
            return Trace("?", scenario.name, setup_error=str(exc))
        peer = peer_factory(workdir)
        try:
            return run_steps(
                peer, scenario.steps, workdir, writes=scenario.writes, scenario=scenario.name
            )
        finally:
            peer.close()
    finally:
        # chmod'ed-away files/dirs must not stop the cleanup
        for root, dirs, files in os.walk(workdir):
            for n in dirs + files:
                try:
                    os.chmod(os.path.join(root, n), 0o700)
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------------------


@dataclass
class StepDiff:
    index: int
    command: str
    lines: list[str]


@dataclass
class Comparison:
    """The result of comparing two traces; falsy when they differ. ``str()`` is the diff."""

    scenario: str
    left: str
    right: str
    diffs: list[StepDiff] = field(default_factory=list)
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
            return f"[{self.scenario}] {self.left} == {self.right}"
        lines = [
            f"[{self.scenario}] {self.left} (left) vs {self.right} (right): "
            f"{len(self.diffs)} step(s) differ, first at step {self.diffs[0].index}"
        ]
        for d in self.diffs[:4]:
            lines.append(f"  step {d.index}: {d.command[:300]}")
            lines.extend(f"    {ln}" for ln in d.lines[:14])
            if len(d.lines) > 14:
                lines.append(f"    ... {len(d.lines) - 14} more")
        if len(self.diffs) > 4:
            lines.append(f"  ... and steps {[d.index for d in self.diffs[4:]]}")
        return "\n".join(lines)


def compare_traces(left: Trace, right: Trace) -> Comparison:
    """Compare two traces of the same scenario step by step."""
    comp = Comparison(left.scenario, left.peer, right.peer)
    if left.setup_error or right.setup_error:
        comp.setup_error = left.setup_error or right.setup_error
        return comp
    for a, b in zip(left.records, right.records):
        lines = compare_records(a, b)
        if lines:
            comp.diffs.append(StepDiff(a.index, a.command, lines))
    if len(left.records) != len(right.records):
        comp.diffs.append(
            StepDiff(
                min(len(left.records), len(right.records)),
                "<end>",
                [f"step counts differ: {len(left.records)} vs {len(right.records)}"],
            )
        )
    return comp


def differential(
    scenario: Scenario, right: PeerFactory | None = None, left: PeerFactory | None = None
) -> Comparison:
    """Run ``scenario`` on ``left`` (default QSD) and ``right`` (default txgraph), compare."""
    lt = run_scenario(scenario, left or QSDPeer)
    rt = run_scenario(scenario, right or EnginePeer)
    return compare_traces(lt, rt)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _print_trace(t: Trace) -> None:
    if t.setup_error:
        print(f"setup error: {t.setup_error}")
    for r in t.records:
        print(f"--- step {r.index}: {r.command}")
        print(f"    reply: {json.dumps(r.reply)}")
        if isinstance(r.graph, dict) and "edges" in r.graph:
            for e in r.graph["edges"]:
                print(
                    f"    edge {e[0]} --{e[2]}--> {e[1]}  perm={','.join(e[3]) or '-'} "
                    f"shared={','.join(e[4]) or '-'}"
                )
        if isinstance(r.nodes, dict):
            for name, n in r.nodes.items():
                c = n.get("cache", {})
                print(
                    f"    node {name}: {n.get('drv')} ro={n.get('ro')} direct={c.get('direct')} "
                    f"no-flush={c.get('no-flush')} dz={n.get('detect_zeroes')} file={n.get('file')}"
                )
        else:
            print(f"    nodes: {r.nodes}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tests.differential.harness``."""
    import argparse

    from tests.differential.scenarios import SCENARIOS

    ap = argparse.ArgumentParser(prog="python -m tests.differential.harness")
    ap.add_argument("names", nargs="*", help="scenario names (prefix match with a trailing *)")
    ap.add_argument("--self", dest="self_check", action="store_true", help="QSD vs QSD")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--show", action="store_true", help="print the QSD trace only")
    ap.add_argument("--all", action="store_true", help="run every scenario, print a summary")
    ns = ap.parse_args(argv)
    by_name = {s.name: s for s in SCENARIOS}
    if ns.list:
        for s in SCENARIOS:
            print(f"{s.theme:14} {s.name}")
        return 0
    chosen: list[Scenario] = []
    if ns.all:
        chosen = list(SCENARIOS)
    for n in ns.names:
        if n.endswith("*"):
            chosen += [s for s in SCENARIOS if s.name.startswith(n[:-1])]
        elif n in by_name:
            chosen.append(by_name[n])
        else:
            print(f"unknown scenario {n!r}", file=sys.stderr)
            return 2
    rc = 0
    for s in chosen:
        if ns.show:
            _print_trace(run_scenario(s, QSDPeer))
            continue
        comp = differential(s, QSDPeer if ns.self_check else EnginePeer)
        if not ns.all:
            print(comp)
        elif comp:
            print(f"PASS {s.name}")
        elif comp.setup_error:
            print(f"FAIL {s.name}: setup: {comp.setup_error[:160]}")
        else:
            d = comp.diffs[0]
            print(f"FAIL {s.name}: step {d.index}: {d.lines[0][:200]}")
        sys.stdout.flush()
        rc |= 0 if comp else 1
    return rc


if __name__ == "__main__":
    # run through the importable module so scenario modules and the CLI share one set of classes
    from tests.differential import harness as _harness

    sys.exit(_harness.main())
