"""Mutation check of ``txgraph fuzz``: plant one bug at a time, time how long a campaign takes.

Each mutant is one textual change to a scratch copy of the ``txgraph`` package
(an error text, a permission formula, an inheritance rule, a name rule, a
reopen reset rule...). For each, a campaign ``txgraph fuzz --against qsd`` runs
on the scratch copy, and the mutant counts as *caught* when the campaign finds
a divergence that the planted bug explains: its lines match the mutant's
marker, it is not a known QEMU bug (``txgraph.fuzz.known``), and the same
campaign on the unmutated code (the baseline, run first) did not find its
signature. Prints one JSON line per mutant and a table at the end.

    .venv/bin/python tools/fuzz_mutants.py --seconds 60 --jobs 2 [--only LABEL,...]

Long (a campaign per mutant plus the baseline): not part of ``make test``;
``tests/unit/fuzz/test_mutants.py`` runs it when ``TXGRAPH_FUZZ_MUTANTS=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    label: str
    path: str
    old: str
    new: str
    #: what a divergence the planted bug causes shows (regex over its lines)
    marker: str


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "error text",
        "txgraph/ops/blockdev.py",
        'f"Node {node_name} is in use"',
        'f"Node {node_name} is busy"',
        r'Node [^\s\']+ is (in use|busy)"',
    ),
    Mutant(
        "snapshot rule",
        "txgraph/ops/snapshot.py",
        "if graph.backing_child(overlay) is not None:",
        "if False:",
        "already has a backing image",
    ),
    Mutant(
        "quorum rule",
        "txgraph/ops/drivers/quorum.py",
        "if threshold > count:",
        "if threshold > count + 1:",
        "threshold may not exceed",
    ),
    Mutant(
        "name rule", "txgraph/model/names.py", "self.counter += 1", "self.counter += 2", "#block"
    ),
    # the reset rule: an option left out of a reopen goes back to its default
    Mutant(
        "reopen reset",
        "txgraph/ops/reopen.py",
        'entry.detect_zeroes = "off" if detect is None else str(detect)',
        "entry.detect_zeroes = node.detect_zeroes if detect is None else str(detect)",
        "detect_zeroes",
    ),
    Mutant(
        "perm formula",
        "txgraph/model/child_perms.py",
        "    nshared = _R | _U\n",
        "    nshared = _R | _U | _S\n",
        "resize",
    ),
    Mutant(
        "inheritance",
        "txgraph/ops/inherit.py",
        'child.set_default("read-only", "on", forced)',
        'child.set_default("read-only", "off", forced)',
        r"\.ro:|read-only",
    ),
    Mutant(
        "object in use",
        "txgraph/ops/objects.py",
        "raise BlockError(f\"object '{obj_id}' is in use, can not be deleted\")",
        "pass",
        "in use, can not be deleted",
    ),
    Mutant(
        "node-name text",
        "txgraph/ops/open.py",
        "raise OpenError(f\"Invalid node-name: '{name}'\")",
        "raise OpenError(f\"Invalid node name: '{name}'\")",
        "Invalid node",
    ),
    Mutant(
        "del in use",
        "txgraph/ops/blockdev.py",
        'raise BlockError(f"Block device {node_name} is in use")',
        "pass",
        "is in use",
    ),
)


def _scratch(root: Path, mutant: Mutant | None) -> Path:
    """A copy of the working tree's package with ``mutant`` applied."""
    shutil.copytree(
        REPO / "txgraph", root / "txgraph", ignore=shutil.ignore_patterns("__pycache__")
    )
    if mutant is not None:
        target = root / mutant.path
        text = target.read_text()
        if mutant.old not in text:
            raise SystemExit(f"mutant {mutant.label!r}: {mutant.old!r} not in {mutant.path}")
        target.write_text(text.replace(mutant.old, mutant.new, 1))
    return root


def _campaign(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    probe = subprocess.run(
        [sys.executable, "-c", "import txgraph; print(txgraph.__file__)"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    if not probe.stdout.startswith(str(root)):  # the scratch copy must be what runs
        raise SystemExit(f"scratch copy not imported: {probe.stdout}")
    out = root / "campaign"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "txgraph.cli",
            "fuzz",
            "--against",
            args.against,
            "--time",
            str(args.seconds),
            "--seed",
            str(args.seed),
            "--jobs",
            str(args.jobs),
            "--out",
            str(out),
            "--shrink-seconds",
            "0",  # the time to catch is what counts; reproducers stay whole
        ],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc.wait(args.seconds + 900)
    finally:
        if proc.poll() is None:  # this tool was stopped: so is the campaign (and its peers)
            proc.terminate()
            proc.wait(60)
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for seed in args.seeds:
        args.seed = seed
        rows += _run_seed(args)
    return rows


def _run_seed(args: argparse.Namespace) -> list[dict[str, Any]]:
    chosen = [m for m in MUTANTS if not args.only or m.label in args.only]
    with tempfile.TemporaryDirectory(prefix="txgraph-mutants-") as tmp:
        base = _campaign(_scratch(Path(tmp) / "baseline", None), args)
        baseline = set(base["divergences"])
        print(
            json.dumps({"seed": args.seed, "baseline": sorted(baseline), "steps": base["steps"]}),
            flush=True,
        )
        rows = []
        for i, mutant in enumerate(chosen):
            root = _scratch(Path(tmp) / f"m{i}", mutant)
            report = _campaign(root, args)
            marker = re.compile(mutant.marker)
            own = {
                s: d
                for s, d in report["divergences"].items()
                if not d.get("known")
                and s not in baseline
                and any(marker.search(line) for line in d.get("lines", []))
            }
            first = min((d["first_seconds"] for d in own.values()), default=None)
            rows.append(
                {
                    "mutant": mutant.label,
                    "seed": args.seed,
                    "file": mutant.path,
                    "caught_after_s": first,
                    "divergences": len(own),
                    "steps": report["steps"],
                    "first_lines": [
                        d["lines"][:2]
                        for d in sorted(own.values(), key=lambda d: d["first_seconds"])
                    ][:2],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)  # unwind, so the running campaign is stopped too
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1], help="1,2,3"
    )
    parser.add_argument("--against", default="qsd", choices=["qsd", "model"])
    parser.add_argument("--only", type=lambda s: set(s.split(",")), default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args()
    rows = run(args)
    caught = [r for r in rows if r["caught_after_s"] is not None]
    seeds = args.seeds
    print("\n| mutant | file | " + " | ".join(f"seed {s} (s)" for s in seeds) + " |")
    print("|---|---|" + "---|" * len(seeds))
    for m in [m for m in MUTANTS if not args.only or m.label in args.only]:
        times = []
        for seed in seeds:
            row = next(r for r in rows if r["mutant"] == m.label and r["seed"] == seed)
            times.append(
                "not caught" if row["caught_after_s"] is None else str(row["caught_after_s"])
            )
        print(f"| {m.label} | {m.path} | " + " | ".join(times) + " |")
    print(
        f"\ncaught {len(caught)}/{len(rows)} (mutant, seed) pairs within {args.seconds} s "
        f"with {args.jobs} job(s)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
