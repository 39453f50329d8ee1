"""All differential scenarios, grouped by theme (one module per theme)."""

from __future__ import annotations

from tests.differential.harness import Scenario
from tests.differential.scenarios import (
    backing,
    badinput,
    delete,
    drivers,
    formats,
    inherit,
    names,
    perms,
    qom,
    queries,
    reconfig,
    reopen,
    vvfat,
)

__all__ = ["SCENARIOS", "BY_NAME"]

SCENARIOS: list[Scenario] = [
    *names.SCENARIOS,
    *drivers.SCENARIOS,
    *inherit.SCENARIOS,
    *backing.SCENARIOS,
    *perms.SCENARIOS,
    *delete.SCENARIOS,
    *badinput.SCENARIOS,
    *queries.SCENARIOS,
    *reopen.SCENARIOS,
    *reconfig.SCENARIOS,
    *formats.SCENARIOS,
    *qom.SCENARIOS,
    *vvfat.SCENARIOS,
]
BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}
assert len(BY_NAME) == len(SCENARIOS), "duplicate scenario names"
