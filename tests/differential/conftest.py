"""Fixtures of the differential suite: the scenario list and a skip-free QSD check."""

from __future__ import annotations

import pytest

from tests.support.qsd import qsd_available


@pytest.fixture(autouse=True)
def _require_qsd(request: pytest.FixtureRequest) -> None:
    """Differential tests need the oracle; a missing binary is a failure, not a skip."""
    if request.node.get_closest_marker("qsd") and not qsd_available():
        pytest.fail("qemu-storage-daemon is not installed; run `make test`, which installs it")
