"""Secrets, LUKS and LUKS-encrypted qcow2: every scenario agrees with qemu-storage-daemon 7.2.

The scenarios are in :mod:`tests.differential.scenarios.crypto`; debug one with
``python -m tests.differential.harness`` after adding it to the scenario list, or
by running this test with ``-k NAME``.
"""

from __future__ import annotations

import pytest

from tests.differential.harness import EnginePeer, Scenario, differential
from tests.differential.scenarios.crypto import SCENARIOS

pytestmark = pytest.mark.qsd


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_crypto_scenario(scenario: Scenario) -> None:
    comp = differential(scenario, right=EnginePeer)
    if not comp.equal:
        pytest.fail(str(comp), pytrace=False)
