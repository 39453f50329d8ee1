"""A fuzzing campaign: generate, run, keep what reached new behaviour, shrink what diverged.

One :class:`Worker` runs sequences until its time budget ends. A sequence is
either fresh (drawn by :class:`~txgraph.fuzz.generate.Generator`) or a
*mutation* of a corpus entry: a prefix of it kept and a new continuation drawn,
or one of its steps dropped. A sequence whose run shows a behaviour nobody has
seen before (:func:`~txgraph.fuzz.run.behaviour`) joins the corpus. A
divergence whose signature is new is written as reproducers at once and shrunk
(:func:`~txgraph.fuzz.shrink.shrink`) once the time budget is spent, so that
shrinking does not take the search's time; one already known is only counted.

The campaign directory is the only thing workers share: ``corpus/`` (one JSON
file per entry, written once and never changed, so readers need no lock),
``repro-*`` files (named by signature; a worker that finds a reproducer
already written skips the shrinking), and one ``worker-N.json`` statistics file
per worker, rewritten only by its worker. That is also the interface a
distributed campaign keeps (docs/fuzzing.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txgraph.fuzz.generate import FAMILIES, QSD_FAMILIES, Generator, Resources
from txgraph.fuzz.repro import write_reproducers
from txgraph.fuzz.run import Divergence, RunResult, run_sequence
from txgraph.fuzz.shrink import shrink

__all__ = ["CampaignConfig", "CRASH_KINDS", "Worker", "WorkerStats", "families_for"]

_MAX_LEN = 25


def families_for(against: str, ops: list[str] | None) -> list[str]:
    """The operation families a campaign draws from (``--ops``), checked against the mode."""
    allowed = list(FAMILIES) if against == "model" else QSD_FAMILIES
    chosen = ops or allowed
    unknown = [o for o in chosen if o not in FAMILIES]
    if unknown:
        raise ValueError(
            f"unknown operation famil{'ies' if len(unknown) > 1 else 'y'} "
            f"{', '.join(unknown)} (known: {', '.join(FAMILIES)})"
        )
    if against == "qsd" and "x" in chosen:
        raise ValueError("the 'x' family (txgraph extensions) cannot run against qsd")
    return chosen


def _waits_after(steps: list[dict[str, Any]], index: int) -> bool:
    """The step after ``index`` is an ``x-txgraph-wait-job`` (the wait for its effect)."""
    return index + 1 < len(steps) and steps[index + 1].get("execute") == "x-txgraph-wait-job"


@dataclass(frozen=True)
class CampaignConfig:
    against: str
    seconds: float
    seed: int
    out: Path
    families: list[str]
    #: how long each worker shrinks its finds after the search (0: not at all)
    shrink_seconds: float = 420.0
    #: end the search at the first finding of this signature, or with ``crash`` at the
    #: first crash or hang of either side (``--stop-on``): the time to find it is
    #: measured without spending the rest of the budget
    stop_on: str | None = None


#: the kinds of findings ``stop_on_crash`` stops at: a peer died or stopped answering
CRASH_KINDS = frozenset({"crash", "qsd-crash", "hang"})
#: the file a worker creates in the campaign directory to make every worker stop
STOP_FILE = "stop"


@dataclass
class WorkerStats:
    """What one worker reports (``worker-N.json``); the campaign report adds them up."""

    worker: int
    steps: int = 0
    sequences: int = 0
    behaviours: set[str] = field(default_factory=set)
    #: (seconds since start, behaviours seen) whenever the count grew
    timeline: list[tuple[float, int]] = field(default_factory=list)
    op_mix: dict[str, int] = field(default_factory=dict)
    #: signature -> {kind, command, count, first_seconds, steps, repro}
    divergences: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed: float = 0.0
    #: seconds spent searching (shrinking comes after); 0 while the search goes on
    searched: float = 0.0
    #: CPU seconds of the worker process during the search
    cpu_seconds: float = 0.0
    done: bool = False
    #: peers that failed to start (QSD not answering its greeting in time)
    peer_failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "steps": self.steps,
            "sequences": self.sequences,
            "behaviours": sorted(self.behaviours),
            "timeline": self.timeline,
            "op_mix": self.op_mix,
            "divergences": self.divergences,
            "elapsed": self.elapsed,
            "searched": self.searched,
            "cpu_seconds": self.cpu_seconds,
            "done": self.done,
            "peer_failures": self.peer_failures[-20:],
        }


class Worker:
    """One campaign worker; owned by one process or thread."""

    def __init__(self, config: CampaignConfig, index: int) -> None:
        self.config = config
        self.index = index
        # the same seed gives the same campaign: each worker's stream derives from it
        self.rng = random.Random(config.seed * 1000 + index)
        self.stats = WorkerStats(index)
        self.corpus_dir = config.out / "corpus"
        self.corpus_dir.mkdir(parents=True, exist_ok=True)
        #: key -> (steps, the most nodes live at once along them)
        self._corpus: dict[str, tuple[list[dict[str, Any]], int]] = {}
        #: new divergences found, shrunk after the search (:meth:`_shrink_all`)
        self._to_shrink: list[tuple[list[dict[str, Any]], Divergence]] = []

    # -- corpus ---------------------------------------------------------------------------
    def _load_corpus(self) -> list[tuple[list[dict[str, Any]], int]]:
        for path in sorted(self.corpus_dir.glob("*.json")):
            if path.stem not in self._corpus:
                try:
                    entry = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # being written by another worker: next time
                if isinstance(entry, list):  # a corpus from before the live count
                    entry = {"steps": entry, "live": 0}
                self._corpus[path.stem] = (entry["steps"], int(entry.get("live", 0)))
        return list(self._corpus.values())

    def _keep(self, steps: list[dict[str, Any]], live: int) -> None:
        text = json.dumps(steps, sort_keys=True)
        key = hashlib.sha1(text.encode()).hexdigest()[:16]
        tmp = self.corpus_dir / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"steps": steps, "live": live}, sort_keys=True))
        tmp.replace(self.corpus_dir / f"{key}.json")  # atomic: readers see all or nothing
        self._corpus[key] = (steps, live)

    # -- one sequence ---------------------------------------------------------------------
    def _source(self) -> Any:
        gen_rng = self.rng
        corpus = self._load_corpus()
        length = gen_rng.randint(1, _MAX_LEN)
        prefix: list[dict[str, Any]] = []
        if corpus and gen_rng.random() < 0.6:
            # entries that built more nodes are drawn more often: deep states are where
            # the next step has the most to combine (a node shared, a child re-pointed)
            base = gen_rng.choices(corpus, [(1 + live) ** 2 for _s, live in corpus])[0][0]
            if gen_rng.random() < 0.7 or len(base) < 2:
                # mostly a long prefix, which keeps the state the entry built
                low = len(base) // 2 if gen_rng.random() < 0.7 else 0
                prefix = base[: gen_rng.randint(low, len(base))]
            else:
                drop = gen_rng.randrange(len(base))
                # a command and the x-txgraph-wait-job for what it causes go together:
                # the wait alone would wait for something nothing causes
                after = drop + 2 if _waits_after(base, drop) else drop + 1
                prefix = base[:drop] + base[after:]
            length = max(length, len(prefix) + 1)
        families = self.config.families

        def source(i: int, res: Resources) -> dict[str, Any] | None:
            if i < len(prefix):
                return prefix[i]
            if i >= length:
                return None
            return Generator(gen_rng, families, res).next()

        return source

    def _record(self, result: RunResult) -> None:
        st = self.stats
        st.sequences += 1
        st.steps += len(result.steps)
        for step in result.steps:
            name = str(step.get("execute"))
            st.op_mix[name] = st.op_mix.get(name, 0) + 1
        new = set(result.behaviours) - st.behaviours
        if new:
            st.behaviours |= new
            st.timeline.append((round(time.monotonic() - self._start, 2), len(st.behaviours)))
            self._keep(result.steps, result.live)

    def _divergence(self, result: RunResult, d: Divergence) -> None:
        known = self.stats.divergences.get(d.signature)
        if known is not None:
            known["count"] += 1
            return
        entry: dict[str, Any] = {
            "kind": d.kind,
            "known": d.known,
            "command": d.command,
            "count": 1,
            "first_seconds": round(time.monotonic() - self._start, 2),
            "found_steps": len(result.steps),
            "lines": d.lines[:6],
        }
        self.stats.divergences[d.signature] = entry
        stop = self.config.stop_on
        if stop == d.signature or (stop == "crash" and d.kind in CRASH_KINDS):
            (self.config.out / STOP_FILE).write_text(f"{d.signature}\n")
        repro = self.config.out / f"repro-{d.signature}.json"
        if repro.exists():  # another worker found it first (and shrinks it)
            entry["repro"] = repro.name
            return
        # the whole sequence now (a campaign stopped early keeps a reproducer), shrunk
        # once the time budget is spent: shrinking costs runs the search needs more
        entry["repro"] = write_reproducers(
            self.config.out, result.steps, d, self.config.against
        ).name
        self._to_shrink.append((result.steps, d))

    def _shrink_all(self, deadline: float) -> None:
        """Shrink what this worker found, first found first, until ``deadline``."""
        stop = self.config.stop_on
        for steps, d in self._to_shrink:
            if time.monotonic() >= deadline:
                break
            if stop is not None and not (
                stop == d.signature or (stop == "crash" and d.kind in CRASH_KINDS)
            ):
                continue  # a campaign that looks for one finding shrinks only that one
            small, shrunk = shrink(steps, d.signature, self.config.against, deadline=deadline)
            final = shrunk.divergence if shrunk.divergence is not None else d
            entry = self.stats.divergences[d.signature]
            entry["steps"] = len(small)
            entry["repro"] = write_reproducers(
                self.config.out, small, final, self.config.against
            ).name
            self._write_stats()
        self._to_shrink = []

    def _write_stats(self) -> None:
        self.stats.elapsed = round(time.monotonic() - self._start, 2)
        path = self.config.out / f"worker-{self.index}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats.to_json()))
        tmp.replace(path)

    def run(self) -> WorkerStats:
        """Run sequences until the time budget ends; statistics are written as they change."""
        self._start = time.monotonic()
        self._cpu = time.process_time()
        deadline = self._start + self.config.seconds
        last_write = 0.0
        parent = os.getppid()
        while time.monotonic() < deadline:
            if os.getppid() != parent:
                break  # the campaign process is gone (killed): stop instead of running on
            if self.config.stop_on and (self.config.out / STOP_FILE).exists():
                break  # a worker found what the campaign looks for: the search is over
            try:
                result = run_sequence(self._source(), self.config.against, max_steps=_MAX_LEN * 2)
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                # a peer that would not start (a loaded machine): not a finding, try again
                self.stats.peer_failures.append(str(err)[:300])
                continue
            self._record(result)
            if result.divergence is not None:
                self._divergence(result, result.divergence)
            if time.monotonic() - last_write > 0.5:
                self._write_stats()
                last_write = time.monotonic()
        self.stats.searched = round(time.monotonic() - self._start, 2)
        # the CPU this worker had: on a shared machine, steps per CPU second say what
        # the code does, steps per second what the machine let it do
        self.stats.cpu_seconds = round(time.process_time() - self._cpu, 2)
        if os.getppid() == parent and self.config.shrink_seconds > 0:
            # the campaign process waits up to 600 s past the budget
            self._shrink_all(time.monotonic() + min(self.config.shrink_seconds, 540.0))
        self.stats.done = True
        self._write_stats()
        return self.stats
