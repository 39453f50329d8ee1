"""The checker benchmark measures the graph its docstring describes.

It once built no backing chain at all (``backing=None if backing is None else
None``): the measured graph had no COW edges, so the per-transaction cost it
reported left out the rules that walk backing chains.
"""

from __future__ import annotations

import pytest

from tests.support.checker_bench import build, measure
from txgraph.checker import check


def test_build_chains_every_fourth_image_onto_the_previous_one() -> None:
    graph = build(60)
    backing = sorted((p, c) for p, c, key in graph.g.edges(keys=True) if key == "backing")
    assert backing == sorted((f"img{i}", f"img{i - 1}") for i in range(4, 30, 4))
    assert check(graph, engine="structural").ok


@pytest.mark.parametrize("engine", ["structural", "z3"])
def test_measure_times_one_check_per_transaction(engine: str) -> None:
    assert len(measure(40, 4, engine)) == 4
