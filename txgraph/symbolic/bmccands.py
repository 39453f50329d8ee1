"""The candidate commands of z3's plan synthesis (:mod:`txgraph.symbolic.bmc`) and their effects.

Each candidate is a QEMU 7.2 command derived from the difference between the start
and the target graph, with what it needs and what it changes in the *union graph*
(every vertex and edge of both):

- ``blockdev-add`` of a target node (flat, or the target's nested command for a whole
  subtree), and of an overlay the target has on a node without its ``backing``, for a
  ``blockdev-snapshot`` to link it;
- ``blockdev-del`` of a node the target lacks (with the children it was opened with);
- ``blockdev-reopen`` of a node whose children or flags differ (the target's definition,
  ``backing`` stated): its out-edges become the target's and, when its flags differ,
  it and the nodes that inherit their options from it (``inherits_from``, as
  ``bdrv_reopen_queue_child`` re-inherits them) take the target's flags;
- ``blockdev-snapshot`` node=base overlay=ov where the target links ``ov`` to ``base``
  as backing: ``bdrv_append`` moves every parent of ``base`` but ``ov`` to ``ov`` (a
  *move*: the edge to ``ov`` exists afterwards iff the one to ``base`` did before; a
  parent the target does not move is a precondition: it must not be present), links
  ``ov`` to ``base``, and ``base`` (with what inherits from it) ends with the target's
  flags — QEMU 7.2 leaves the new backing read-only;
- ``block-export-add``/``-del`` of an export only one side has.

A node whose *flags* differ between start and target (read-only, writable,
force-share) has a flag literal per step in the encoding, "it has the target's flags";
only a reopen or a snapshot sets it, and the goal requires it. What the flags change
is the permission rules: the checker's instances of such a node (its own P4, the
P1 formulas of its child edges, which read its writability) are enumerated on the
union graph twice, with the start's flags and with the target's
(:func:`flag_variants`), and each copy holds under its flag literal.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from txgraph.model.graph import BlockGraph
from txgraph.symbolic.graphstate import export_definitions, node_definitions
from txgraph.symbolic.synth import _refs, target_definition

__all__ = ["Cand", "candidates", "refs_of", "flipping", "flag_variants", "Ref", "Command"]

Command = dict[str, Any]
Ref = tuple[str, str, str]
_EXPORT_BB = "bb:export:"


@dataclass
class Cand:
    label: str
    command: Command
    adds: set[str] = field(default_factory=set)  # vertices made present
    removes: set[str] = field(default_factory=set)  # vertices made absent
    on: set[Ref] = field(default_factory=set)  # edges made present
    off: set[Ref] = field(default_factory=set)  # edges made absent
    needs: set[str] = field(default_factory=set)  # vertices that must be present
    unused: set[str] = field(default_factory=set)  # vertices that must have no present parent
    #: edges that must be absent (a snapshot overlay's backing, a parent it cannot move)
    absent: set[Ref] = field(default_factory=set)
    #: (from, to): ``to`` is present afterwards iff ``from`` was; ``from`` goes
    moves: list[tuple[Ref, Ref]] = field(default_factory=list)
    #: nodes that take the target's flags
    flips: set[str] = field(default_factory=set)


def refs_of(g: BlockGraph) -> set[Ref]:
    return {(p, e.name, c) for p, c, e in g.edges()}


def _flags(g: BlockGraph, n: str) -> tuple[Any, ...]:
    node = g.nodes[n]
    return node.read_only, node.writable, node.force_share


def flipping(start: BlockGraph, target: BlockGraph) -> set[str]:
    """The nodes of both whose flags differ."""
    both = set(start.nodes) & set(target.nodes)
    return {n for n in both if _flags(start, n) != _flags(target, n)}


def _inheritors(
    target: BlockGraph, name: str, flips: set[str], defs: dict[str, dict[str, Any]]
) -> set[str]:
    """The flipping nodes a reopen of ``name`` with the target's options gives the
    target's flags: ``name`` itself unless it inherits them and its definition does not
    state ``read-only``, and, transitively, the nodes inheriting their options from a
    node in the set that state none of their own."""

    def own(n: str) -> bool:
        return "read-only" in defs.get(n, {})

    start = {name} if (target.nodes[name].inherits_from is None or own(name)) else set()
    out, frontier = set(start), {name}
    while frontier:
        frontier = {
            n
            for n, node in target.nodes.items()
            if n not in out and node.inherits_from in frontier and not own(n)
        }
        out |= frontier
    return out & flips


def flag_variants(union: BlockGraph, target: BlockGraph, flips: set[str]) -> BlockGraph:
    """The union graph with the target's flags on the flipping nodes."""
    u = copy.deepcopy(union)
    for n in flips:
        node = u.nodes[n]
        want = target.nodes[n]
        node.flags, node.force_share = want.flags, want.force_share
    return u


def candidates(
    start: BlockGraph, target: BlockGraph, tcmds: list[Command], union: BlockGraph
) -> list[Cand]:
    defs = node_definitions(tcmds)
    s_edges, t_edges, u_edges = refs_of(start), refs_of(target), refs_of(union)
    flips = flipping(start, target)
    out: list[Cand] = []
    for name in sorted(set(target.nodes) - set(start.nodes)):
        d = defs[name]
        mine = {r for r in t_edges if r[0] == name}
        out.append(
            Cand(
                f"blockdev-add '{name}'",
                {"execute": "blockdev-add", "arguments": d},
                adds={name},
                on=mine,
                needs=set(_refs(d)),
            )
        )
        if isinstance(d.get("backing"), str):
            bare = {**d, "backing": None}
            out.append(
                Cand(
                    f"blockdev-add '{name}' without its backing",
                    {"execute": "blockdev-add", "arguments": bare},
                    adds={name},
                    on={r for r in mine if r[1] != "backing"},
                    needs=set(_refs(bare)),
                )
            )
    for cmd in (c for c in tcmds if c.get("execute") == "blockdev-add"):
        sub = set(node_definitions([cmd]))
        if len(sub) > 1 and not sub & set(start.nodes):
            ext = {r for n in sub for r in _refs(defs[n])} - sub
            top = cmd["arguments"].get("node-name")
            out.append(
                Cand(
                    f"blockdev-add '{top}' (nested)",
                    cmd,
                    adds=sub,
                    on={r for r in t_edges if r[0] in sub},
                    needs=ext,
                )
            )
            if isinstance(cmd["arguments"].get("backing"), str):
                # the overlay of a blockdev-snapshot, with its own children
                bare = {**cmd, "arguments": {**cmd["arguments"], "backing": None}}
                out.append(
                    Cand(
                        f"blockdev-add '{top}' (nested, without its backing)",
                        bare,
                        adds=sub,
                        on={r for r in t_edges if r[0] in sub and r[:2] != (top, "backing")},
                        needs=ext - {cmd["arguments"]["backing"]},
                    )
                )
    gone = set(start.nodes) - set(target.nodes)
    for name in sorted(gone):
        with_it = {c for p, c, _e in start.edges() if p == name and c in gone}
        with_it = {c for c in with_it if all(p == name for p, _e in start.parents(c))}
        dropped = {name} | with_it
        out.append(
            Cand(
                f"blockdev-del '{name}'",
                {"execute": "blockdev-del", "arguments": {"node-name": name}},
                removes=dropped,
                off={r for r in s_edges if r[0] in dropped},
                needs={name},
                unused={name},
            )
        )
    tkids: dict[str, dict[str, str]] = {}
    for p, k, c in t_edges:
        tkids.setdefault(p, {})[k] = c
    for name in sorted(set(start.nodes) & set(target.nodes)):
        was = {r for r in s_edges if r[0] == name}
        now = {r for r in t_edges if r[0] == name}
        if (was != now or name in flips) and name in defs:
            opts = target_definition(defs, name, tkids)
            out.append(
                Cand(
                    f"blockdev-reopen '{name}'",
                    {"execute": "blockdev-reopen", "arguments": {"options": [opts]}},
                    on=now,
                    off=was - now,
                    needs={name, *_refs(opts)},
                    flips=_inheritors(target, name, flips, defs),
                )
            )
    out += _snapshots(target, t_edges, u_edges, flips)
    out += _exports(start, target, tcmds, s_edges, t_edges)
    return out


def _snapshots(
    target: BlockGraph,
    t_edges: set[Ref],
    u_edges: set[Ref],
    flips: set[str],
) -> list[Cand]:
    out: list[Cand] = []
    for ov, name, base in sorted(t_edges):
        if name != "backing" or ov not in target.nodes:
            continue
        link = (ov, "backing", base)
        moves, stuck = [], set()
        for r in sorted(u_edges):
            if r[2] != base or r[0] == ov:
                continue
            to = (r[0], r[1], ov)
            if to in u_edges:
                moves.append((r, to))
            else:
                stuck.add(r)  # a parent the target does not move: it must not be there
        out.append(
            Cand(
                f"blockdev-snapshot '{base}' onto '{ov}'",
                {"execute": "blockdev-snapshot", "arguments": {"node": base, "overlay": ov}},
                on={link},
                needs={ov, base},
                absent={link, *stuck},
                moves=moves,
                flips=_snapshot_flips(target, base, flips),
            )
        )
    return out


def _snapshot_flips(target: BlockGraph, base: str, flips: set[str]) -> set[str]:
    """The base and the nodes inheriting from it: the snapshot leaves them read-only."""
    out, frontier = {base}, {base}
    while frontier:
        frontier = {
            n for n, node in target.nodes.items() if n not in out and node.inherits_from in frontier
        }
        out |= frontier
    return out & flips


def _exports(
    start: BlockGraph,
    target: BlockGraph,
    tcmds: list[Command],
    s_edges: set[Ref],
    t_edges: set[Ref],
) -> list[Cand]:
    out: list[Cand] = []
    xdefs = export_definitions(tcmds)
    for key in sorted(set(target.backends) - set(start.backends)):
        xid = key.removeprefix(_EXPORT_BB)
        if key.startswith(_EXPORT_BB) and xid in xdefs:
            out.append(
                Cand(
                    f"block-export-add '{xid}'",
                    {"execute": "block-export-add", "arguments": xdefs[xid]},
                    adds={key},
                    on={r for r in t_edges if r[0] == key},
                    needs={str(xdefs[xid]["node-name"])},
                )
            )
    for key in sorted(set(start.backends) - set(target.backends)):
        if key.startswith(_EXPORT_BB):
            xid = key.removeprefix(_EXPORT_BB)
            out.append(
                Cand(
                    f"block-export-del '{xid}'",
                    {"execute": "block-export-del", "arguments": {"id": xid}},
                    removes={key},
                    off={r for r in s_edges if r[0] == key},
                    needs={key},
                )
            )
    return out
