"""Scaling benchmark: one checked command and one plan step at growing graph sizes.

The question measured: does a command cost O(change), or does something pay
for the whole graph per step? For each size N (null-co nodes plus one qcow2
image chain with a user on top, built untimed through the engine) it times,
interleaved round by round (A B A B ...), in one process:

- ``safe-add``: one ``blockdev-add`` (null-co) under ``policy=safe``, against
  the same add under ``policy=qemu`` on the same graph (the peer: what the
  safe rules add on top);
- ``txn-20-steps``: the 20-step ``x-txgraph-transaction`` of ``txgraph bench txn``
  (snapshots, filter insertions, reopens on 4 device chains of their own) under
  ``policy=safe``, against the same transaction under ``policy=qemu``;
- ``plan-step``: :func:`txgraph.plan.verify.verify_plan` of one reopen that
  drops the chain's backing link (which ``safe`` flags, S1), against the same
  plan under ``policy=qemu``.

One JSON row per (measure, N): ``name``, ``txgraph`` and ``peer`` (median ms),
``spread`` (min-max ms of each side), ``peak_kib`` (tracemalloc peak of one
extra run of the measured side: a copy of the graph shows as MiBs), ``maxrss_mib``
(the process's peak RSS so far: the graph itself), ``cpu_ms`` (median CPU time
of each side: robust on a shared machine), ``unit``,
``ratio`` = peer / txgraph. No result is asserted; the suite only smoke-tests
that rows come out (tests/bench).
"""

from __future__ import annotations

import gc
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from txgraph.bench.txn import CHAINS, STEPS
from txgraph.ops.session import Session
from txgraph.plan.format import parse_steps
from txgraph.plan.verify import run_step, scratch_engine, start_is_valid
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine

__all__ = ["run_scale_benchmark", "SIZES"]

SIZES: tuple[int, ...] = (100, 1_000, 10_000, 100_000)


def _add(name: str) -> dict[str, Any]:
    return {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": name}}


def _build(engine: Engine, workdir: Path, nodes: int) -> None:
    """The chain (top backed by base, raw user above) and null-co nodes up to ``nodes``."""
    setup = [
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "qcow2",
                "node-name": "base",
                "file": {"driver": "file", "filename": str(workdir / "base.qcow2")},
            },
        },
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "qcow2",
                "node-name": "top",
                "backing": "base",
                "file": {"driver": "file", "filename": str(workdir / "top.qcow2")},
            },
        },
        {
            "execute": "blockdev-add",
            "arguments": {"driver": "raw", "node-name": "dev", "file": "top"},
        },
    ]
    for message in setup + [_add(f"n{i}") for i in range(max(0, nodes - 5))]:
        reply = engine.execute(message)
        if "error" in reply:
            raise RuntimeError(f"setup {message['execute']} failed: {reply['error']['desc']}")


def _images(workdir: Path) -> None:
    for args in (["base.qcow2", "16M"], ["-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "16M"]):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", *args],
            cwd=workdir,
            check=True,
            capture_output=True,
            timeout=60,
        )


#: one timed run: (wall ms, CPU ms of this process)
Sample = tuple[float, float]


def _since(start: float, cpu: float) -> Sample:
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000


def _interleaved(
    ours: Callable[[], None], peer: Callable[[], None], rounds: int
) -> tuple[list[Sample], list[Sample]]:
    a: list[Sample] = []
    b: list[Sample] = []
    for _ in range(rounds):
        for fn, out in ((ours, a), (peer, b)):
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            out.append(_since(start, cpu))
    return a, b


def _peak_kib(fn: Callable[[], None]) -> float:
    tracemalloc.start()
    try:
        fn()
        return round(tracemalloc.get_traced_memory()[1] / 1024, 1)
    finally:
        tracemalloc.stop()


def _row(
    name: str, n: int, samples_a: list[Sample], samples_b: list[Sample], peak: float, peer: str
) -> dict[str, Any]:
    a, b = [w for w, _ in samples_a], [w for w, _ in samples_b]
    ours, theirs = statistics.median(a), statistics.median(b)
    return {
        "name": f"{name}-{n}-nodes",
        "nodes": n,
        "txgraph": round(ours, 3),
        "peer": round(theirs, 3),
        "spread": {
            "txgraph": [round(min(a), 3), round(max(a), 3)],
            "peer": [round(min(b), 3), round(max(b), 3)],
        },
        # CPU time of the process (median ms): what the step costs, whatever else
        # shares the machine (wall time on a loaded host mostly measures the others)
        "cpu_ms": {
            "txgraph": round(statistics.median(c for _, c in samples_a), 3),
            "peer": round(statistics.median(c for _, c in samples_b), 3),
        },
        "peak_kib": peak,
        # the process's high-water mark so far (the whole graph, not just the step)
        "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "unit": "ms",
        "ratio": round(theirs / ours, 3),
        "peer_name": peer,
    }


def _safe_add_row(session: Session, engine: Engine, n: int, rounds: int) -> dict[str, Any]:
    counter = iter(range(10**9))

    def under(policy: str) -> Callable[[], None]:
        def run() -> None:
            session.policy = policy
            reply = engine.execute(_add(f"x{next(counter)}"))
            if "error" in reply:
                raise RuntimeError(reply["error"]["desc"])

        return run

    under("safe")()  # warm-up (first-use imports, solver declarations)
    under("qemu")()
    a, b = _interleaved(under("safe"), under("qemu"), rounds)
    peak = _peak_kib(under("safe"))
    session.policy = "qemu"
    return _row("safe-add", n, a, b, peak, "txgraph policy=qemu, same graph")


def _plan_row(n: int, workdir: Path, rounds: int) -> dict[str, Any]:
    """One plan step (drop top's backing link) as ``verify_plan`` runs it, on a dry-run
    engine; an untimed reopen puts the link back between runs."""
    engine, _source = scratch_engine(None)
    session = engine.context.session
    try:
        _build(engine, workdir, n)
        cut = parse_steps(
            [
                {
                    "execute": "blockdev-reopen",
                    "arguments": {
                        "options": [
                            {
                                "driver": "qcow2",
                                "node-name": "top",
                                "file": session.graph.file_child("top"),
                                "backing": None,
                            }
                        ]
                    },
                }
            ]
        )[0]
        restore = {
            "execute": "blockdev-reopen",
            "arguments": {
                "options": [
                    {
                        "driver": "qcow2",
                        "node-name": "top",
                        "file": session.graph.file_child("top"),
                        "backing": "base",
                    }
                ]
            },
        }

        # as verify_plan does: the starting state is checked whole once, untimed
        regional = start_is_valid(session, "safe")
        gc.collect()
        gc.freeze()  # as for safe-add: the built graph stays out of the timed collections

        def under(policy: str) -> Callable[[], None]:
            def run() -> None:
                result = run_step(engine, session, 0, cut, policy, regional=regional)
                if not result.accepted or result.ok == (policy == "safe"):
                    raise RuntimeError(
                        f"unexpected plan verdict under {policy}: {result.to_dict()}"
                    )

            return run

        a: list[Sample] = []
        b: list[Sample] = []
        for i in range(rounds + 1):
            for policy, out in (("safe", a), ("qemu", b)):
                start, cpu = time.perf_counter(), time.process_time()
                under(policy)()
                if i:  # the first round is the warm-up
                    out.append(_since(start, cpu))
                if "error" in engine.execute(restore):
                    raise RuntimeError("could not restore the backing link")
        peak = _peak_kib(under("safe"))
        return _row("plan-step", n, a, b, peak, "txgraph plan --policy qemu, same state")
    finally:
        gc.unfreeze()
        session.close()


_TXN_NAME = re.compile(r"(top|dev|tf|ovl|of|thr)(\d+)")


def _renamed(obj: Any, k: int) -> Any:
    """The bench txn commands with every chain node and image of chain set ``k``
    renamed (``top0`` -> ``top0r3``, ``.../ovl0.qcow2`` -> ``.../ovl0r3.qcow2``)."""
    if isinstance(obj, dict):
        return {key: _renamed(value, k) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_renamed(value, k) for value in obj]
    if isinstance(obj, str):
        if obj.endswith(".qcow2"):
            path = Path(obj)
            return str(path.with_name(f"{path.stem}r{k}.qcow2"))
        if _TXN_NAME.fullmatch(obj):
            return f"{obj}r{k}"
    return obj


def _txn_row(
    session: Session, engine: Engine, n: int, rounds: int, workdir: Path
) -> dict[str, Any]:
    """The 20-step ``x-txgraph-transaction`` of ``txgraph bench txn`` on this N-node graph,
    under ``policy=safe`` against ``policy=qemu`` (interleaved). Each run works on chains
    of its own (set up untimed just before it: ``CHAINS`` device chains, 3 nodes each),
    so every run does the same work on a graph of the same size."""
    from txgraph.bench.txn import setup_commands, txgraph_actions

    reply = engine.execute(
        {
            "execute": "object-add",
            "arguments": {
                "qom-type": "throttle-group",
                "id": "tg",
                "limits": {"iops-total": 10**6},
            },
        }
    )
    if "error" in reply:
        raise RuntimeError(reply["error"]["desc"])
    chains = [c for c in setup_commands(workdir, 3 * CHAINS) if c[0] == "blockdev-add"]
    actions = txgraph_actions(workdir)
    sets = iter(range(10**9))

    def prepared(policy: str) -> Callable[[], None]:
        k = next(sets)
        for j in range(CHAINS):
            for stem in (f"top{j}", f"ovl{j}"):
                subprocess.run(
                    ["qemu-img", "create", "-q", "-f", "qcow2", f"{stem}r{k}.qcow2", "16M"],
                    cwd=workdir,
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
        for command, arguments in chains:
            reply = engine.execute({"execute": command, "arguments": _renamed(arguments, k)})
            if "error" in reply:
                raise RuntimeError(reply["error"]["desc"])
        message = {
            "execute": "x-txgraph-transaction",
            "arguments": {"actions": _renamed(actions, k)},
        }

        def run() -> None:
            session.policy = policy
            reply = engine.execute(message)
            if "error" in reply:
                raise RuntimeError(f"transaction under {policy}: {reply['error']['desc']}")

        return run

    a: list[Sample] = []
    b: list[Sample] = []
    for i in range(rounds + 1):
        for policy, out in (("safe", a), ("qemu", b)):
            run = prepared(policy)  # untimed
            start, cpu = time.perf_counter(), time.process_time()
            run()
            if i:  # the first round is the warm-up
                out.append(_since(start, cpu))
    peak = _peak_kib(prepared("safe"))
    session.policy = "qemu"
    return _row(f"txn-{STEPS}-steps", n, a, b, peak, "txgraph policy=qemu, same graph")


def run_scale_benchmark(
    sizes: Iterable[int] = SIZES, rounds: int = 5, progress: Callable[[str], None] | None = None
) -> Iterable[dict[str, Any]]:
    """Yield the rows size by size (a 100k-node build takes a while; rows come as they are done)."""
    workdir = Path(tempfile.mkdtemp(prefix="txgraph-bench-scale-"))
    try:
        _images(workdir)
        for n in sizes:
            if progress:
                progress(f"building {n} nodes (safe-add, txn)")
            session = Session(policy="qemu")
            try:
                engine = Engine(CommandContext(session))
                _build(engine, workdir, n)
                gc.collect()
                gc.freeze()  # start-up objects stay out of the timed collections
                yield _safe_add_row(session, engine, n, rounds)
                if progress:
                    progress(f"{n} nodes: txn")
                yield _txn_row(session, engine, n, rounds, workdir)
            finally:
                gc.unfreeze()
                session.close()
            if progress:
                progress(f"building {n} nodes (plan-step)")
            yield _plan_row(n, workdir, rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
