"""The transaction core: every operation is all-or-nothing, proven by digest.

For each operation, a fault is injected before each of its primitive steps in
turn; after every such failure the graph digest and the data-plane state must
equal the state before the operation. This would fail if any primitive forgot
to record its inverse, or an inverse restored the wrong thing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.atomicity import assert_all_steps_atomic
from txgraph.errors import BlockError
from txgraph.ops.blockdev import blockdev_add, blockdev_del
from txgraph.ops.objects import object_add
from txgraph.ops.session import Session


def _img(path: Path, *extra: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), "8M"], check=True)
    return path


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    _img(tmp_path / "base.qcow2")
    _img(tmp_path / "mid.qcow2", "-b", "base.qcow2", "-F", "qcow2")
    return _img(tmp_path / "top.qcow2", "-b", "mid.qcow2", "-F", "qcow2")


def test_blockdev_add_of_a_header_chain_is_atomic(chain: Path) -> None:
    def op(s: Session) -> Any:
        return blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "filename": str(chain)},
            },
        )

    assert assert_all_steps_atomic(lambda s: None, op, check=False) > 10


def test_blockdev_add_referencing_existing_nodes_is_atomic(chain: Path) -> None:
    def setup(s: Session) -> None:
        blockdev_add(s, {"driver": "file", "node-name": "f", "filename": str(chain)})

    def op(s: Session) -> Any:
        return blockdev_add(s, {"driver": "qcow2", "node-name": "q", "file": "f", "backing": None})

    assert_all_steps_atomic(setup, op)


def test_blockdev_del_cascade_is_atomic(chain: Path) -> None:
    def setup(s: Session) -> None:
        blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "filename": str(chain)},
            },
        )

    assert_all_steps_atomic(setup, lambda s: blockdev_del(s, "top"))


def test_failed_add_leaves_nothing_but_advances_the_name_counter(tmp_path: Path) -> None:
    session = Session(check=False)
    digest = session.graph.digest()
    with pytest.raises(BlockError, match="Could not open backing file"):
        img = tmp_path / "orphan.qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "gone.qcow2",
                "-F",
                "qcow2",
                "-u",
                str(img),
                "8M",
            ],
            check=True,
        )
        blockdev_add(
            session,
            {"driver": "qcow2", "node-name": "o", "file": {"driver": "file", "filename": str(img)}},
        )
    assert session.graph.digest() == digest
    assert session.runtime.state() == ()
    # QEMU consumed #block0 (o's file) and #block1 (the backing's file) before failing.
    assert session.namer.counter == 2


def test_commit_bumps_the_generation_and_abort_does_not(tmp_path: Path) -> None:
    session = Session(check=False)
    object_add(session, {"qom-type": "throttle-group", "id": "tg"})
    gen = session.graph.generation
    blockdev_add(session, {"driver": "null-co", "node-name": "n"})
    assert session.graph.generation == gen + 1
    with pytest.raises(BlockError):
        blockdev_add(session, {"driver": "null-co", "node-name": "n"})
    assert session.graph.generation == gen + 1


def test_blockdev_reopen_with_child_changes_is_atomic(chain: Path, tmp_path: Path) -> None:
    """A reopen that re-points backing, swaps read-only and reopens implicit children."""
    from txgraph.ops.reopen import blockdev_reopen

    other = _img(tmp_path / "other.qcow2")

    def setup(s: Session) -> None:
        blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "node-name": "top-file", "filename": str(chain)},
            },
        )
        blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "o",
                "backing": None,
                "file": {"driver": "file", "filename": str(other)},
            },
        )

    def op(s: Session) -> Any:
        return blockdev_reopen(
            s,
            [
                {
                    "driver": "qcow2",
                    "node-name": "top",
                    "read-only": True,
                    "backing": "o",
                    "cache": {"direct": True},
                    "file": {"driver": "file", "node-name": "top-file", "filename": str(chain)},
                },
                {
                    "driver": "qcow2",
                    "node-name": "o",
                    "read-only": True,
                    "backing": None,
                    "file": {"driver": "file", "filename": str(other)},
                },
            ],
        )

    assert assert_all_steps_atomic(setup, op) > 10


def test_blockdev_reopen_file_swap_is_atomic(tmp_path: Path) -> None:
    """The iotest-245 swap: two formats exchange their file children in one reopen."""
    from txgraph.ops.reopen import blockdev_reopen

    a, b = _img(tmp_path / "a.qcow2"), _img(tmp_path / "b.qcow2")

    def setup(s: Session) -> None:
        for name, path in (("a", a), ("b", b)):
            blockdev_add(
                s,
                {
                    "driver": "qcow2",
                    "node-name": name,
                    "backing": None,
                    "file": {"driver": "file", "node-name": f"{name}f", "filename": str(path)},
                },
            )

    def op(s: Session) -> Any:
        return blockdev_reopen(
            s,
            [
                {"driver": "qcow2", "node-name": "a", "backing": None, "file": "bf"},
                {"driver": "qcow2", "node-name": "b", "backing": None, "file": "af"},
            ],
        )

    assert_all_steps_atomic(setup, op)
