"""Random command sequences on qemu-storage-daemon 7.2 and txgraph, compared after every step.

A hypothesis state machine draws blockdev-add (null-co/aio, file over pre-made images, qcow2
over inline or referenced files, raw, throttle, quorum, references to existing nodes, and
deliberately invalid requests), blockdev-del and throttle-group object-add/object-del. The
names come from a small pool so that duplicates, dangling references and "in use" cases are
frequent. There is no model of the expected outcome: each command goes to a long-lived QSD
and a long-lived txgraph Engine (one pair per example), and the canonical reply and state
(see :mod:`tests.differential.harness`) must be identical after every step.

Runs under the active hypothesis profile (``ci`` in ``make test``); nothing here raises it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from tests.differential.harness import (
    EnginePeer,
    Peer,
    QSDPeer,
    SetupAction,
    _run_setup,
    cmd,
    lockstep,
)
from tests.differential.scenarios._common import qcow2_img, raw_img

pytestmark = pytest.mark.qsd

NAMES = [f"n{i}" for i in range(6)]
GROUPS = ["g0", "g1"]
RAW_IMAGES = ["r0.raw", "r1.raw"]
QCOW2_IMAGES = ["q0.qcow2", "q1.qcow2", "t.qcow2"]

SETUP: list[SetupAction] = [
    raw_img("r0.raw", "1M"),
    raw_img("r1.raw", "1M"),
    qcow2_img("q0.qcow2", "1M"),
    qcow2_img("q1.qcow2", "1M"),
    qcow2_img("t.qcow2", "1M", backing="q0.qcow2"),
]

names = st.sampled_from(NAMES)
maybe_bad_names = st.one_of(names, st.sampled_from(["", "1bad", "#block0", "x" * 32, "y" * 31]))


def _file(image: str, name: str | None) -> dict[str, Any]:
    d: dict[str, Any] = {"driver": "file", "filename": "{dir}/" + image}
    if name is not None:
        d["node-name"] = name
    return d


common_opts = st.fixed_dictionaries(
    {},
    optional={
        "read-only": st.booleans(),
        "cache": st.fixed_dictionaries(
            {}, optional={"direct": st.booleans(), "no-flush": st.booleans()}
        ),
        "force-share": st.booleans(),
        "detect-zeroes": st.sampled_from(["off", "on", "unmap"]),
        "discard": st.sampled_from(["ignore", "unmap"]),
    },
)

child_name = st.one_of(st.none(), names)
file_child = st.one_of(
    st.builds(_file, st.sampled_from(RAW_IMAGES + QCOW2_IMAGES), child_name),
    names,  # a reference to an existing (or missing) node
)


class DifferentialMachine(RuleBasedStateMachine):
    """Each rule sends one command to both peers and compares reply and state."""

    #: the peer compared against QSD (the self-check machine uses a second QSD)
    RIGHT: Any = EnginePeer

    def __init__(self) -> None:
        super().__init__()
        self.dirs: list[Path] = []
        self.peers: list[Peer] = []
        self.history: list[str] = []
        self.autos: list[dict[str, str]] = [{}, {}]

    @initialize()
    def start(self) -> None:
        for factory in (QSDPeer, self.RIGHT):
            d = Path(tempfile.mkdtemp(prefix="txd-rand-"))
            _run_setup(SETUP, d)
            self.dirs.append(d)
            self.peers.append(factory(d))

    def teardown(self) -> None:
        for p in self.peers:
            p.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    # -- the one step ---------------------------------------------------------------------
    def _step(self, message: dict[str, Any]) -> None:
        _records, diff = lockstep(
            self.peers, [str(d) for d in self.dirs], self.autos, self.history, message
        )
        if diff:
            hist = "\n".join(f"  {i}: {h}" for i, h in enumerate(self.history))
            raise AssertionError(
                "QSD (left) and txgraph (right) differ after the last step:\n"
                + "\n".join(f"    {ln}" for ln in diff)
                + "\nsequence:\n"
                + hist
            )

    # -- rules ----------------------------------------------------------------------------
    @rule(
        name=maybe_bad_names,
        drv=st.sampled_from(["null-co", "null-aio"]),
        size=st.one_of(st.none(), st.sampled_from([0, 512, 1048576])),
        opts=common_opts,
    )
    def add_null(self, name: str, drv: str, size: int | None, opts: dict[str, Any]) -> None:
        args: dict[str, Any] = {"driver": drv, "node-name": name, **opts}
        if size is not None:
            args["size"] = size
        self._step(cmd("blockdev-add", args))

    @rule(name=names, image=st.sampled_from(RAW_IMAGES + QCOW2_IMAGES), opts=common_opts)
    def add_file(self, name: str, image: str, opts: dict[str, Any]) -> None:
        self._step(cmd("blockdev-add", {**_file(image, name), **opts}))

    @rule(
        name=names,
        file=file_child,
        opts=common_opts,
        backing=st.sampled_from(["absent", "null", "ref"]),
        bref=names,
    )
    def add_qcow2(
        self, name: str, file: Any, opts: dict[str, Any], backing: str, bref: str
    ) -> None:
        args: dict[str, Any] = {"driver": "qcow2", "node-name": name, "file": file, **opts}
        if backing == "null":
            args["backing"] = None
        elif backing == "ref":
            args["backing"] = bref
        self._step(cmd("blockdev-add", args))

    @rule(
        name=names,
        file=st.one_of(file_child, st.builds(lambda: {"driver": "null-co"})),
        opts=common_opts,
        offset=st.one_of(st.none(), st.sampled_from([0, 512, 4096])),
    )
    def add_raw(self, name: str, file: Any, opts: dict[str, Any], offset: int | None) -> None:
        args: dict[str, Any] = {"driver": "raw", "node-name": name, "file": file, **opts}
        if offset is not None:
            args["offset"] = offset
        self._step(cmd("blockdev-add", args))

    @rule(name=names, group=st.sampled_from(GROUPS), child=names, opts=common_opts)
    def add_throttle(self, name: str, group: str, child: str, opts: dict[str, Any]) -> None:
        self._step(
            cmd(
                "blockdev-add",
                {
                    "driver": "throttle",
                    "node-name": name,
                    "throttle-group": group,
                    "file": child,
                    **opts,
                },
            )
        )

    @rule(
        name=names,
        children=st.lists(
            st.one_of(names, st.builds(lambda: {"driver": "null-co", "size": 1048576})),
            min_size=1,
            max_size=3,
        ),
        threshold=st.integers(1, 3),
    )
    def add_quorum(self, name: str, children: list[Any], threshold: int) -> None:
        self._step(
            cmd(
                "blockdev-add",
                {
                    "driver": "quorum",
                    "node-name": name,
                    "vote-threshold": threshold,
                    "children": children,
                },
            )
        )

    @rule(
        name=names,
        bad=st.sampled_from(
            [
                "unknown-driver",
                "unknown-member",
                "wrong-type",
                "missing-file",
                "not-qcow2",
                "no-name",
            ]
        ),
    )
    def add_invalid(self, name: str, bad: str) -> None:
        args: dict[str, Any] = {
            "unknown-driver": {"driver": "nosuch", "node-name": name},
            "unknown-member": {"driver": "null-co", "node-name": name, "bogus": 1},
            "wrong-type": {"driver": "null-co", "node-name": name, "read-only": "yes"},
            "missing-file": {"driver": "raw", "node-name": name, "file": _file("nothere", None)},
            "not-qcow2": {"driver": "qcow2", "node-name": name, "file": _file("r0.raw", None)},
            "no-name": {"driver": "raw", "file": {"driver": "null-co", "node-name": name}},
        }[bad]
        self._step(cmd("blockdev-add", args))

    @rule(name=st.one_of(names, st.just("{#block0}"), st.just("{#block1}")))
    def delete(self, name: str) -> None:
        self._step(cmd("blockdev-del", {"node-name": name}))

    @rule(gid=st.sampled_from(GROUPS), iops=st.sampled_from([0, 100, -1]))
    def object_add(self, gid: str, iops: int) -> None:
        self._step(
            cmd(
                "object-add",
                {"qom-type": "throttle-group", "id": gid, "limits": {"iops-total": iops}},
            )
        )

    @rule(gid=st.sampled_from([*GROUPS, "nothere"]))
    def object_del(self, gid: str) -> None:
        self._step(cmd("object-del", {"id": gid}))


TestDifferentialSequences = DifferentialMachine.TestCase


class SelfCheckMachine(DifferentialMachine):
    """QSD against QSD: proves the random steps are canonicalised without false alarms."""

    RIGHT = QSDPeer


TestRandomSelfCheck = SelfCheckMachine.TestCase
TestRandomSelfCheck.settings = settings(
    TestRandomSelfCheck.settings, max_examples=min(5, TestRandomSelfCheck.settings.max_examples)
)
