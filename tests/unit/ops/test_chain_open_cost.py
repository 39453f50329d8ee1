"""Opening an N-deep backing chain costs O(N) permission work and one check.

``bdrv_open_inherit`` attaches each layer's children one at a time, and each
attach refreshes the parent's subtree (``bdrv_refresh_perms``). Walking the
whole subtree at every attach is O(depth²); the refresh visits only the nodes
whose parent edges changed, so the visits grow linearly with the depth. And the
whole command is one transaction: the invariant checker runs once over the
new subgraph, not once per layer. These are counts, not timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import txgraph.model.perm_refresh as perm_refresh
import txgraph.ops.session as session_mod
from txgraph.bench.qmp import make_chain
from txgraph.qmp.engine import Engine


def _open_chain(tmp_path: Path, depth: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """(refresh visits, checker runs) of one blockdev-add auto-opening ``depth`` layers."""
    top = make_chain(tmp_path, depth)
    engine = Engine()
    visits = checks = 0
    real_context = perm_refresh.child_perm_context
    real_check = session_mod.run_checker

    def counting_context(*args: object, **kwargs: object) -> object:
        nonlocal visits
        visits += 1  # once per node a refresh visits (it computes the node's child edges)
        return real_context(*args, **kwargs)  # type: ignore[arg-type]

    def counting_check(*args: object, **kwargs: object) -> object:
        nonlocal checks
        checks += 1
        return real_check(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(perm_refresh, "child_perm_context", counting_context)
    monkeypatch.setattr(session_mod, "run_checker", counting_check)
    try:
        file = {"driver": "file", "filename": str(top)}
        reply = engine.execute(
            {
                "execute": "blockdev-add",
                "arguments": {"driver": "qcow2", "node-name": "top", "file": file},
            }
        )
        assert reply == {"return": {}}
        nodes = engine.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        assert len(nodes["return"]) == 2 * depth  # every layer and its file node
    finally:
        monkeypatch.undo()
        engine.context.session.close()
    return visits, checks


def test_chain_open_refresh_is_linear_and_checked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_dir, large_dir = tmp_path / "small", tmp_path / "large"
    small_dir.mkdir()
    large_dir.mkdir()
    small, small_checks = _open_chain(small_dir, 10, monkeypatch)
    large, large_checks = _open_chain(large_dir, 40, monkeypatch)
    assert small_checks == large_checks == 1
    # 2 nodes per layer; a quadratic walk would visit ~depth²/2 nodes (800 at depth 40)
    assert large <= 3 * 2 * 40
    # four times the depth costs about four times the visits, never sixteen
    assert large <= 5 * small
