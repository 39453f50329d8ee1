"""The model-mode reply invariant (txgraph.fuzz.replies): QSD's own replies pass it, txgraph's
replies along fuzz sequences pass it, and every way a reply can break QAPI is caught."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from txgraph.fuzz.generate import FAMILIES, Generator
from txgraph.fuzz.replies import reply_problem
from txgraph.fuzz.run import run_sequence

STEPS: list[dict[str, Any]] = [
    {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0"}},
    {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "qcow2",
            "node-name": "q",
            "file": {"driver": "file", "filename": "{dir}/b1.qcow2"},
        },
    },
    {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
    {"execute": "x-debug-query-block-graph"},
    {"execute": "query-block-exports"},
    {"execute": "query-jobs"},
    {"execute": "blockdev-del", "arguments": {"node-name": "nosuch"}},
    {"execute": "no-such-command"},
]


def _fixed(steps: list[dict[str, Any]]) -> Any:
    return lambda i, _res: steps[i] if i < len(steps) else None


@pytest.mark.qsd
def test_qsd_replies_are_valid_qapi() -> None:
    """The validator is no stricter than QEMU: the daemon's own replies pass."""
    result = run_sequence(_fixed(STEPS), "qsd-only")
    assert result.divergence is None
    for step, replies in zip(result.steps, result.replies):
        assert reply_problem(step["execute"], replies["qsd"]) is None, (step, replies)


def test_txgraph_replies_along_sequences_are_valid_qapi() -> None:
    rng = random.Random(5)
    checked = 0
    for _ in range(20):
        length = rng.randint(5, 20)
        result = run_sequence(
            lambda i, res, n=length: None if i >= n else Generator(rng, list(FAMILIES), res).next(),
            "model",
        )
        assert result.divergence is None or result.divergence.kind != "qapi-reply", result
        checked += len(result.replies)
    assert checked > 100


def _nodes_reply() -> dict[str, Any]:
    result = run_sequence(_fixed(STEPS[:3]), "model")
    reply = result.replies[2]["txgraph"]
    assert reply_problem("query-named-block-nodes", reply) is None
    return reply


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda r: r["return"][0].pop("ro"), r"\.ro: missing"),
        (lambda r: r["return"][0].update(surplus=1), "surplus: not a member"),
        (lambda r: r["return"][0].update(detect_zeroes="maybe"), "not one of"),
        (lambda r: r["return"][0].update(ro="yes"), "is not boolean"),
        (lambda r: r["return"][0].update(backing_file_depth=True), "is not int"),
        (lambda r: r["return"][0]["image"].update(format=None), "format: NoneType"),
        (lambda r: r.update(extra=1), "neither return nor error"),
        (lambda r: r.update(**{"return": {}}), "is not an array"),
    ],
)
def test_broken_returns_are_caught(breakage: Any, expected: str) -> None:
    import re

    reply = copy.deepcopy(_nodes_reply())
    breakage(reply)
    problem = reply_problem("query-named-block-nodes", reply)
    assert problem is not None and re.search(expected, problem), problem


def test_broken_errors_are_caught() -> None:
    ok = {"error": {"class": "GenericError", "desc": "x", "__io.txgraph_explanation": {}}}
    assert reply_problem("blockdev-del", ok) is None
    assert "QapiErrorClass" in str(
        reply_problem("blockdev-del", {"error": {"class": "PythonException", "desc": "x"}})
    )
    assert "not a string" in str(
        reply_problem("blockdev-del", {"error": {"class": "GenericError", "desc": 3}})
    )
    assert "not QMP's" in str(
        reply_problem("blockdev-del", {"error": {"class": "GenericError", "desc": "", "x": 1}})
    )
    assert "not in the schema" in str(reply_problem("no-such-command", {"return": {}}))
    # blockdev-del returns the empty object: members there are not QAPI
    assert "not a member" in str(reply_problem("blockdev-del", {"return": {"a": 1}}))
