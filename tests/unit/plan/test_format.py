"""Plan file format: both shapes, groups, {dir} substitution, and precise refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.plan.plankit import EXAMPLES
from txgraph import __version__
from txgraph.plan.format import PlanError, check_verified, load_plan, parse_plan, substitute_dir
from txgraph.plan.seal import seal_problem, seal_report


def test_list_and_object_shapes_are_equivalent() -> None:
    steps = [{"execute": "blockdev-del", "arguments": {"node-name": "a"}}]
    assert parse_plan(steps).steps == parse_plan({"steps": steps, "graph": []}).steps
    assert parse_plan({"steps": steps, "graph": [{"execute": "query-version"}]}).graph == [
        {"execute": "query-version"}
    ]


def test_transaction_group_runs_as_x_txgraph_transaction() -> None:
    actions = [{"type": "abort", "data": {}}]
    step = parse_plan([{"transaction": actions}]).steps[0]
    assert step.is_group
    assert step.message() == {"execute": "x-txgraph-transaction", "arguments": {"actions": actions}}
    assert step.to_json() == {"transaction": actions}


@pytest.mark.parametrize(
    "bad, text",
    [
        ({"nosteps": []}, "unexpected plan member"),
        ({"graph": []}, "needs a 'steps' member"),
        ("x", "JSON array of steps"),
        ([1], "step 0: expected an object"),
        ([{"arguments": {}}], "step 0: missing 'execute'"),
        ([{"execute": "a", "argument": {}}], "unexpected member"),
        ([{"execute": "a", "arguments": []}], "'arguments' must be an object"),
        ([{"transaction": {}}], "must be an array of action objects"),
        ([{"transaction": [], "execute": "x"}], "only the 'transaction' member"),
    ],
)
def test_malformed_plans_are_refused_with_the_step_index(bad: object, text: str) -> None:
    with pytest.raises(PlanError, match=text):
        parse_plan(bad)


def test_dir_placeholder_is_substituted_everywhere() -> None:
    value = {"a": ["{dir}/x", {"b": "{dir}"}], "n": 3}
    assert substitute_dir(value, "/d") == {"a": ["/d/x", {"b": "/d"}], "n": 3}
    assert substitute_dir(value, None) is value


def test_example_plan_parses_with_dir(tmp_path: Path) -> None:
    plan = load_plan(EXAMPLES / "seed-section3.json", str(tmp_path))
    assert [s.execute for s in plan.steps] == [
        "blockdev-add",
        "blockdev-snapshot",
        "x-txgraph-insert-filter",
        "blockdev-reopen",
    ]
    assert str(tmp_path) in json.dumps(plan.steps[0].arguments)


def test_verified_file_needs_ok_and_a_txgraph_generation() -> None:
    good = {
        "format": "txgraph-plan-report/1",
        "txgraph": __version__,
        "ok": True,
        "plan": [],
        "source": {"kind": "import", "generation": 3, "digest": "ab"},
    }
    assert check_verified(seal_report(good)) is None
    assert "did not verify" in str(check_verified(seal_report({**good, "ok": False})))
    assert "not verified against a live graph" in str(
        check_verified(seal_report({**good, "source": {"kind": "commands"}}))
    )
    # a capture from QEMU / qemu-storage-daemon carries its graph digest instead
    qemu = {**good, "source": {"kind": "import", "graph-digest": "cd"}}
    assert check_verified(seal_report(qemu)) is None
    assert "not a verified plan" in str(check_verified([]))
    assert "carries no seal" in str(check_verified(good))
    assert "verified by txgraph 0.0.1" in str(
        check_verified(seal_report({**good, "txgraph": "0.0.1"}))
    )


def test_seal_binds_every_member() -> None:
    report = {
        "format": "txgraph-plan-report/1",
        "txgraph": __version__,
        "ok": True,
        "policy": "safe",
        "plan": [{"execute": "query-version"}],
        "source": {"kind": "import", "generation": 3, "digest": "ab"},
        "steps": [{"index": 0, "ok": True}],
    }
    sealed = seal_report(report)
    assert seal_problem(sealed) is None
    for member, value in (
        ("plan", []),
        ("policy", "qemu"),
        ("ok", False),
        ("txgraph", "9"),
        ("source", {"kind": "import", "generation": 4, "digest": "ab"}),
        ("steps", [{"index": 0, "ok": False}]),
    ):
        assert "changed after it was verified" in str(seal_problem({**sealed, member: value})), (
            member
        )
    # member order and whitespace are not contents
    reordered = json.loads(json.dumps(dict(reversed(list(sealed.items())))))
    assert seal_problem(reordered) is None
    keyed = seal_report(report, b"k")
    assert seal_problem(keyed, b"k") is None
    assert "sealed with a key" in str(seal_problem(keyed))
    assert "changed after it was verified" in str(seal_problem(keyed, b"other"))
    # a keyless re-seal of an edited plan does not pass for a keyed one
    forged = seal_report({**report, "plan": []})
    forged["seal"]["algorithm"] = "hmac-sha256"
    assert seal_problem(forged, b"k") is not None
