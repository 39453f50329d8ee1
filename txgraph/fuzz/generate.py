"""Generation of QMP command sequences that build real graphs, in the style of syzkaller.

Every step draws its *resources* — node names, images, throttle groups,
exports — from what earlier steps produced (:class:`Resources`, updated from
txgraph's graph after each step), so sequences get past step one and reach
deep states: qcow2 chains on real images, filters above them, snapshots,
quorums, exports. Stale names stay in the pool on purpose: commands on deleted
nodes must fail alike on both sides. Option values come from the vocabulary of
QSD 7.2's schema for each command (enums, booleans, references).

Operation families (``--ops``) group the generators; ``qsd`` campaigns use only
commands qemu-storage-daemon 7.2 has, ``model`` campaigns add txgraph's ``x-``
extensions. Generation is a pure function of the random generator's state and
the resources, so a campaign with the same seed generates the same sequences.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from txgraph.fuzz.guest import GUEST_IO, draw_commands
from txgraph.fuzz.jobs import JOB_ACTIONS
from txgraph.model.graph import BlockGraph

__all__ = ["IMAGES", "FAMILIES", "QSD_FAMILIES", "Resources", "Generator", "image_commands"]

#: the images every sequence starts with: ``(file, qemu-img create arguments)``;
#: ``b1`` names ``b0`` as its backing file in its header
IMAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("b0.qcow2", ("-f", "qcow2", "b0.qcow2", "1M")),
    ("b1.qcow2", ("-f", "qcow2", "-b", "b0.qcow2", "-F", "qcow2", "b1.qcow2", "1M")),
    ("i0.qcow2", ("-f", "qcow2", "i0.qcow2", "1M")),
    ("i1.qcow2", ("-f", "qcow2", "i1.qcow2", "2M")),
    ("o0.qcow2", ("-f", "qcow2", "o0.qcow2", "1M")),
    ("o1.qcow2", ("-f", "qcow2", "o1.qcow2", "1M")),
    ("r0.raw", ("-f", "raw", "r0.raw", "1M")),
)
_IMAGE_FILES = [name for name, _ in IMAGES]
_NAMES = [f"n{i}" for i in range(8)]
_GROUPS = ["g0", "g1"]
_EXPORTS = ["e0", "e1"]
_SYNC_FILES = ["s0.qcow2", "s1.qcow2", "nodir/s.qcow2"]
_AUTO = re.compile(r"#block(\d+)(\d\d)")


#: data written into the images after they are made: ``(file, qemu-io command)``; jobs
#: have something to copy (a job at speed 1 then sleeps after its first chunk, as QEMU's
#: rate limit only counts bytes copied), guests something to read
IMAGE_DATA: tuple[tuple[str, str], ...] = (
    ("b0.qcow2", "write -P 0x11 0 512k"),
    ("b1.qcow2", "write -P 0x22 256k 128k"),
    ("i0.qcow2", "write -P 0x33 0 256k"),
)


def image_commands() -> list[list[str]]:
    """The ``qemu-img`` and ``qemu-io`` command lines that make :data:`IMAGES` (with
    :data:`IMAGE_DATA`) in a working directory."""
    made = [["qemu-img", "create", "-q", *args] for _name, args in IMAGES]
    return made + [["qemu-io", "-f", "qcow2", "-c", c, f] for f, c in IMAGE_DATA]


@dataclass
class Resources:
    """What a next step can refer to; refreshed from txgraph's graph after every step.

    Owned by the one sequence being generated (no sharing between threads).
    """

    #: every node name ever used (live or stale)
    names: list[str] = field(default_factory=list)
    #: live nodes: name -> (driver, {child name: child node})
    live: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    #: nodes without parents (what a quorum or an export may take)
    parentless: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    nbd_running: bool = False
    #: export id -> the node it exports (a node in use by a BlockBackend)
    exported: dict[str, str] = field(default_factory=dict)
    #: live throttle node -> its throttle group (a group in use)
    throttled: dict[str, str] = field(default_factory=dict)
    #: live nodes whose detect-zeroes is not off (a reopen that leaves it out resets it)
    detecting: list[str] = field(default_factory=list)
    #: the rest of a resource's life cycle an earlier step began (syzkaller's resource
    #: style: a throttle group made, then referenced by a throttle node, then deleted);
    #: each is drawn in turn, with the resources as they are when its turn comes
    pending: list[Action] = field(default_factory=list)
    #: the ids of the jobs that exist (taken from txgraph's job manager after every step)
    jobs: list[str] = field(default_factory=list)

    def refresh(self, graph: BlockGraph) -> None:
        """Take the live part from ``graph`` (user-named nodes only: auto names are random)."""
        self.live, self.throttled, self.detecting = {}, {}, []
        for name, node in graph.nodes.items():
            if name.startswith("#"):
                continue
            if node.driver == "throttle":
                self.throttled[name] = str(node.options.get("throttle-group"))
            if node.detect_zeroes != "off":
                self.detecting.append(name)
            # auto-named children as placeholders: each peer resolves its own random suffix
            kids = {
                edge.name: (
                    "{" + _AUTO.sub(r"#block\1", child) + "}" if child.startswith("#") else child
                )
                for child, edge in graph.children(name)
            }
            self.live[name] = (node.driver, kids)
            if name not in self.names:
                self.names.append(name)
        self.parentless = sorted(n for n in self.live if not graph.parents(n))

    def note(self, message: dict[str, Any], accepted: bool) -> None:
        """Follow the resources the graph does not hold (QOM objects, the NBD server, exports)."""
        if not accepted:
            return
        name, args = message.get("execute"), message.get("arguments", {})
        if name == "object-add" and args["id"] not in self.groups:
            self.groups.append(args["id"])
        elif name == "object-del" and args["id"] in self.groups:
            self.groups.remove(args["id"])
        elif name == "nbd-server-start":
            self.nbd_running = True
        elif name == "nbd-server-stop":
            self.nbd_running, self.exports, self.exported = False, [], {}
        elif name == "block-export-add":
            self.exports.append(args["id"])
            self.exported[args["id"]] = args["node-name"]
        elif name == "block-export-del" and args["id"] in self.exports:
            self.exports.remove(args["id"])
            self.exported.pop(args["id"], None)


Action = Callable[["Generator"], dict[str, Any] | None]


def _cmd(execute: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        msg["arguments"] = arguments
    return msg


def _file(image: str) -> dict[str, Any]:
    return {"driver": "file", "filename": "{dir}/" + image}


class Generator:
    """Draws the next command of a sequence from ``rng`` and the current resources."""

    def __init__(self, rng: random.Random, families: list[str], res: Resources) -> None:
        self.rng = rng
        self.res = res
        self.families = [FAMILIES[f] for f in families]
        self.weights = [FAMILY_WEIGHTS[f] for f in families]
        #: txgraph's extensions may be drawn (a model campaign)
        self.extensions = "x" in families

    # -- drawing helpers -----------------------------------------------------------------
    def pick(self, pool: list[str], fallback: str = "nosuch") -> str:
        return self.rng.choice(pool) if pool else fallback

    def node(self) -> str:
        """A node name: usually live, sometimes stale or unknown."""
        r = self.rng.random()
        if r < 0.8 and self.res.live:
            return self.pick(sorted(self.res.live))
        if r < 0.95 and self.res.names:
            return self.pick(self.res.names)
        return self.rng.choice(["nosuch", "", "1bad"])

    def new_name(self) -> str:
        """A name for a new node: usually a fresh or reused valid one, rarely an invalid one."""
        if self.rng.random() < 0.03:
            return self.rng.choice(["1bad", "", "n#", "-x"])
        return self.rng.choice(_NAMES)

    def common(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.rng.random() < 0.3:
            opts["read-only"] = self.rng.random() < 0.5
        if self.rng.random() < 0.2:
            opts["cache"] = {"direct": self.rng.random() < 0.5}
        if self.rng.random() < 0.2:
            opts["detect-zeroes"] = self.rng.choice(["off", "on", "unmap"])
        if self.rng.random() < 0.2:
            opts["discard"] = self.rng.choice(["unmap", "ignore"])
        return opts

    def child_ref(self) -> Any:
        """A child given by reference (mostly, with nodes around: sharing an existing node
        is what builds graphs instead of trees), inline, or inline with a name."""
        r = self.rng.random()
        if r < 0.6 and self.res.live:
            return self.node()
        inline = _file(self.rng.choice(_IMAGE_FILES))
        if r < 0.85:
            inline["node-name"] = self.new_name() + "f"
        return inline

    def next(self) -> dict[str, Any]:
        """The next command (retries until an action applies to the current resources).

        A life cycle an earlier step began goes on first, most of the time (other steps
        may come between its stages)."""
        while self.res.pending and self.rng.random() < 0.8:
            msg = self.res.pending.pop(0)(self)
            if msg is not None:
                return msg
        for _ in range(20):
            # a family by weight, then one of its actions: a family with few actions
            # (objects, exports, del) is drawn as often as its weight says
            family = self.rng.choices(self.families, self.weights)[0]
            msg = self.rng.choice(family)(self)
            if msg is not None:
                return msg
        return _cmd("query-named-block-nodes", {"flat": True})


# -- blockdev-add ---------------------------------------------------------------------------
def add_null(g: Generator) -> dict[str, Any]:
    args: dict[str, Any] = {
        "driver": g.rng.choice(["null-co", "null-aio"]),
        "node-name": g.new_name(),
        **g.common(),
    }
    if g.rng.random() < 0.3:
        args["size"] = g.rng.choice([0, 512, 1 << 20, 1 << 30])
    # with read-zeroes=off QEMU's reads return whatever the buffer held (uninitialised
    # memory): a copy-on-read from it writes data or zeroes at random, no oracle
    args["read-zeroes"] = True
    return _cmd("blockdev-add", args)


def add_file(g: Generator) -> dict[str, Any]:
    return _cmd(
        "blockdev-add",
        {
            **_file(g.rng.choice([*_IMAGE_FILES, "missing.img"])),
            "node-name": g.new_name(),
            **g.common(),
        },
    )


def add_qcow2(g: Generator) -> dict[str, Any]:
    args: dict[str, Any] = {
        "driver": "qcow2",
        "node-name": g.new_name(),
        **g.common(),
        "file": g.child_ref(),
    }
    r = g.rng.random()
    if r < 0.3:
        args["backing"] = None
    elif r < 0.55:
        args["backing"] = g.node()
    return _cmd("blockdev-add", args)


def add_raw(g: Generator) -> dict[str, Any]:
    args: dict[str, Any] = {
        "driver": "raw",
        "node-name": g.new_name(),
        **g.common(),
        "file": g.child_ref(),
    }
    if g.rng.random() < 0.15:
        args["offset"] = g.rng.choice([0, 512, 4096])
    return _cmd("blockdev-add", args)


def add_filter(g: Generator) -> dict[str, Any] | None:
    if not g.res.live:
        return None
    # with a throttle group around, mostly throttle: groups in use are what object-del tests
    driver = (
        "throttle"
        if g.res.groups and g.rng.random() < 0.7
        else g.rng.choice(["throttle", "copy-on-read"])
    )
    args: dict[str, Any] = {"driver": driver, "node-name": g.new_name(), "file": g.node()}
    if driver == "throttle":
        args["throttle-group"] = g.pick(g.res.groups, "g0")
    return _cmd("blockdev-add", args)


def add_quorum(g: Generator) -> dict[str, Any] | None:
    if len(g.res.parentless) < 2:
        return None
    k = min(len(g.res.parentless), g.rng.choice([2, 3]))
    kids = g.rng.sample(g.res.parentless, k)
    if g.rng.random() < 0.2:
        kids[g.rng.randrange(k)] = g.node()  # a child in use, stale or unknown
    args: dict[str, Any] = {
        "driver": "quorum",
        "node-name": g.new_name(),
        "children": kids,
        "vote-threshold": g.rng.choice([1, k, k, k + 1, k + 1, 0]),
    }
    # the other members of BlockdevOptionsQuorum, from the schema's vocabulary
    if g.rng.random() < 0.2:
        args["read-pattern"] = g.rng.choice(["quorum", "fifo"])
    if g.rng.random() < 0.1:
        args["blkverify"] = g.rng.random() < 0.5
    if g.rng.random() < 0.1:
        args["rewrite-corrupted"] = g.rng.random() < 0.5
    return _cmd("blockdev-add", args)


def delete(g: Generator) -> dict[str, Any]:
    r = g.rng.random()
    if r < 0.25 and g.res.exported:
        name = g.pick(sorted(set(g.res.exported.values())))  # in use by an export
    elif r < 0.4 and g.res.live:
        # a node with parents: in use by another node
        used = sorted(
            {k for _d, kids in g.res.live.values() for k in kids.values() if k in g.res.live}
        )
        name = g.pick(used) if used else g.node()
    else:
        name = g.node()
    return _cmd("blockdev-del", {"node-name": name})


# -- reopen ---------------------------------------------------------------------------------
#: drivers whose ``file`` child a reopen may re-point
_REPOINTABLE = ("raw", "qcow2", "throttle", "copy-on-read")


def reopen(g: Generator) -> dict[str, Any] | None:
    if not g.res.live:
        return None
    detecting = [n for n in g.res.detecting if g.res.live[n][0] != "file"]
    parents = sorted(n for n, (drv, _k) in g.res.live.items() if drv in _REPOINTABLE)
    r = g.rng.random()
    if detecting and r < 0.25:
        name = g.pick(detecting)  # the reset rule: options left out go back to defaults
    elif parents and r < 0.75:
        name = g.pick(parents)  # a node whose children a reopen can change
    else:
        name = g.pick(sorted(g.res.live))
    driver, kids = g.res.live[name]
    entry: dict[str, Any] = {"driver": driver, "node-name": name, **g.common()}
    for child, target in sorted(kids.items()):
        if child in ("file", "backing"):
            entry[child] = target
    if driver == "qcow2" and g.rng.random() < 0.45:
        entry["backing"] = None if g.rng.random() < 0.25 else _target(g, name)
    if driver in _REPOINTABLE and g.rng.random() < 0.45:
        entry["file"] = _target(g, name)
    if driver == "throttle" and "file" in entry:
        entry["throttle-group"] = g.pick(g.res.groups, "g0")
    if driver in ("file",):
        return None  # a file entry needs its filename; covered by add/del churn
    return _cmd("blockdev-reopen", {"options": [entry]})


def _below(res: Resources, name: str) -> list[str]:
    """The live user-named nodes below ``name`` (its children, theirs, and so on)."""
    seen: list[str] = []
    todo = [name]
    while todo:
        for kid in res.live.get(todo.pop(), ("", {}))[1].values():
            if kid in res.live and kid not in seen and kid != name:
                seen.append(kid)
                todo.append(kid)
    return sorted(seen)


def _target(g: Generator, name: str) -> str:
    """What a reopen re-points a child of ``name`` at: a node already below it (a chain
    shortened, as commit and stream leave it), a node that already has a parent (a
    shared child: one node under two edges), or any node."""
    below = _below(g.res, name)
    r = g.rng.random()
    if below and r < 0.4:
        return g.pick(below)
    shared = sorted(
        {k for n, (_d, kids) in g.res.live.items() if n != name for k in kids.values()}
        & set(g.res.live)
    )
    if shared and r < 0.7:
        return g.pick(shared)
    return g.node()


# -- snapshots, quorum children, transactions -------------------------------------------------
def snapshot(g: Generator) -> dict[str, Any] | None:
    overlays = [
        n
        for n, (drv, kids) in g.res.live.items()
        if drv == "qcow2" and ("backing" not in kids or g.rng.random() < 0.2)
    ]
    if g.rng.random() < 0.1:
        overlays += sorted(g.res.live)  # any node: the refusals are behaviour too
    if not overlays or not g.res.live:
        return None
    return _cmd("blockdev-snapshot", {"node": g.node(), "overlay": g.pick(sorted(overlays))})


def snapshot_sync(g: Generator) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node-name": g.node(),
        "snapshot-file": "{dir}/" + g.rng.choice(_SYNC_FILES),
        "snapshot-node-name": g.new_name(),
        "format": "qcow2",
    }
    if g.rng.random() < 0.2:
        data["mode"] = g.rng.choice(["existing", "absolute-paths"])
    return _cmd("blockdev-snapshot-sync", data)


def quorum_change(g: Generator) -> dict[str, Any] | None:
    quorums = [n for n, (drv, _k) in g.res.live.items() if drv == "quorum"]
    if not quorums:
        return None
    q = g.pick(sorted(quorums))
    if g.rng.random() < 0.5:
        return _cmd("x-blockdev-change", {"parent": q, "node": g.pick(g.res.parentless)})
    kids = sorted(g.res.live[q][1])
    return _cmd("x-blockdev-change", {"parent": q, "child": g.pick(kids, "children.9")})


def transaction(g: Generator) -> dict[str, Any]:
    actions: list[dict[str, Any]] = []
    for _ in range(g.rng.choice([1, 2])):
        if g.rng.random() < 0.2:
            actions.append({"type": "abort", "data": {}})
        else:
            actions.append(
                {"type": "blockdev-snapshot-sync", "data": snapshot_sync(g)["arguments"]}
            )
    return _cmd("transaction", {"actions": actions})


# -- objects and exports ----------------------------------------------------------------------
def _use_group(group: str) -> Action:
    """A throttle node on ``group`` (over a fresh null node, so nothing else decides whether
    it opens), then the group's deletion while the node uses it."""

    def use(g: Generator) -> dict[str, Any] | None:
        if group not in g.res.groups:
            return None  # the group did not come to be: the life cycle ends
        g.res.pending.insert(0, _del_group(group))
        base: Any = (
            g.node()
            if g.res.live and g.rng.random() < 0.3
            else {"driver": "null-co", "read-zeroes": True}  # no uninitialised reads
        )
        return _cmd(
            "blockdev-add",
            {
                "driver": "throttle",
                "node-name": g.new_name(),
                "file": base,
                "throttle-group": group,
            },
        )

    return use


def _del_group(group: str) -> Action:
    def delete_group(g: Generator) -> dict[str, Any] | None:
        if group not in g.res.groups:
            return None
        return _cmd("object-del", {"id": group})

    return delete_group


def objects(g: Generator) -> dict[str, Any]:
    if g.rng.random() < 0.6:
        group = g.rng.choice(_GROUPS)
        # limits a guest's few kilobytes get through in well under a second: a throttle at
        # 100 bytes/s would hold one 64k write for ten minutes, on both sides alike
        key = g.rng.choice(["iops-total", "bps-total", "iops-read"])
        value = g.rng.choice([0, 1 << 22, 1 << 24] if key == "bps-total" else [0, 100, 1000])
        limits = {key: value}
        if group not in g.res.groups and g.rng.random() < 0.6:
            # a life cycle: made, used by a throttle node, deleted while in use
            g.res.pending.append(_use_group(group))
        return _cmd("object-add", {"qom-type": "throttle-group", "id": group, "limits": limits})
    if g.res.throttled and g.rng.random() < 0.6:
        return _cmd("object-del", {"id": g.pick(sorted(set(g.res.throttled.values())))})
    return _cmd("object-del", {"id": g.rng.choice(_GROUPS)})


def exports(g: Generator) -> dict[str, Any]:
    r = g.rng.random()
    if not g.res.nbd_running or r < 0.1:
        return _cmd(
            "nbd-server-start", {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}}
        )
    if r < 0.65:
        return _cmd(
            "block-export-add",
            {
                "type": "nbd",
                "id": g.rng.choice(_EXPORTS),
                "node-name": g.node(),
                "writable": g.rng.random() < 0.5,
            },
        )
    if r < 0.95:
        return _cmd("block-export-del", {"id": g.rng.choice(_EXPORTS)})
    return _cmd("nbd-server-stop")


def guest_io(g: Generator) -> dict[str, Any] | None:
    """Reads and writes through an export (:mod:`txgraph.fuzz.guest`)."""
    if not g.res.nbd_running or not g.res.exported:
        return None
    # the NBD export name is the node name (block-export-add without "name")
    return _cmd(
        GUEST_IO,
        {"export": g.pick(sorted(set(g.res.exported.values()))), "commands": draw_commands(g.rng)},
    )


# -- txgraph's extensions (model campaigns only) ----------------------------------------------
def x_filters(g: Generator) -> dict[str, Any] | None:
    if not g.res.live:
        return None
    if g.rng.random() < 0.6:
        return _cmd(
            "x-txgraph-insert-filter",
            {
                "node": g.node(),
                "filter": {"driver": "copy-on-read", "node-name": g.new_name() + "c"},
            },
        )
    filters = [n for n, (drv, _k) in g.res.live.items() if drv in ("copy-on-read", "throttle")]
    return _cmd("x-txgraph-remove-filter", {"node": g.pick(sorted(filters))})


FAMILIES: dict[str, list[Action]] = {
    "add": [add_null, add_file, add_qcow2, add_qcow2, add_raw, add_filter, add_quorum],
    "del": [delete],
    "reopen": [reopen, reopen],
    "snapshot": [snapshot, snapshot_sync, transaction],
    "quorum": [quorum_change, add_quorum],
    "objects": [objects],
    "exports": [exports],
    "guest": [guest_io],
    "jobs": JOB_ACTIONS,
    "x": [x_filters],
}

#: how often each family is drawn (relative): adds build the graphs the others work on
FAMILY_WEIGHTS: dict[str, float] = {
    "add": 6,
    "del": 1.5,
    "reopen": 3.5,
    "snapshot": 2,
    "quorum": 1,
    "objects": 1.5,
    "exports": 1.5,
    "guest": 1.5,
    "jobs": 1.5,
    "x": 1,
}

#: the families qemu-storage-daemon 7.2 can run
QSD_FAMILIES = [f for f in FAMILIES if f != "x"]
