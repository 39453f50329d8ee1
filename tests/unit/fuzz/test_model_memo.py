"""Model mode checks each graph once per worker, by its digest (txgraph.fuzz.run._CHECKED).

That is only sound when the digest covers everything the whole-graph check reads: with
``VERIFY_MEMO`` every memo hit is checked again from scratch and must give the memo's
verdict. Sequences run twice revisit the same graphs, so every check of the second run
is a hit.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from txgraph.fuzz import run as fuzz_run
from txgraph.fuzz.generate import FAMILIES, Generator, Resources


@pytest.fixture
def verify(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    memo: dict[str, Any] = {}
    monkeypatch.setattr(fuzz_run, "_CHECKED", memo)
    monkeypatch.setattr(fuzz_run, "VERIFY_MEMO", True)
    return memo


def _recorded(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)

    def source(i: int, res: Resources) -> dict[str, Any] | None:
        return None if i >= 18 else Generator(rng, list(FAMILIES), res).next()

    return fuzz_run.run_sequence(source, "model").steps


def _fixed(steps: list[dict[str, Any]]) -> Any:
    return lambda i, _res: steps[i] if i < len(steps) else None


def test_memo_hits_equal_fresh_checks(
    verify: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    sequences = [_recorded(seed) for seed in range(12)]
    first = set(verify)
    assert len(first) > 20
    asked: list[str] = []
    full_check = fuzz_run._full_check
    monkeypatch.setattr(
        fuzz_run,
        "_full_check",
        lambda sides, digest: asked.append(digest) or full_check(sides, digest),
    )
    for steps in sequences:
        result = fuzz_run.run_sequence(_fixed(steps), "model")
        assert result.divergence is None or result.divergence.kind != "memo", result.divergence
    hits = [d for d in asked if d in first]
    assert len(hits) >= 10  # graphs with user names only come back with the same digest


def test_a_wrong_memo_is_found(verify: dict[str, Any]) -> None:
    steps = [{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "a"}}]
    assert fuzz_run.run_sequence(_fixed(steps), "model").divergence is None
    (digest,) = verify
    verify[digest] = ("invariant", ["planted"])
    d = fuzz_run.run_sequence(_fixed(steps), "model").divergence
    assert d is not None and d.kind == "memo" and "planted" in d.lines[0]
