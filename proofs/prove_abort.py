"""Theorem (bounded, exhaustive — no z3): abort restores the pre-state, and the journal
reads the pre-state while the transaction is open.

For every graph of :mod:`proofs._graphspace` (up to 3 block nodes and one
BlockBackend) and every transaction of up to two primitives of the space, each
followed by the permission refresh the engine runs (``compute_refresh``, recorded
through ``Transaction.set_edge_perm`` as :func:`txgraph.ops.perm_apply.refresh_perms`
does), on the real :class:`txgraph.ops.undo_log.Transaction`:

1. while the transaction is open, its :class:`~txgraph.ops.journal.Journal` answers
   every question the checker asks of the pre-state (``had_node`` for every name,
   ``child_before`` for every link slot, ``frozen_links``) exactly as the pre-graph
   itself does (:class:`txgraph.checker.before.GraphBefore`);
2. after ``abort`` the graph's :meth:`~txgraph.model.graph.BlockGraph.state` — every
   node, backend, edge with its perm/shared/frozen/sequence numbers, and the sequence
   counter — equals the pre-state's, so its digest is byte-identical;
3. the same holds when the fault counter (``fail_at``) stops the transaction before
   its k-th primitive, for every k.

This is a proof by exhaustion over the real undo log, not an SMT proof: the
property is about Python objects (the inverses), which z3 cannot see. Breaking it:
:func:`counterexamples` takes the transaction class; a variant whose ``retarget``
forgets its inverse is caught.
"""

from __future__ import annotations

from collections.abc import Iterator

from proofs._graphspace import Delta, clone, deltas, graphs
from txgraph.checker.before import GraphBefore
from txgraph.model.graph import BlockGraph
from txgraph.model.perm_refresh import compute_refresh
from txgraph.ops.stage import InjectedFault
from txgraph.ops.undo_log import Transaction

MAX_PRIMITIVES = 2
#: two-primitive transactions on graphs of at most this many nodes (three-node graphs
#: get every one-primitive transaction)
PAIRS_UP_TO = 2


def _run(tx: Transaction, delta: Delta) -> None:
    delta.apply(tx)
    for ch in compute_refresh(tx.graph, list(tx.graph.nodes), collect=[]):
        tx.set_edge_perm(ch.parent, ch.name, ch.perm, ch.shared)


def _sequences(g: BlockGraph) -> Iterator[list[Delta]]:
    for d in deltas(g):
        yield [d]
    if len(g.nodes) > PAIRS_UP_TO:
        return
    for d in deltas(g):
        tx = Transaction(g)
        _run(tx, d)
        seconds = list(deltas(g))
        tx.abort()
        for d2 in seconds:
            yield [d, d2]


def _journal_mismatch(pre: BlockGraph, tx: Transaction) -> str | None:
    want = GraphBefore(pre)
    names = set(pre.nodes) | set(tx.graph.nodes)
    for n in sorted(names):
        if tx.journal.had_node(n) != want.had_node(n):
            return f"had_node({n})"
    slots = {(p, k) for p, _c, k in pre.g.edges(keys=True)}
    slots |= {(p, k) for p, _c, k in tx.graph.g.edges(keys=True)}
    for p, k in sorted(slots):
        if tx.journal.child_before(p, k) != want.child_before(p, k):
            return f"child_before({p}, {k})"
    if sorted(tx.journal.frozen_links()) != sorted(want.frozen_links()):
        return "frozen_links"
    return None


def counterexamples(tx_class: type[Transaction] = Transaction, limit: int = 1) -> list[str]:
    found: list[str] = []
    for g in graphs():
        pre = clone(g)
        state = g.state()
        for seq in _sequences(g):
            label = " ; ".join(d.label for d in seq)
            # 2 and 1: run every primitive (and refresh), check the journal, abort
            for fail_at in (None, *range(1, 2 * len(seq) + 1)):
                tx = tx_class(g, fail_at=fail_at)
                try:
                    for d in seq:
                        _run(tx, d)
                except InjectedFault:
                    pass
                else:
                    bad = _journal_mismatch(pre, tx)
                    if bad is not None:
                        found.append(f"{sorted(pre.nodes)} [{label}]: journal {bad}")
                try:
                    tx.abort()
                except AssertionError as err:  # an inverse met a graph it did not expect
                    found.append(f"{sorted(pre.nodes)} [{label}] fail_at={fail_at}: abort {err}")
                    return found
                if g.state() != state:
                    found.append(f"{sorted(pre.nodes)} [{label}] fail_at={fail_at}: state")
                    g = clone(pre)  # go on from a clean copy
                if len(found) >= limit:
                    return found
    return found


class _ForgetfulRetarget(Transaction):
    """A broken undo log: ``retarget`` drops its inverse."""

    def retarget(self, parent: str, name: str, new_child: str) -> str:
        old = super().retarget(parent, name, new_child)
        self._undo.pop()
        return old


def test_abort_restores_the_pre_state() -> None:
    assert counterexamples() == []


def test_a_forgotten_inverse_is_caught() -> None:
    found = counterexamples(_ForgetfulRetarget)
    assert found and "retarget" in found[0], found
