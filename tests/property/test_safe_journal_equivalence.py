"""``policy=safe`` decides every command exactly as it did with a copy of the graph.

The safe policy once deep-copied the graph per transaction to give the checker
its ``before``; it now reads the transaction's journal. On random command
sequences (the fuzzer's generator: qcow2 chains on real images, reopens that
drop backing links, snapshots, filters, quorums, deletions), every transaction
is checked with both: the old ``before`` (a copy taken when the transaction
starts) and the journal, and the verdicts — hence what is refused — must be
the same. The plan-verification path (a journal spanning a whole command,
judged on the whole graph, and on the command's touched region when the graph
before it was valid) is compared the same way.
"""

from __future__ import annotations

import atexit
import copy
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.support.backing_cuts import backing_cut
from txgraph.checker import Verdict, check
from txgraph.fuzz.generate import QSD_FAMILIES, Generator, Resources, image_commands
from txgraph.model.graph import BlockGraph
from txgraph.ops.journal import Journal
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction
from txgraph.oracle.canon import canon_text, substitute
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine


def _key(v: Verdict) -> tuple[bool, Any]:
    return v.ok, v.violations


class ComparingSession(Session):
    """A safe-policy Session that also judges each transaction with a copied ``before``."""

    def __init__(self) -> None:
        super().__init__(policy="safe")
        self.compared = 0
        self.mismatches: list[str] = []
        self._copy: BlockGraph | None = None

    @contextmanager
    def transaction(self, *, by_job: bool = False) -> Iterator[Transaction]:
        self._copy = copy.deepcopy(self.graph)
        with super().transaction(by_job=by_job) as tx:
            yield tx

    def _validate(self, tx: Transaction) -> None:
        if tx.touched:
            old = check(self.graph, tx.touched, policy="safe", before=self._copy)
            new = check(self.graph, tx.touched, policy="safe", before=tx.journal)
            self.compared += 1
            if _key(old) != _key(new):
                self.mismatches.append(f"{old.to_dict()} != {new.to_dict()}")
        super()._validate(tx)


_IMAGES: Path | None = None


def _images(workdir: Path) -> None:
    global _IMAGES
    if _IMAGES is None:
        _IMAGES = Path(tempfile.mkdtemp(prefix="txgraph-journal-images-"))
        atexit.register(shutil.rmtree, _IMAGES, True)
        for argv in image_commands():
            subprocess.run(argv, cwd=_IMAGES, check=True, capture_output=True, timeout=60)
    for image in _IMAGES.iterdir():
        shutil.copyfile(image, workdir / image.name)


#: a chain with a user on top, so that dropping a backing link is a data loss S1/S2 see
_SETUP: list[dict[str, Any]] = [
    {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "qcow2",
            "node-name": "n0",
            "file": {"driver": "file", "filename": "{dir}/b1.qcow2", "node-name": "n0f"},
        },
    },
    {"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "n1", "file": "n0"}},
]


@given(st.integers(0, 2**32 - 1))
def test_safe_policy_refuses_exactly_what_the_copy_refused(seed: int) -> None:
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="txgraph-journal-"))
    session = ComparingSession()
    try:
        _images(workdir)
        engine = Engine(CommandContext(session))
        res = Resources()
        # no job actions: their graph changes run on job threads, outside the step compared
        gen = Generator(rng, [f for f in QSD_FAMILIES if f != "jobs"], res)
        plan_compared = 0
        for message in _SETUP:
            assert "return" in engine.execute(substitute(message, str(workdir), {})), message
        valid_before = check(session.graph, None, policy="safe", engine="structural").ok
        assert valid_before
        for _ in range(15):
            res.refresh(session.graph)
            message = backing_cut(rng, res, 0.7) if rng.random() < 0.3 else gen.next()
            if message is None:
                continue
            autos = {canon_text(n, None): n for n in session.graph.nodes if n.startswith("#")}
            snapshot = copy.deepcopy(session.graph)
            step = Journal(session.graph)
            session.outer_journal = step
            try:
                reply = engine.execute(substitute(message, str(workdir), autos))
            finally:
                session.outer_journal = None
            assert reply.get("error", {}).get("class") != "PythonException", reply
            res.note(message, "error" not in reply)
            # the plan-verification path: one journal across the command, whole graph
            if session.graph.nodes:
                old = check(
                    session.graph, None, policy="safe", before=snapshot, engine="structural"
                )
                new = check(session.graph, None, policy="safe", before=step, engine="structural")
                assert _key(old) == _key(new), (message, old.to_dict(), new.to_dict())
                plan_compared += 1
                if valid_before:
                    # verify_plan's regional judgement: only what the command touched
                    for engine_name in ("structural", "z3"):
                        regional = check(
                            session.graph,
                            step.touched,
                            policy="safe",
                            before=step,
                            engine=engine_name,
                        )
                        assert _key(regional) == _key(old), (
                            message,
                            regional.to_dict(),
                            old.to_dict(),
                        )
            valid_before = check(session.graph, None, policy="safe", engine="structural").ok
        assert not session.mismatches, session.mismatches
        assert session.compared + plan_compared > 0
    finally:
        session.close()
        shutil.rmtree(workdir, ignore_errors=True)
