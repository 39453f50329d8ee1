"""Every plan step these tests run also diffs whole-graph snapshots and requires the
O(change) diff (txgraph.plan.diff.PreImage) to equal it."""

from __future__ import annotations

import pytest

import txgraph.plan.verify as verify


@pytest.fixture(autouse=True)
def _verify_step_diffs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "_VERIFY_DIFF", True)
