"""Every live-data scenario, one module per theme."""

from __future__ import annotations

from tests.differential.live.harness import LiveScenario
from tests.differential.live.scenarios import exports, extensions, reopen, snapshots

__all__ = ["SCENARIOS", "BY_NAME"]

SCENARIOS: list[LiveScenario] = [
    *snapshots.SCENARIOS,
    *reopen.SCENARIOS,
    *exports.SCENARIOS,
    *extensions.SCENARIOS,
]
BY_NAME: dict[str, LiveScenario] = {s.name: s for s in SCENARIOS}
assert len(BY_NAME) == len(SCENARIOS), "duplicate scenario names"
