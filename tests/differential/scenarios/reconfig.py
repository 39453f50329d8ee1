"""Snapshot, quorum-change, replace and filter scenarios."""

from __future__ import annotations

from tests.differential.harness import Scenario

SCENARIOS: list[Scenario] = []
