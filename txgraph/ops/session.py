"""A Session: one live block layer — graph, data plane, objects and policy.

This is what a qemu-storage-daemon process is to QEMU: the graph of nodes,
the monitor-owned node list, the QOM objects (throttle groups), the auto-name
counter, the Runtime holding the live driver objects, and the NBD server that
serves the exports (it sits above the data plane and uses only the Runtime's
request interface). Every command runs inside :meth:`Session.transaction`:

1. the command stages model changes and prepare steps (:mod:`txgraph.ops.stage`);
2. the checker validates the staged graph;
3. the whole typed delta goes to ``Runtime.apply`` under one drain;
4. the undo log commits (deferred work runs).

Any failure before step 3 completes aborts: the model is restored and only
prepared driver objects (and image locks) are undone; no live driver object
was touched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from txgraph.checker import Verdict, Violation
from txgraph.checker import check as run_checker
from txgraph.errors import InvariantViolation
from txgraph.events import EventBus
from txgraph.io.nbd.server import NbdServer
from txgraph.io.runtime import CloseNode, OpenNode, ReopenNode, Runtime, SetChild, SetReadOnly
from txgraph.model.graph import BlockGraph
from txgraph.model.names import AutoNamer
from txgraph.model.node import ParentKind
from txgraph.ops.journal import Journal
from txgraph.ops.undo_log import Transaction

__all__ = ["Session", "QomObject", "JOB_BLK_PREFIX"]

#: graph keys of a block job's own BlockBackends start so (``bb:job:<id>:<role>``)
JOB_BLK_PREFIX = "bb:job:"


@dataclass
class QomObject:
    """A user-created QOM object (object-add), e.g. a throttle-group."""

    id: str
    qom_type: str
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chardev:
    """A ``--chardev socket,path=P,server=on`` of the command line (``/chardevs/<id>`` in QOM)."""

    path: str
    #: a ``--monitor`` serves QMP on it
    monitor: bool = False
    #: a client is attached to a chardev no monitor serves (written only by its
    #: :class:`txgraph.qmp.chardev_port.ChardevPort` on the event loop)
    connected: bool = False


class Session:
    """The live state commands operate on."""

    def __init__(
        self,
        *,
        policy: str = "qemu",
        runtime: Runtime | None = None,
        name_seed: int | None = None,
        check: bool = True,
        nbd_server: Any = None,
    ) -> None:
        self.graph = BlockGraph()
        self.runtime = runtime if runtime is not None else Runtime()
        #: the NBD server (nbd-server-start); ``NbdServer`` or a stand-in with its control surface
        self.nbd: Any = nbd_server if nbd_server is not None else NbdServer(self.runtime)
        self.namer = AutoNamer(name_seed)
        self.objects: dict[str, QomObject] = {}
        #: the command line's chardevs by id, in the order given; written only while the
        #: command line runs (before any QMP client is served), read-only afterwards
        self.chardevs: dict[str, Chardev] = {}
        #: block exports by id (block-export-add)
        self.exports: dict[str, Any] = {}
        #: the one event channel (block layer, data plane, jobs); QMP servers subscribe
        self.events = EventBus()
        # Data-plane events (quorum's QUORUM_REPORT_BAD...) enter the same channel.
        self.runtime.event_listeners.append(self.emit_event)
        self.policy = policy
        #: run the invariant checker on every transaction before it commits
        self.check = check
        #: order in which nodes received their names (graph_bdrv_states)
        self._name_seq = 0
        #: fault injection for tests: fail the k-th primitive of the next transaction
        self.fail_next_at: int | None = None
        #: fault injection for tests: fail the k-th prepare step of the next transaction
        self.fail_next_prepare_at: int | None = None
        #: fault injection for tests: transactions to let pass before the armed fault
        #: applies (to reach the n-th transaction of a multi-step path, e.g. a job's end)
        self.fail_skip_transactions = 0
        #: fault injection for tests: the last armed fault was never reached (its
        #: transaction had fewer steps), so iterating tests know when to stop
        self.last_fault_missed = False
        self.last_verdict: Any = None
        #: structured warnings of the last command (surprising reopen resets)
        self.last_warnings: list[dict[str, Any]] = []
        #: primitive steps of the last transaction (fault-injection tests iterate over them)
        self.last_steps = 0
        #: prepare steps of the last transaction
        self.last_prepare_steps = 0
        #: the big lock (QEMU's BQL / main loop): held by every QMP command and by the
        #: code that completes and finalises jobs, so their graph changes never interleave
        self.lock = threading.RLock()
        #: the block jobs (:class:`txgraph.jobs.manager.JobManager`), created on first use
        self.jobs: Any = None
        #: run first by :meth:`close` (jobs are cancelled before their nodes close)
        self.close_hooks: list[Callable[[], None]] = []
        #: a journal that also records every transaction's first values (a plan step's)
        self.outer_journal: Journal | None = None
        #: the current command declared that it changes guest data (a plan step's
        #: ``"intent": "changes-guest-data"``): V1-guest-view does not refuse it. Set and
        #: cleared around one command by the thread holding ``lock`` (x-txgraph-apply-plan)
        self.declared_guest_change = False
        #: when set, every transaction's V1-guest-view findings are appended here (plan dry
        #: runs record them under the ``qemu`` policy instead of refusing); owned by the
        #: verifier around one step, under ``lock`` like the graph
        self.guest_view_sink: list[Violation] | None = None

    def emit_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Send a QMP event to every client (``qapi_event_send_*``)."""
        self.events.emit(name, data)

    def next_name_seq(self) -> int:
        self._name_seq += 1
        return self._name_seq

    @contextmanager
    def transaction(self, *, by_job: bool = False) -> Iterator[Transaction]:
        """Stage changes; commit if the block works and the checker agrees, else undo all.

        ``by_job``: a block job's own graph change (its prepare/commit/abort or its
        release), which keeps the guest view by construction (V1 does not judge it).
        """
        fail_at: int | None = None
        fail_prepare_at: int | None = None
        if self.fail_skip_transactions and (self.fail_next_at or self.fail_next_prepare_at):
            self.fail_skip_transactions -= 1
        else:
            fail_at, self.fail_next_at = self.fail_next_at, None
            fail_prepare_at, self.fail_next_prepare_at = self.fail_next_prepare_at, None
        tx = Transaction(
            self.graph,
            fail_at=fail_at,
            runtime=self.runtime,
            fail_prepare_at=fail_prepare_at,
            outer_journal=self.outer_journal,
        )
        self.graph.thawed = set()
        saved_name_seq = self._name_seq
        try:
            yield tx
            self._validate(tx)
            if not by_job:
                self._guest_view(tx)
            delta = tx.rt.delta(self.graph, tx.edge_parents)
            if delta:
                # One drain for the whole transaction (Runtime.apply rolls itself back);
                # the jobs above the drained nodes pause for it first.
                drained = (
                    self.jobs.drained_begin(self._jobs_above(tx, delta))
                    if self.jobs is not None and self.jobs.jobs
                    else []
                )
                try:
                    self.runtime.apply(delta)
                finally:
                    if drained:
                        self.jobs.drained_end(drained)
            else:
                self._drain_cycle(self._subtree_jobs(tx))
        except BaseException:
            self.last_steps, self.last_prepare_steps = tx.steps, tx.rt.steps
            if fail_at is not None or fail_prepare_at is not None:
                self.last_fault_missed = False
            reached = self._subtree_jobs(tx)
            tx.abort()
            self._name_seq = saved_name_seq
            self._drain_cycle(reached)
            raise
        self.last_steps, self.last_prepare_steps = tx.steps, tx.rt.steps
        if fail_at is not None or fail_prepare_at is not None:
            self.last_fault_missed = True
        tx.commit()
        self.graph.thawed = set()

    def _drained_nodes(self, tx: Transaction, delta: list[Any]) -> set[str]:
        """The nodes the data-plane change drains, as QEMU's graph changes do: both ends
        of every re-pointed edge (and its parent), the children a node gains or loses by
        opening or closing, every reopened node, and each subtree the command drains
        whole (``tx.drained_subtrees``) or alone (``tx.drained_nodes``). Permission-only
        changes drain nothing."""
        graph, rt = self.graph, self.runtime
        out: set[str] = set()
        for op in delta:
            if isinstance(op, SetChild):
                out.add(op.parent)
                if op.child is not None:
                    out.add(op.child)
                old = (rt.children_of(op.parent) or {}).get(op.edge)
                if old is not None:
                    out.add(old)
            elif isinstance(op, (ReopenNode, SetReadOnly)):
                out.add(op.name)
            elif isinstance(op, OpenNode):
                out.update(op.children.values())
            elif isinstance(op, CloseNode):
                out.update((rt.children_of(op.name) or {}).values())
        for root in tx.drained_subtrees:
            if root in graph.nodes:
                out.update(graph.subtree_topological([root]))
        out.update(tx.drained_nodes)
        return {n for n in out if n in graph.nodes}

    def _subtree_jobs(self, tx: Transaction) -> set[str]:
        """The jobs above the subtrees and nodes a command drained before its checks
        (``qmp_blockdev_reopen``'s ``bdrv_subtree_drained_begin``, a transaction action's
        ``bdrv_drained_begin``)."""
        if not (tx.drained_subtrees or tx.drained_nodes) or self.jobs is None or not self.jobs.jobs:
            return set()
        return self._jobs_above(tx, [])

    def drain_all(self) -> None:
        """``bdrv_drain_all``, as ``qmp_transaction`` runs it before any action (so every
        transaction-based command drains, refused or not): every running job pauses and
        resumes (JOB_STATUS_CHANGE pairs; a rate-limited one copies its next chunk at
        once), and the data plane's requests in flight finish, throttled ones released
        without waiting for their budget (``throttle_co_drain_begin``)."""
        jobs = self.jobs
        drained = jobs.drained_begin({j.id for j in jobs.jobs}) if jobs is not None else []
        try:
            self.runtime.drain_all()
        finally:
            if drained and jobs is not None:
                jobs.drained_end(drained)

    def _drain_cycle(self, job_ids: set[str]) -> None:
        """A drained section that changed nothing: the jobs above it still pause and
        resume (QEMU 7.2 drains before it checks, so a refused or no-op reopen wakes a
        rate-limited job from its sleep, and it copies its next chunk at once)."""
        if job_ids and self.jobs is not None:
            self.jobs.drained_end(self.jobs.drained_begin(job_ids))

    def _jobs_above(self, tx: Transaction, delta: list[Any]) -> set[str]:
        """The block jobs a drain of the transaction's nodes reaches.

        A drain travels up through every parent (``bdrv_parent_drained_begin``):
        a job is reached when one of its nodes is a drained node or above one,
        whether it holds the node as a job child or through its own BlockBackend.
        """
        graph = self.graph
        ids: set[str] = set()
        stack = list(self._drained_nodes(tx, delta))
        seen = set(stack)
        while stack:
            for parent, edge in graph.parents(stack.pop()):
                backend = graph.backends.get(parent)
                if backend is not None:
                    if edge.parent_kind is ParentKind.JOB:
                        ids.add(backend.name)
                    elif parent.startswith(JOB_BLK_PREFIX):
                        ids.add(parent[len(JOB_BLK_PREFIX) :].rsplit(":", 1)[0])
                elif parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return ids

    def _validate(self, tx: Transaction) -> None:
        if not self.check or not tx.touched:
            return
        # The safe policy's data-loss rules compare with the graph before the change;
        # the transaction's journal answers that in O(change), without a copy.
        before = tx.journal if self.policy == "safe" else None
        verdict = run_checker(self.graph, tx.touched, policy=self.policy, before=before)
        self.last_verdict = verdict
        if not verdict.ok:
            first = verdict.violations[0]
            raise InvariantViolation(
                first.sentence,
                rule=first.rule,
                subjects=tuple(first.nodes),
                explanation=verdict.to_dict(),
            )

    def _guest_view(self, tx: Transaction) -> None:
        """V1-guest-view under ``safe`` (before ``Runtime.apply``: live objects are the old graph)."""
        enforce = self.check and self.policy == "safe" and not self.declared_guest_change
        if not tx.touched or (not enforce and self.guest_view_sink is None):
            return
        from txgraph.ops.guest_view import guest_view_violations

        found = guest_view_violations(self, tx.journal)
        if self.guest_view_sink is not None:
            self.guest_view_sink.extend(found)
        if enforce and found:
            verdict = Verdict(False, tuple(found), "guest-view", 0.0)
            self.last_verdict = verdict
            raise InvariantViolation(
                found[0].sentence,
                rule=found[0].rule,
                subjects=tuple(found[0].nodes),
                explanation=verdict.to_dict(),
            )

    def close(self) -> None:
        hooks, self.close_hooks = self.close_hooks, []
        for hook in hooks:
            hook()
        if self.nbd.running:
            self.nbd.stop()
        self.runtime.close_all()
        for obj in self.objects.values():  # objects holding host resources (pr-manager sockets)
            release = getattr(obj, "close", None)
            if release is not None:
                release()
