"""The reopen queue: which nodes a blockdev-reopen touches and with which options.

Reproduces ``bdrv_reopen_queue_child`` (block.c; reference/qemu-options.md
§6.3): each listed node gets its new options, implicitly created children are
queued after their parent and re-inherit from the parent's *new* options,
referenced children are left alone, and a node listed twice is merged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from txgraph.model.drivers import driver_spec
from txgraph.model.node import OpenFlag
from txgraph.model.options import Provenance, Source
from txgraph.model.perm_bits import Role
from txgraph.ops.inherit import OptionSet, flags_from_options, inherit_options
from txgraph.ops.session import Session

__all__ = ["ReopenEntry", "ReopenQueue"]


@dataclass
class ReopenEntry:
    """One BlockReopenQueueEntry: the node's state after the reopen, until commit."""

    name: str
    options: OptionSet
    explicit: dict[str, Any]
    flags: OpenFlag
    backing_missing: bool = False
    detect_zeroes: str = "off"
    given: set[str] = field(default_factory=set)
    old_children: list[str] = field(default_factory=list)


class ReopenQueue:
    """``BlockReopenQueue``: the nodes a reopen touches, parents before their implicit children."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.graph = session.graph
        self.entries: list[ReopenEntry] = []

    def find(self, name: str) -> ReopenEntry | None:
        for entry in self.entries:
            if entry.name == name:
                return entry
        return None

    def queue(
        self,
        name: str,
        options: OptionSet | None,
        role: Role,
        parent: tuple[str, bool, dict[str, Any], OpenFlag, str] | None,
        keep_old: bool,
    ) -> None:
        """``bdrv_reopen_queue_child``: compute the node's new options and recurse into children.

        Precedence: given > retained explicit (duplicate entry or keep_old) >
        inherited from the parent's new options > retained effective (keep_old).
        """
        node = self.graph.nodes[name]
        opts = options if options is not None else OptionSet()
        given = set(opts.values)
        entry = self.find(name)
        if entry is not None or keep_old:
            old_explicit = entry.explicit if entry is not None else node.explicit
            for key, value in old_explicit.items():
                if key not in opts:
                    opts.put(key, value, node.provenance.get(key, Provenance(Source.EXPLICIT)))
        explicit = dict(opts.values)
        if parent is not None:
            pname, parent_is_format, parent_options, parent_flags, edge = parent
            flags = inherit_options(
                role, parent_is_format, opts, parent_flags, parent_options, pname, edge
            )
        else:
            flags = node.flags
        if keep_old:
            for key, value in node.options.items():
                if key not in opts:
                    opts.put(key, value, node.provenance.get(key, Provenance(Source.DEFAULT)))
        flags = flags_from_options(flags, opts.values)
        flags &= ~OpenFlag.PROTOCOL
        if flags & OpenFlag.RDWR:
            flags |= OpenFlag.ALLOW_RDWR
        if entry is None:
            entry = ReopenEntry(name, opts, explicit, flags)
            self.entries.append(entry)
        else:
            entry.options, entry.explicit, entry.flags = opts, explicit, flags
        entry.given |= given
        if not keep_old:
            entry.backing_missing = "backing" not in opts and "backing.driver" not in opts
        spec = driver_spec(node.driver)
        is_format = spec.is_format if spec is not None else False
        for child, child_edge in self.graph.children(name):
            if self.graph.nodes[child].inherits_from != name:
                continue
            child_keep_old = keep_old
            child_opts: OptionSet | None = None
            if child_edge.name in opts:
                ref = opts.values.get(child_edge.name)
                if ref != child:
                    continue
                child_keep_old = True
            else:
                prefix = child_edge.name + "."
                for key in [k for k in explicit if k.startswith(prefix)]:
                    del explicit[key]
                child_opts = opts.extract(prefix)
            self.queue(
                child,
                child_opts,
                child_edge.role,
                (name, is_format, opts.values, flags, child_edge.name),
                child_keep_old,
            )
