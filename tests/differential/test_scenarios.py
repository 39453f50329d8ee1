"""Every differential scenario, run on qemu-storage-daemon 7.2 and on txgraph, must agree.

The oracle is the live daemon; see :mod:`tests.differential.harness` for what is compared.
Debug one failure with ``python -m tests.differential.harness NAME``.
"""

from __future__ import annotations

import copy
import random

import pytest

from tests.differential.harness import EnginePeer, QSDPeer, Scenario, differential
from tests.differential.scenarios import SCENARIOS

pytestmark = pytest.mark.qsd


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    comp = differential(scenario, right=EnginePeer)
    if not comp.equal:
        pytest.fail(str(comp), pytrace=False)


def _sample(n: int = 10) -> list[Scenario]:
    """A fixed, theme-spread sample: the first scenario of each theme plus a seeded draw."""
    firsts: dict[str, Scenario] = {}
    for s in SCENARIOS:
        firsts.setdefault(s.theme, s)
    rest = [s for s in SCENARIOS if s not in firsts.values()]
    picked = list(firsts.values()) + random.Random(2024).sample(rest, max(0, n - len(firsts)))
    return picked[: max(n, len(firsts))]


@pytest.mark.parametrize("scenario", _sample(), ids=[s.name for s in _sample()])
def test_harness_self_check(scenario: Scenario) -> None:
    """Two independent QSD processes must compare equal: proves the canonicalisation
    (auto-name random digits, temp paths, ids) removes exactly the run-specific noise."""
    comp = differential(scenario, right=QSDPeer, left=QSDPeer)
    if not comp.equal:
        pytest.fail(str(comp), pytrace=False)


def test_harness_detects_difference() -> None:
    """A one-field change in the state, or a different error text, must be reported."""
    from tests.differential.harness import compare_traces, run_scenario
    from tests.differential.scenarios import BY_NAME

    left = run_scenario(BY_NAME["inh_readonly_to_file"], QSDPeer)
    right = copy.deepcopy(left)
    right.records[0].nodes["qf"]["ro"] = False
    right.records[1].reply = {"error": {"class": "GenericError", "desc": "something else"}}
    comp = compare_traces(left, right)
    assert not comp.equal
    text = str(comp)
    assert "nodes[qf].ro" in text and "step 1" in text, text


def test_scenario_catalogue() -> None:
    """The catalogue is big enough and every theme is represented."""
    assert len(SCENARIOS) >= 70
    assert {s.theme for s in SCENARIOS} >= {
        "names",
        "drivers",
        "inherit",
        "backing",
        "perms",
        "delete",
        "badinput",
        "queries",
    }
