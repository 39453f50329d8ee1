"""Where a blockdev-add's time goes, layer by layer (issue 15's control-plane floor).

Run as ``.venv/bin/python tools/control_plane_layers.py [--adds-batches N] [--chain-rounds N]``
(``qemu-img`` on ``PATH`` for the chain). In one process, after ``txgraph serve``'s own
warm-up, it times the two scripts of ``txgraph bench qmp`` (null-co adds in batches of
50; one blockdev-add auto-opening a 100-deep qcow2 chain, deleted again between rounds)
and attributes wall time to each layer by wrapping its entry point:

- JSON decode / encode: the QMP stream decoder on the command's bytes, the reply's encoder;
- QAPI: ``check_message`` + ``validate_arguments``;
- open: ``stage_blockdev_add`` (option handling, naming, driver and data-plane opens),
  of which ``perm refresh`` is ``compute_refresh`` (including the image-lock checks);
- checker: the whole invariant check, of which ``z3 parse/check/push-pop`` are the
  solver's own calls;
- the rest of ``Engine.execute`` is the transaction's commit, the data plane's apply
  and the undo log.

Between batches it collects and freezes the garbage as the QMP server's idle collector
does. It prints, per layer, the minimum and the median over the batches: on a loaded
machine the minimum is the better estimate of the cost, the median of what a run sees.
The socket loop (recv, send, the event loop) is not in it: ``txgraph bench qmp`` measures
the whole path against qemu-storage-daemon.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import txgraph.checker.smt as smt
import txgraph.ops.blockdev as blockdev
import txgraph.ops.perm_apply as perm_apply
import txgraph.ops.session as session_mod
import txgraph.qmp.qapi as qapi
from txgraph.bench.qmp import make_chain
from txgraph.cli import _warm_up
from txgraph.qmp.engine import Engine
from txgraph.qobject.decoder import JSONStreamDecoder
from txgraph.qobject.encoder import encode_message

_ACC: defaultdict[str, float] = defaultdict(float)


def _wrap(owner: Any, name: str, label: str) -> None:
    real: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            _ACC[label] += time.perf_counter() - start

    setattr(owner, name, timed)


def _instrument() -> None:
    _wrap(smt._Session, "parse", "z3 parse")
    _wrap(smt._Session, "check_go", "z3 check")
    _wrap(smt._Session, "push", "z3 push-pop")
    _wrap(smt._Session, "pop", "z3 push-pop")
    _wrap(session_mod, "run_checker", "checker")
    _wrap(perm_apply, "compute_refresh", "perm refresh")
    _wrap(qapi, "check_message", "QAPI")
    _wrap(qapi, "validate_arguments", "QAPI")
    _wrap(blockdev, "stage_blockdev_add", "open")
    _wrap(Engine, "execute", "engine")


def _batch(engine: Engine, messages: list[dict[str, Any]]) -> dict[str, float]:
    _ACC.clear()
    decoder = JSONStreamDecoder()
    start = time.perf_counter()
    for raw in (json.dumps(m).encode() for m in messages):
        t = time.perf_counter()
        (message,) = decoder.feed(raw)
        _ACC["JSON decode"] += time.perf_counter() - t
        reply = engine.execute(message)
        if "return" not in reply:
            raise RuntimeError(f"command failed: {reply}")
        t = time.perf_counter()
        encode_message(reply)
        _ACC["JSON encode"] += time.perf_counter() - t
    _ACC["total"] = time.perf_counter() - start
    _ACC["commit and rest"] = _ACC["engine"] - _ACC["QAPI"] - _ACC["open"] - _ACC["checker"]
    gc.collect()
    gc.freeze()  # what txgraph/qmp/idle_gc.py does between bursts
    return dict(_ACC)


def _report(title: str, rows: list[dict[str, float]], scale: float, unit: str) -> None:
    print(f"{title} (min / median of {len(rows)}, {unit})")
    for key in sorted(rows[0]):
        values = [r.get(key, 0.0) * scale for r in rows]
        print(f"  {key:16s} {min(values):10.1f} {statistics.median(values):10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adds-batches", type=int, default=20)
    parser.add_argument("--chain-rounds", type=int, default=7)
    parser.add_argument("--depth", type=int, default=100)
    args = parser.parse_args()
    engine = Engine()
    _warm_up(engine)
    _instrument()
    rows = []
    for b in range(args.adds_batches):
        names = (f"n{b}-{i}" for i in range(50))
        msgs = [
            {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": n}}
            for n in names
        ]
        rows.append({k: v / 50 for k, v in _batch(engine, msgs).items()})
    _report("one null-co blockdev-add", rows, 1e6, "us")
    with tempfile.TemporaryDirectory(prefix="txgraph-layers-") as tmp:
        top = make_chain(Path(tmp), args.depth)
        file = {"driver": "file", "filename": str(top)}
        add = {
            "execute": "blockdev-add",
            "arguments": {"driver": "qcow2", "node-name": "top", "file": file},
        }
        rows = []
        for _ in range(args.chain_rounds):
            rows.append(_batch(engine, [add]))
            engine.execute({"execute": "blockdev-del", "arguments": {"node-name": "top"}})
    _report(f"one blockdev-add opening a {args.depth}-deep chain", rows, 1e3, "ms")
    engine.context.session.close()


if __name__ == "__main__":
    main()
