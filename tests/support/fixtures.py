"""Pytest fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.qsd import QSD, qsd_available


@pytest.fixture
def qsd() -> Iterator[QSD]:
    """A fresh qemu-storage-daemon 7.2. `make test` installs it; a missing binary fails loudly."""
    if not qsd_available():
        pytest.fail("qemu-storage-daemon is not installed; run `make test`, which installs it")
    with QSD() as daemon:
        yield daemon


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A scratch directory for image files, removed after the test."""
    d = tmp_path / "img"
    d.mkdir()
    return d
