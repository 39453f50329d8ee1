"""``txgraph drive -- ARGS``: print the translation of QEMU drive options (docs/drive-output.md).

On a refusal the output is what qemu-system-x86_64 7.2 prints (its warnings,
then ``qemu-system-x86_64: LOCATION: MESSAGE``) and the exit status is 1, as
QEMU's ``exit(1)`` after ``error_report_err``.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from txgraph.drive.translate import DriveError, translate

__all__ = ["run_drive_command"]


def run_drive_command(
    argv: list[str], explain: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Translate ``argv``; write the JSON (and, with ``explain``, the rules) and return the status."""
    try:
        result = translate(argv)
    except DriveError as refusal:
        for warning in getattr(refusal, "warnings", []):
            err.write(warning + "\n")
        err.write(refusal.render())
        return 1
    except Exception as bug:  # a translator bug is reported in one line, never as a traceback
        err.write(f"txgraph drive: internal error: {type(bug).__name__}: {bug}\n")
        return 2
    for warning in result.stderr_lines:
        err.write(warning + "\n")
    out.write(json.dumps(result.to_json(), indent=2) + "\n")
    if explain:
        out.write(result.explain_text() + "\n")
    return 0
