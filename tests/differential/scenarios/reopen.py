"""blockdev-reopen scenarios (lead)."""

from __future__ import annotations

from tests.differential.harness import Scenario

SCENARIOS: list[Scenario] = []
