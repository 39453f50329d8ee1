"""The live progress display of ``txgraph fuzz`` (rich), shown only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

__all__ = ["Progress"]


class Progress:
    """Steps/s, sequences, unique behaviours, divergences and time left, refreshed in place."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self._live: Live | None = None
        if sys.stderr.isatty():
            self._live = Live(
                self._table({}), console=Console(stderr=True), transient=True, refresh_per_second=2
            )

    def _table(self, report: dict[str, Any]) -> Table:
        table = Table(title="txgraph fuzz", show_header=False)
        left = max(0.0, self._end - time.monotonic())
        for key, value in (
            ("steps/s", report.get("steps_per_second", 0)),
            ("steps", report.get("steps", 0)),
            ("sequences", report.get("sequences", 0)),
            ("behaviours", report.get("behaviours", 0)),
            ("divergences", len(report.get("divergences", {}))),
            ("time left", f"{left:.0f} s"),
        ):
            table.add_row(key, str(value))
        return table

    def update(self, report: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(self._table(report))

    def __enter__(self) -> Progress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
