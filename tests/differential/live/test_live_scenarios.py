"""Every live-data scenario on qemu-storage-daemon 7.2 and on ``txgraph serve``, compared.

See :mod:`tests.differential.live.harness` for what is compared. Scenarios txgraph
fails today are strict xfails with their root cause (:mod:`.scenarios.known`).
Debug one with ``python -m tests.differential.live.harness NAME``.
"""

from __future__ import annotations

import copy

import pytest

from tests.differential.live.harness import (
    LiveScenario,
    compare_live,
    live_differential,
    qsd_peer,
    run_live,
)
from tests.differential.live.scenarios import BY_NAME, SCENARIOS
from tests.differential.live.scenarios.known import KNOWN

pytestmark = pytest.mark.qsd


def _param(s: LiveScenario) -> object:
    reason = KNOWN.get(s.name)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(s, id=s.name, marks=marks)


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_live_scenario(scenario: LiveScenario) -> None:
    comp = live_differential(scenario)
    if not comp.equal:
        pytest.fail(str(comp), pytrace=False)


SELF = [
    "snap_under_writable_export",
    "reopen_cor_insert",
    "quorum_add_child_under_export",
    "ext_insert_filter_vs_reopen",
]


@pytest.mark.parametrize("name", SELF)
def test_live_harness_self_check(name: str) -> None:
    """Two QSD runs compare equal: temp paths, timing lines and host offsets are removed."""
    comp = live_differential(BY_NAME[name], right=qsd_peer)
    assert comp.equal, str(comp)


def test_live_harness_detects_differences() -> None:
    """A changed guest outcome, guest view or image check is reported at its step."""
    left = run_live(BY_NAME["snap_under_writable_export"], qsd_peer)
    io_step = next(r for r in left.records if r.command.startswith("IO") and "0xab" in r.command)
    assert io_step.data["rc"] == 0 and io_step.data["out"][0].startswith("wrote 65536/65536")
    assert any(r.data.get("view", "").startswith("4194304:") for r in left.records)
    assert left.images["ov.qcow2"]["check"]["allocated-clusters"] == 1
    right = copy.deepcopy(left)
    right_io = right.records[io_step.index]
    right_io.data["out"][0] = "write failed: Operation not permitted"
    right.images["ov.qcow2"]["check"]["allocated-clusters"] = 0
    text = str(compare_live(left, right))
    assert f"step {io_step.index}" in text and "Operation not permitted" in text, text
    assert "images.ov.qcow2.check.allocated-clusters" in text, text


def test_live_catalogue() -> None:
    """At least 40 scenarios; every known failure names an existing scenario."""
    assert len(SCENARIOS) >= 40
    assert set(KNOWN) <= set(BY_NAME)
    assert all(r.startswith(("issue 7:", "not in issue 7")) for r in KNOWN.values())
