"""QMP commands that reconfigure a live graph: reopen, snapshots, quorum, replace, filters."""

from __future__ import annotations

from typing import Any

from txgraph.qmp.commands import CommandContext, command

__all__: list[str] = []
