"""txgraph.fuzz: a differential fuzzer for block-graph reconfiguration.

``txgraph fuzz --against qsd|model`` runs a campaign (:func:`run_campaign`):
workers generate command sequences that build real graphs
(:mod:`~txgraph.fuzz.generate`), run each on fresh peers
(:mod:`~txgraph.fuzz.run`), keep a corpus of sequences that reached new
behaviour, shrink every new divergence (:mod:`~txgraph.fuzz.shrink`) and write
reproducers (:mod:`~txgraph.fuzz.repro`) and a report
(:mod:`~txgraph.fuzz.report`). ``txgraph replay`` runs a reproducer again.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from txgraph.fuzz.campaign import STOP_FILE, CampaignConfig, Worker, families_for
from txgraph.fuzz.report import collect, write_report

__all__ = ["CampaignConfig", "run_campaign", "families_for"]


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


#: seconds before a lost stop request is sent again (see _worker_unraisable)
RESEND_DELAY = 0.01
#: set in a worker once its first SIGTERM asked it to stop (only the main thread writes it)
_stopping = False


def _worker_terminate(signum: int, frame: Any) -> None:
    """A worker's first SIGTERM unwinds it (SystemExit); a second one, while it still
    unwinds, ends it at once (its peers die with it, by their parent-death signal)."""
    global _stopping
    if _stopping:
        os._exit(128 + signum)
    _stopping = True
    raise SystemExit(128 + signum)


def _worker_unraisable(info: Any) -> None:
    """``sys.unraisablehook`` of a worker: quiet while it stops, and no exit is lost.

    A signal handler runs wherever the main thread is, and that may be a callback that
    cannot raise (a weakref's, a ``__del__``): Python then prints the SystemExit as
    "Exception ignored" with a traceback, and drops it. Once the worker is stopping,
    such a lost exit is asked for again (a new SIGTERM to itself from a timer thread, so
    it lands outside the callback); anything else raised there while it unwinds is part
    of stopping (see :func:`_work`). The hook runs in the main thread, where the
    handler raised, so ``_stopping`` keeps one writer.
    """
    global _stopping
    if not _stopping:
        sys.__unraisablehook__(info)
        return
    if isinstance(info.exc_value, SystemExit):
        _stopping = False  # the request was never delivered: the next one is the first again
        # from another thread, a moment later: a signal sent from here would have its
        # handler run inside this hook, which cannot raise either
        resend = threading.Timer(RESEND_DELAY, os.kill, (os.getpid(), signal.SIGTERM))
        resend.daemon = True
        resend.start()


def install_worker_signals() -> None:
    """SIGTERM handling of a campaign worker (see :func:`_work`)."""
    signal.signal(signal.SIGTERM, _worker_terminate)
    sys.unraisablehook = _worker_unraisable


def _work(config: CampaignConfig, index: int) -> None:
    """A worker process: run the campaign's share, then leave without interpreter teardown.

    A terminated worker unwinds (SystemExit) so that every run's ``finally`` closes its
    peers; without that the default action kills it with its qemu-storage-daemon left
    running. The exit raised at an arbitrary point may leave a half-changed structure
    that a later ``finally`` trips over (a KeyError in the runtime): once terminated,
    whatever the unwinding raises is part of stopping, not a crash to print. The worker
    reports through its files, so it ends with ``os._exit``: the interpreter's teardown
    (z3's finalizers among it) has nothing to add and would print its own noise.
    """
    install_worker_signals()
    code = 0
    try:
        Worker(config, index).run()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        if not _stopping:
            raise  # not terminated: a real crash, printed by multiprocessing
        code = 128 + signal.SIGTERM
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run_campaign(
    config: CampaignConfig, jobs: int = 1, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run ``jobs`` workers (processes, each with its own peers) and write the report.

    ``progress`` is called about twice a second with the report so far.
    """
    config.out.mkdir(parents=True, exist_ok=True)
    for stale in [*config.out.glob("worker-*.json"), config.out / STOP_FILE]:
        stale.unlink(missing_ok=True)
    meta = {
        "against": config.against,
        "seed": config.seed,
        "seconds": config.seconds,
        "jobs": jobs,
        "families": config.families,
        "stop_on": config.stop_on,
    }
    ctx = multiprocessing.get_context("spawn")  # no threads or sockets inherited by a fork
    procs = [
        ctx.Process(target=_work, args=(config, i), name=f"txgraph-fuzz-{i}", daemon=True)
        for i in range(jobs)
    ]
    # SIGTERM ends the campaign like Ctrl-C: the finally below stops the workers
    previous = signal.signal(signal.SIGTERM, _terminate)
    for p in procs:
        p.start()
    # every worker stops by itself at its deadline; shrinking a last find may take a while
    hard_deadline = time.monotonic() + config.seconds + 600
    try:
        while any(p.is_alive() for p in procs) and time.monotonic() < hard_deadline:
            if progress is not None:
                progress(collect(config.out, meta))
            for p in procs:
                p.join(0.5 / len(procs))
    finally:
        signal.signal(signal.SIGTERM, previous)
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(5)
        # also when stopped (SIGTERM, Ctrl-C): what the workers found so far is reported
        report = write_report(config.out, meta)
    crashed = [p.name for p in procs if p.exitcode not in (0, None)]
    if crashed:
        report["worker_failures"] = crashed
    return report


def campaign_dir(path: str | None) -> Path:
    """The campaign directory (created when missing)."""
    out = Path(path) if path else Path("fuzz-campaign")
    out.mkdir(parents=True, exist_ok=True)
    return out
