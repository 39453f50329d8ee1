"""Suite-wide configuration: hypothesis profiles and the QEMU peer fixtures."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# dev: quick local runs; ci: bounded so `make test` stays well under 20 minutes,
# derandomized so a CI failure reproduces; nightly: a long exploration.
settings.register_profile(
    "dev",
    max_examples=20,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    max_examples=1000,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(autouse=True)
def _close_helper_nodes() -> Iterator[None]:
    """Close the driver nodes the io helpers opened (tests/unit/io/imgkit.py) after each test."""
    yield
    for name in ("imgkit", "tests.unit.io.imgkit"):
        kit = sys.modules.get(name)
        if kit is not None:
            kit.close_opened()
