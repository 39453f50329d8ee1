"""Reproducers a user can keep, replay and send upstream.

For a divergence with signature ``SIG`` the campaign directory gets

* ``repro-SIG.json``: the images (as ``qemu-img create`` command lines) and the
  plain list of QMP commands; ``txgraph replay FILE --against qsd|txgraph|both``
  runs it and reports step by step;
* ``repro-SIG.sh``: a shell script that reproduces it on qemu-storage-daemon
  alone, with its QMP monitor on standard input (what one attaches to a QEMU
  bug report);
* ``test_repro_SIG.py``: a pytest regression test in the style of
  ``tests/differential``: it fails while the divergence is there.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from txgraph.fuzz.generate import image_commands
from txgraph.fuzz.guest import GUEST_IO, qemu_io_argv
from txgraph.fuzz.jobs import WAIT_EVENT
from txgraph.fuzz.run import Divergence
from txgraph.plan.format import PlanError, json_text_error

__all__ = ["REPRO_FORMAT", "write_reproducers", "load_reproducer"]

REPRO_FORMAT = "txgraph-fuzz-repro/1"


def _json(steps: list[dict[str, Any]], divergence: Divergence, against: str) -> dict[str, Any]:
    return {
        "format": REPRO_FORMAT,
        "signature": divergence.signature,
        "kind": divergence.kind,
        "against": against,
        "step": divergence.step,
        "command": divergence.command,
        "divergence": divergence.lines,
        "images": image_commands(),
        "steps": steps,
    }


def _shell(steps: list[dict[str, Any]], divergence: Divergence) -> str:
    lines = [
        "#!/bin/sh",
        f"# txgraph fuzz reproducer {divergence.signature} ({divergence.kind}, "
        f"step {divergence.step}: {divergence.command})",
        "# Runs the sequence on qemu-storage-daemon alone; its QMP replies go to stdout.",
        "set -e",
        "dir=$(mktemp -d)",
        'cd "$dir"',
    ]
    lines += [" ".join(shlex.quote(a) for a in argv) for argv in image_commands()]
    lines.append("{")
    lines.append('  echo \'{"execute": "qmp_capabilities"}\'')
    for step in steps:
        if step.get("execute") == GUEST_IO:
            # the guest: qemu-io on the daemon's NBD socket, once it has run what came before
            args = step.get("arguments") or {}
            argv = qemu_io_argv(
                "", str(args.get("export")), [str(c) for c in args.get("commands", [])]
            )
            cmd = " ".join(shlex.quote(a) for a in argv) + '"$dir"/nbd.sock'
            lines.append(f"  sleep 0.5; {cmd} </dev/null >&2")
            continue
        if step.get("execute") == WAIT_EVENT:
            # a wait step: its command, then time for the job to get there (a pipe cannot
            # wait for an event; the QSD output shows the JOB_STATUS_CHANGE events)
            args = step.get("arguments") or {}
            lines.append(f"  # wait until job {args.get('job')} reaches {args.get('status')}")
            if isinstance(args.get("command"), dict):
                text = json.dumps(args["command"]).replace("{dir}", "__DIR__")
                lines.append(f'  echo {shlex.quote(text)} | sed "s|__DIR__|$dir|g"')
            lines.append("  sleep 1")
            continue
        text = json.dumps(step).replace("{dir}", "__DIR__")
        lines.append(f'  echo {shlex.quote(text)} | sed "s|__DIR__|$dir|g"')
    lines.append("  sleep 1")
    # a daemon that did not crash ends here (it does not end at the end of its input)
    lines.append('  echo \'{"execute": "quit"}\'')
    lines.append(
        "} | qemu-storage-daemon --chardev stdio,id=m0 --monitor chardev=m0"
        " && status=0 || status=$?"
    )
    lines.append('echo "exit status of qemu-storage-daemon: $status"')
    return "\n".join(lines) + "\n"


def _pytest(signature: str, against: str) -> str:
    return f'''"""Regression test found by txgraph fuzz (reproducer repro-{signature}.json)."""

from pathlib import Path

from txgraph.fuzz.repro import load_reproducer
from txgraph.fuzz.replay import replay

HERE = Path(__file__).resolve().parent


def test_repro_{signature.replace("-", "_")}() -> None:
    repro = load_reproducer(HERE / "repro-{signature}.json")
    report = replay(repro, against="{"both" if against == "qsd" else "txgraph"}")
    assert report.divergence is None, "\\n".join(report.divergence.lines)
'''


def write_reproducers(
    directory: Path, steps: list[dict[str, Any]], divergence: Divergence, against: str
) -> Path:
    """Write the three files for ``divergence``; return the JSON reproducer's path."""
    sig = divergence.signature
    path = directory / f"repro-{sig}.json"
    path.write_text(json.dumps(_json(steps, divergence, against), indent=2) + "\n")
    script = directory / f"repro-{sig}.sh"
    script.write_text(_shell(steps, divergence))
    script.chmod(0o755)
    (directory / f"test_repro_{sig}.py").write_text(_pytest(sig, against))
    return path


def load_reproducer(path: str | Path) -> dict[str, Any]:
    """A reproducer file, checked for its format."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PlanError(json_text_error(path, err)) from None
    if (
        not isinstance(data, dict)
        or data.get("format") != REPRO_FORMAT
        or not isinstance(data.get("steps"), list)
    ):
        raise PlanError(f"{path}: not a txgraph fuzz reproducer ({REPRO_FORMAT})")
    return data
