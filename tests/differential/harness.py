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

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Raw", "Step", "Shell", "WriteFile", "MkDir", "Chmod", "Call", "SetupAction", "Scenario",
    "Peer", "QSDPeer", "EnginePeer", "StepRecord", "Trace", "Comparison",
    "run_scenario", "run_steps", "compare_traces", "compare_records", "canon_text",
    "canon_nodes", "canon_graph", "canon_reply", "qemu_img", "qemu_io", "cmd", "main",
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
                raise RuntimeError(f"setup {' '.join(argv)} failed: {res.stderr.strip() or res.stdout}")
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
# Peers
# --------------------------------------------------------------------------------------


class Peer(Protocol):
    """One side of the comparison."""

    label: str

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run one QMP message; return the full reply dict (never raise)."""

    def send_raw(self, text: str) -> dict[str, Any] | None:
        """Send raw wire text; ``None`` when this peer cannot (the step is then not compared)."""

    def close(self) -> None:
        """Release the peer (kill the process, drop the engine)."""


def _start_qsd(workdir: str | None, attempts: int = 5) -> Any:
    """Start a QSD, retrying the start-up race of tests.support.qsd.

    ``QSD()`` connects as soon as the socket file exists, which can be a moment before the
    daemon listens (``ConnectionRefusedError``); the half-started process is reaped here.
    """
    import time

    from tests.support.qsd import QSD

    for attempt in range(attempts):
        q = QSD.__new__(QSD)
        try:
            q.__init__(workdir=workdir)  # type: ignore[misc]
            return q
        except ConnectionRefusedError:
            proc = getattr(q, "proc", None)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc is not None and proc.stdout:
                proc.stdout.close()
            shutil.rmtree(getattr(q, "_tmp", ""), ignore_errors=True)
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


class QSDPeer:
    """A fresh qemu-storage-daemon 7.2 process."""

    label = "qsd"

    def __init__(self, workdir: Path | None = None) -> None:
        self._qsd = _start_qsd(str(workdir) if workdir else None)

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.send_raw(json.dumps(message)) or {}

    def send_raw(self, text: str) -> dict[str, Any] | None:
        try:
            return self._qsd.send_raw(text)
        except (RuntimeError, OSError) as exc:  # QSD died: a finding in itself, keep comparing
            return {"error": {"class": "PeerDied", "desc": f"qemu-storage-daemon: {exc}"}}

    def close(self) -> None:
        try:
            self._qsd.close()
        except OSError:  # the daemon died: the socket is already broken, the process reaped
            pass


class EnginePeer:
    """txgraph's in-process QMP engine. Exceptions become a ``PythonException`` error reply.

    Every command runs with the process working directory set to the scenario directory,
    as QSD is started there: QEMU resolves some relative names (for example a qcow2 header's
    relative ``data-file`` name, and relative ``filename`` options) against its cwd.
    """

    label = "txgraph"

    def __init__(self, workdir: Path | None = None) -> None:
        self._workdir = str(workdir) if workdir else None
        self._engine: Any = None
        self._init_error: str | None = None
        try:
            from txgraph.qmp.engine import Engine

            self._engine = Engine()
        except Exception:  # the engine is under construction; report, do not crash the harness
            self._init_error = traceback.format_exc(limit=3)

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._engine is None:
            return {"error": {"class": "PythonException",
                              "desc": f"Engine() failed: {self._init_error}"}}
        saved = os.getcwd()
        try:
            if self._workdir:
                os.chdir(self._workdir)
            return self._engine.execute(copy.deepcopy(message))
        except Exception as exc:
            return {"error": {"class": "PythonException",
                              "desc": f"{type(exc).__name__}: {exc}"}}
        finally:
            os.chdir(saved)

    def send_raw(self, text: str) -> dict[str, Any] | None:
        try:
            msg = json.loads(text)
        except ValueError:
            return None
        if not isinstance(msg, dict):
            return None
        return self.execute(msg)

    def close(self) -> None:
        close = getattr(self._engine, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                pass
        self._engine = None


PeerFactory = Callable[[Path], Peer]

# --------------------------------------------------------------------------------------
# Canonicalisation
# --------------------------------------------------------------------------------------

_AUTO = re.compile(r"#block(\d+)(\d\d)")
_PLACEHOLDER = re.compile(r"\{(#block\d+)\}")

#: fields of a ``query-named-block-nodes`` entry compared per node (plus every bps*/iops*)
NODE_FIELDS = ("drv", "ro", "cache", "detect_zeroes", "file", "backing_file",
               "backing_file_depth", "encrypted", "write_threshold", "node-name")
#: fields of the ``image`` member compared per node (``actual-size`` handled separately)
IMAGE_FIELDS = ("virtual-size", "format", "filename", "cluster-size", "backing-filename",
                "backing-filename-format", "full-backing-filename", "format-specific",
                "dirty-flag", "encrypted")


def canon_text(s: str, workdir: str | None) -> str:
    """Replace the scenario directory by ``{dir}`` and strip auto-name random digits."""
    if workdir:
        s = s.replace(workdir, "{dir}")
        real = os.path.realpath(workdir)
        if real != workdir:
            s = s.replace(real, "{dir}")
    return _AUTO.sub(r"#block\1", s)


def _canon_value(v: Any, workdir: str | None) -> Any:
    if isinstance(v, str):
        return canon_text(v, workdir)
    if isinstance(v, list):
        return [_canon_value(x, workdir) for x in v]
    if isinstance(v, dict):
        return {canon_text(k, workdir): _canon_value(x, workdir) for k, x in v.items()}
    return v


def _project_image(img: dict[str, Any], with_actual: bool, workdir: str | None) -> dict[str, Any]:
    out = {k: _canon_value(img[k], workdir) for k in IMAGE_FIELDS if k in img}
    if with_actual and "actual-size" in img:
        out["actual-size"] = img["actual-size"]
    if "backing-image" in img:
        out["backing-image"] = _project_image(img["backing-image"], with_actual, workdir)
    return out


def _project_node(node: dict[str, Any], writes: bool, workdir: str | None) -> dict[str, Any]:
    out = {k: _canon_value(node[k], workdir) for k in NODE_FIELDS if k in node}
    for k in node:
        if k.startswith(("bps", "iops")) or k == "group":
            out[k] = node[k]
    if "image" in node:
        with_actual = (not writes) or bool(node.get("ro"))
        out["image"] = _project_image(node["image"], with_actual, workdir)
    return out


def canon_nodes(nodes: list[dict[str, Any]], workdir: str | None,
                writes: bool = False) -> dict[str, Any]:
    """``query-named-block-nodes`` return value -> {canonical name: projection}."""
    out: dict[str, Any] = {}
    for n in nodes:
        name = canon_text(str(n.get("node-name", "")), workdir)
        key = name
        i = 1
        while key in out:  # should never happen; keep both so a difference shows
            i += 1
            key = f"{name}#dup{i}"
        out[key] = _project_node(n, writes, workdir)
    return out


def canon_graph(graph: dict[str, Any], workdir: str | None) -> dict[str, list[Any]]:
    """``x-debug-query-block-graph`` return value -> sorted lists of nodes and edges (no ids)."""
    raw_nodes = graph.get("nodes", [])
    raw_edges = graph.get("edges", [])
    by_id: dict[Any, dict[str, Any]] = {n["id"]: n for n in raw_nodes}
    names: dict[Any, str] = {}
    for n in raw_nodes:
        if n.get("name"):
            names[n["id"]] = canon_text(n["name"], workdir)
    # anonymous backends/jobs: describe them by what they point to
    anon_count: Counter[str] = Counter()
    for n in sorted(raw_nodes, key=lambda n: str(n.get("id"))):
        if n["id"] in names:
            continue
        outs = sorted(f"{e['name']}->{canon_text(by_id.get(e['child'], {}).get('name') or '?', workdir)}"
                      for e in raw_edges if e["parent"] == n["id"])
        base = f"<{n.get('type')}:{','.join(outs)}>"
        anon_count[base] += 1
        names[n["id"]] = base if anon_count[base] == 1 else f"{base}#{anon_count[base]}"
    nodes = sorted([names[n["id"]], n.get("type")] for n in raw_nodes)
    edges = sorted([names.get(e["parent"], "?"), names.get(e["child"], "?"), e.get("name"),
                    sorted(e.get("perm", [])), sorted(e.get("shared-perm", []))]
                   for e in raw_edges)
    return {"nodes": nodes, "edges": edges}


def canon_reply(message: dict[str, Any] | Raw, reply: dict[str, Any] | None,
                workdir: str | None, writes: bool = False) -> Any:
    """A reply reduced to what must match: ``{"return": ...}`` or ``{"error": {class, desc}}``."""
    if reply is None:
        return None
    if "error" in reply:
        err = reply["error"]
        return {"error": {"class": err.get("class"), "desc": canon_text(str(err.get("desc")), workdir)}}
    if "return" not in reply:
        return {"unexpected": _canon_value(reply, workdir)}
    ret = reply["return"]
    name = message.get("execute") if isinstance(message, dict) else None
    if name == "query-named-block-nodes" and isinstance(ret, list):
        return {"return": canon_nodes(ret, workdir, writes)}
    if name == "x-debug-query-block-graph" and isinstance(ret, dict):
        return {"return": canon_graph(ret, workdir)}
    return {"return": _canon_value(ret, workdir)}


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


@dataclass
class StepRecord:
    """What one step produced on one peer (all canonical)."""

    index: int
    command: str
    reply: Any
    nodes: Any
    graph: Any


@dataclass
class Trace:
    """The run of a scenario on one peer."""

    peer: str
    scenario: str
    records: list[StepRecord] = field(default_factory=list)
    setup_error: str | None = None


def _substitute(v: Any, workdir: str, auto: dict[str, str]) -> Any:
    if isinstance(v, str):
        v = v.replace("{dir}", workdir)
        return _PLACEHOLDER.sub(lambda m: auto.get(m.group(1), m.group(1) + "?unresolved"), v)
    if isinstance(v, list):
        return [_substitute(x, workdir, auto) for x in v]
    if isinstance(v, dict):
        return {k: _substitute(x, workdir, auto) for k, x in v.items()}
    return v


def _describe(step: Step) -> str:
    if isinstance(step, Raw):
        return f"RAW {step.text!r}"
    return json.dumps(step, sort_keys=False)


def _snapshot(peer: Peer, workdir: str, writes: bool) -> tuple[Any, Any, dict[str, str]]:
    """Query both state commands; also return canonical->real auto-name mapping."""
    q = cmd("query-named-block-nodes", {"flat": True})
    nodes_reply = peer.execute(q)
    graph_msg = cmd("x-debug-query-block-graph")
    graph_reply = peer.execute(graph_msg)
    auto: dict[str, str] = {}
    if isinstance(nodes_reply.get("return"), list):
        for n in nodes_reply["return"]:
            real = str(n.get("node-name", ""))
            if real.startswith("#"):
                auto[canon_text(real, None)] = real
    nodes = canon_reply(q, nodes_reply, workdir, writes)
    graph = canon_reply(graph_msg, graph_reply, workdir, writes)
    nodes = nodes.get("return", nodes) if isinstance(nodes, dict) else nodes
    graph = graph.get("return", graph) if isinstance(graph, dict) else graph
    return nodes, graph, auto


def run_steps(peer: Peer, steps: Sequence[Step], workdir: Path, *, writes: bool = False,
              scenario: str = "", trace: Trace | None = None) -> Trace:
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
        trace.records.append(StepRecord(i, _describe(step), canon_reply(sent, reply, d, writes),
                                        nodes, graph))
    return trace


def run_scenario(scenario: Scenario, peer_factory: PeerFactory,
                 base_tmp: Path | None = None) -> Trace:
    """Set up a fresh directory, start a peer in it, run every step, return the trace."""
    workdir = Path(tempfile.mkdtemp(prefix=f"txd-{scenario.name[:20]}-", dir=base_tmp))
    try:
        try:
            _run_setup(scenario.setup, workdir)
        except Exception as exc:
            return Trace("?", scenario.name, setup_error=str(exc))
        peer = peer_factory(workdir)
        try:
            return run_steps(peer, scenario.steps, workdir, writes=scenario.writes,
                             scenario=scenario.name)
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


def _diff_values(a: Any, b: Any, path: str, out: list[str], limit: int = 12) -> None:
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: only in right: {json.dumps(b[k])[:300]}")
            elif k not in b:
                out.append(f"{p}: only in left: {json.dumps(a[k])[:300]}")
            else:
                _diff_values(a[k], b[k], p, out, limit)
    elif a != b:
        out.append(f"{path}: {json.dumps(a)[:400]}  !=  {json.dumps(b)[:400]}")


def _diff_graph(a: Any, b: Any, out: list[str]) -> None:
    if not (isinstance(a, dict) and isinstance(b, dict) and "nodes" in a and "nodes" in b):
        _diff_values(a, b, "graph", out)
        return
    for part in ("nodes", "edges"):
        ca = Counter(json.dumps(x) for x in a[part])
        cb = Counter(json.dumps(x) for x in b[part])
        for x in sorted((ca - cb).elements()):
            out.append(f"graph.{part}: only in left:  {x}")
        for x in sorted((cb - ca).elements()):
            out.append(f"graph.{part}: only in right: {x}")


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
        lines = [f"[{self.scenario}] {self.left} (left) vs {self.right} (right): "
                 f"{len(self.diffs)} step(s) differ, first at step {self.diffs[0].index}"]
        for d in self.diffs[:4]:
            lines.append(f"  step {d.index}: {d.command[:300]}")
            lines.extend(f"    {ln}" for ln in d.lines[:14])
            if len(d.lines) > 14:
                lines.append(f"    ... {len(d.lines) - 14} more")
        if len(self.diffs) > 4:
            lines.append(f"  ... and steps {[d.index for d in self.diffs[4:]]}")
        return "\n".join(lines)


def _is_error(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"error"}


def _diff_nodes(a: Any, b: Any, out: list[str]) -> None:
    if _is_error(a) or _is_error(b):
        out.append(f"nodes: {_short(a)}  !=  {_short(b)}")
        return
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    if only_a:
        out.append(f"nodes only in left:  {only_a}")
    if only_b:
        out.append(f"nodes only in right: {only_b}")
    for k in sorted(set(a) & set(b)):
        _diff_values(a[k], b[k], f"nodes[{k}]", out)


def _short(v: Any) -> str:
    if _is_error(v):
        return f"error {v['error'].get('class')}: {v['error'].get('desc')}"
    if isinstance(v, dict) and "nodes" in v and "edges" in v:
        return f"graph of {len(v['nodes'])} nodes/{len(v['edges'])} edges"
    if isinstance(v, dict):
        return f"{len(v)} nodes {sorted(v)[:8]}"
    return json.dumps(v)[:200]


def compare_records(a: StepRecord, b: StepRecord) -> list[str]:
    """Differences between the same step on two peers (empty list when equal)."""
    out: list[str] = []
    if a.reply is not None and b.reply is not None and a.reply != b.reply:
        if _is_error(a.reply) != _is_error(b.reply):
            out.append(f"reply: {_short(a.reply) if _is_error(a.reply) else json.dumps(a.reply)[:300]}"
                       f"  !=  {_short(b.reply) if _is_error(b.reply) else json.dumps(b.reply)[:300]}")
        else:
            _diff_values(a.reply, b.reply, "reply", out)
    if a.nodes != b.nodes:
        _diff_nodes(a.nodes, b.nodes, out)
    if a.graph != b.graph:
        if _is_error(a.graph) or _is_error(b.graph):
            out.append(f"graph: {_short(a.graph)}  !=  {_short(b.graph)}")
        else:
            _diff_graph(a.graph, b.graph, out)
    return out


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
        comp.diffs.append(StepDiff(min(len(left.records), len(right.records)), "<end>",
                                   [f"step counts differ: {len(left.records)} vs {len(right.records)}"]))
    return comp


def differential(scenario: Scenario, right: PeerFactory | None = None,
                 left: PeerFactory | None = None) -> Comparison:
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
                print(f"    edge {e[0]} --{e[2]}--> {e[1]}  perm={','.join(e[3]) or '-'} "
                      f"shared={','.join(e[4]) or '-'}")
        if isinstance(r.nodes, dict):
            for name, n in r.nodes.items():
                c = n.get("cache", {})
                print(f"    node {name}: {n.get('drv')} ro={n.get('ro')} direct={c.get('direct')} "
                      f"no-flush={c.get('no-flush')} dz={n.get('detect_zeroes')} file={n.get('file')}")
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


def lockstep(peers: Sequence[Peer], dirs: Sequence[str], autos: list[dict[str, str]],
             history: list[str], message: dict[str, Any]) -> tuple[list[StepRecord], list[str]]:
    """Run one command on every peer (each in its own directory), record and compare.

    The state machines' single step: ``history`` and each peer's auto-name map
    in ``autos`` are updated; returns the records and the diff of the first
    two peers (empty when they agree).
    """
    history.append(json.dumps(message))
    records = []
    for i, (peer, d) in enumerate(zip(peers, dirs)):
        sent = _substitute(message, str(d), autos[i])
        reply = peer.execute(sent)
        nodes, graph, autos[i] = _snapshot(peer, str(d), False)
        records.append(StepRecord(len(history) - 1, history[-1],
                                  canon_reply(sent, reply, str(d)), nodes, graph))
    return records, compare_records(records[0], records[1])
