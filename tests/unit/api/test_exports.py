"""The public API: every name in txgraph.__all__ resolves and is documented."""

from __future__ import annotations

import txgraph


def test_every_public_name_resolves_and_has_a_docstring() -> None:
    for name in txgraph.__all__:
        obj = getattr(txgraph, name)
        if name != "__version__":
            assert obj.__doc__, f"{name} has no docstring"


def test_engine_round_trip_through_the_top_level_api() -> None:
    engine = txgraph.Engine()
    assert engine.execute({"execute": "blockdev-add",
                           "arguments": {"driver": "null-co", "node-name": "n"}}) == {"return": {}}
    assert isinstance(engine.context.session, txgraph.Session)
    verdict = txgraph.check(engine.context.session.graph)
    assert verdict.ok
