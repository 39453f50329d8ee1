"""V1-guest-view: what the guest reads through an export or device, before and after a change.

A guest reading through a BlockBackend at offset ``x`` gets the data of the
first layer of the served chain that allocates ``x`` (``bdrv_co_common_block_
status_above`` / ``bdrv_co_preadv`` falling through to ``bs->backing``), with
filters passed through (``bdrv_filter_bs``) and zeroes where no layer
allocates it or past a shorter backing's end. The *served chain* of a root is
therefore the list of its data layers, top first (:func:`served_layers`).

A change keeps the guest view when every offset is served by the same layer
afterwards. :func:`view_changes` decides that in O(change):

- layers common to the top of both chains serve the same ranges in both, so
  what they allocate is left out;
- below them, a common bottom suffix serves the same ranges in both as long
  as nothing above it allocates or cuts them, so only the ranges allocated by
  the layers that differ (the ones the change removed from or added to the
  chain), and the ranges past the end of a differing layer shorter than the
  disk, are candidates, and only those are queried further.

So a filter insertion (filters are not layers), a snapshot (the new overlay
allocates nothing), and a chain that loses an *empty* layer keep the view,
while a backing cut, or a ``backing`` link moved past a layer holding data,
does not. Block jobs keep the view by copying the data first (mirror's
pivot, commit, stream): their own graph changes are exempt (the caller says
which transactions are a job's, :mod:`txgraph.ops.guest_view`).

Relation to the other safe rules: S1 (a backing link dropped while the image
header names a backing file) and S2 (a writable root above such a cut) judge
the same harm by shape, for every user, whatever the allocation; J1 guards the
links a *running* job copies through. V1 judges by data, for export and device
roots only: it subsumes S1/S2 wherever a guest reads the cut chain and the
lost layers hold data, and it also catches what they cannot see (a backing
link moved to a lower layer, skipping one with data). The checker core never
does I/O, so the allocation comes in through :class:`Allocation` (the data
plane's block status, :mod:`txgraph.io.allocation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from txgraph.checker.rules import RULES
from txgraph.checker.verdict import Violation
from txgraph.model.drivers import driver_spec
from txgraph.model.perm_bits import Role

__all__ = [
    "RULE",
    "Allocation",
    "Change",
    "served_layers",
    "filtered_child_name",
    "view_changes",
    "violation",
    "human_size",
]

RULE = "V1-guest-view"

#: (offset, length) of a byte range
Run = tuple[int, int]


class Allocation(Protocol):
    """Which ranges a layer allocates itself (its ``block_status``), and its size."""

    def size(self, layer: str) -> int:
        """The layer's virtual size in bytes."""
        ...

    def allocated(self, layer: str, offset: int, length: int) -> list[Run]:
        """The runs of ``[offset, offset + length)`` the layer itself defines, sorted.

        A layer whose allocation is unknown answers "all of it"."""
        ...

    def known(self, layer: str) -> bool:
        """Whether the layer's allocation is known (else it counts as all data)."""
        ...


@dataclass(frozen=True, order=True)
class Change:
    """Guest reads of ``[offset, offset + length)`` get ``after``'s data instead of ``before``'s.

    ``None`` stands for zeroes (no layer allocates the range).
    """

    offset: int
    length: int
    before: str | None
    after: str | None

    def to_dict(self) -> dict[str, object]:
        return {
            "offset": self.offset,
            "length": self.length,
            "before": self.before,
            "after": self.after,
        }


def filtered_child_name(driver: str) -> str | None:
    """The child a filter passes I/O to (``bdrv_filter_child``); None if ``driver`` is no filter."""
    spec = driver_spec(driver)
    if spec is None or not spec.is_filter:
        return None
    if spec.filtered_child_is_backing:
        return "backing"
    for child in spec.children:
        if child.role & Role.FILTERED:
            return child.name
    return "file"


def served_layers(
    top: str | None,
    driver_of: Callable[[str], str | None],
    child_of: Callable[[str, str], str | None],
) -> list[str]:
    """The data layers a root reads, top first: filters skipped, then ``backing`` links.

    ``driver_of``/``child_of`` read one state of the graph (before or after a
    change), so the same walk serves both sides. Reproduces ``bdrv_skip_filters``
    and ``bdrv_cow_bs`` as :func:`txgraph.io.chain.chain` does on driver objects.
    """
    out: list[str] = []
    node = top
    while node is not None and node not in out:
        driver = driver_of(node)
        if driver is None:
            break
        via = filtered_child_name(driver)
        if via is not None:
            node = child_of(node, via)
            continue
        out.append(node)
        node = child_of(node, "backing")
    return out


def _merge(runs: list[Run]) -> list[Run]:
    out: list[Run] = []
    for off, n in sorted(runs):
        if n <= 0:
            continue
        if out and off <= out[-1][0] + out[-1][1]:
            last = out[-1]
            out[-1] = (last[0], max(last[0] + last[1], off + n) - last[0])
        else:
            out.append((off, n))
    return out


def _subtract(runs: list[Run], holes: list[Run]) -> list[Run]:
    """``runs`` minus ``holes`` (both sorted, merged): one sweep."""
    out: list[Run] = []
    j = 0
    for off, n in runs:
        pos, end = off, off + n
        while j < len(holes) and holes[j][0] + holes[j][1] <= pos:
            j += 1
        k = j
        while k < len(holes) and holes[k][0] < end:
            hoff, hn = holes[k]
            if hoff > pos:
                out.append((pos, hoff - pos))
            pos = max(pos, hoff + hn)
            k += 1
        if pos < end:
            out.append((pos, end - pos))
    return out


#: candidate ranges closer than this are asked about in one block-status walk
WINDOW_GAP = 4 << 20


def _windows(runs: list[Run]) -> list[Run]:
    """``runs`` grouped into query windows: one walk per cluster, not one per run."""
    out: list[Run] = []
    for off, n in runs:
        if out and off - (out[-1][0] + out[-1][1]) <= WINDOW_GAP:
            out[-1] = (out[-1][0], off + n - out[-1][0])
        else:
            out.append((off, n))
    return out


def _intersect(a: list[Run], b: list[Run]) -> list[Run]:
    """Both sorted and merged."""
    out: list[Run] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][0] + a[i][1], b[j][0] + b[j][1])
        if hi > lo:
            out.append((lo, hi - lo))
        if a[i][0] + a[i][1] <= b[j][0] + b[j][1]:
            i += 1
        else:
            j += 1
    return out


class _Known:
    """An :class:`Allocation` that remembers the layers already mapped in full.

    The differing layers are mapped over the whole disk to find the candidate
    ranges; serving those same ranges then intersects that map instead of
    walking the layer's block status a second time.
    """

    def __init__(self, alloc: Allocation) -> None:
        self.alloc = alloc
        self.full: dict[str, list[Run]] = {}

    def size(self, layer: str) -> int:
        return self.alloc.size(layer)

    def map_all(self, layer: str, size: int) -> list[Run]:
        runs = _merge(self.alloc.allocated(layer, 0, min(size, self.alloc.size(layer))))
        if size >= self.alloc.size(layer):
            self.full[layer] = runs
        return runs

    def known(self, layer: str) -> bool:
        return self.alloc.known(layer)

    def allocated(self, layer: str, offset: int, length: int) -> list[Run]:
        known = self.full.get(layer)
        if known is not None:
            return _intersect(known, [(offset, length)])
        return self.alloc.allocated(layer, offset, length)


def _held(alloc: Allocation, layer: str, within: list[Run]) -> list[Run]:
    """The parts of ``within`` (sorted, merged) that ``layer`` allocates itself."""
    if isinstance(alloc, _Known) and layer in alloc.full:
        return _intersect(alloc.full[layer], within)
    found = [r for off, n in _windows(within) for r in alloc.allocated(layer, off, n)]
    return _intersect(_merge(found), within)


def _serve(
    layers: Sequence[str], alloc: Allocation, ranges: list[Run]
) -> list[tuple[int, int, str | None]]:
    """Which layer serves each part of ``ranges`` (sorted, merged; None: zeroes)."""
    out: list[tuple[int, int, str | None]] = []
    remaining = ranges
    for layer in layers:
        if not remaining:
            break
        # past this layer's end the guest reads zeroes (bdrv_co_preadv_part), whatever is below
        past = _intersect(remaining, [(alloc.size(layer), 1 << 63)])
        out.extend((off, n, None) for off, n in past)
        remaining = _subtract(remaining, past)
        held = _held(alloc, layer, remaining)
        out.extend((off, n, layer) for off, n in held)
        remaining = _subtract(remaining, held)
    out.extend((off, n, None) for off, n in remaining)
    out.sort(key=lambda r: r[0])
    return out


def view_changes(before: Sequence[str], after: Sequence[str], alloc: Allocation) -> list[Change]:
    """The ranges a root's guest would read from different data after the change (module doc)."""
    k = 0
    while k < len(before) and k < len(after) and before[k] == after[k]:
        k += 1
    b_rest, a_rest = list(before[k:]), list(after[k:])
    s = 0
    while s < len(b_rest) and s < len(a_rest) and b_rest[-1 - s] == a_rest[-1 - s]:
        s += 1
    differing = b_rest[: len(b_rest) - s] + a_rest[: len(a_rest) - s]
    if not differing or not before or not after:
        return []
    # Past the end of a layer both chains share above the change, both read zeroes.
    size = min(alloc.size(layer) for layer in [before[0], after[0], *before[:k]])
    # A differing layer shorter than that hides whatever lies below past its end (the
    # guest reads zeroes there, bdrv_co_preadv_part): those ranges are candidates too.
    short = [(n, size - n) for n in {alloc.size(layer) for layer in differing} if n < size]
    alloc = _Known(alloc)
    allocated = [run for layer in differing for run in alloc.map_all(layer, size)]
    candidates = _merge(allocated + short)
    for layer in before[:k]:  # the common top serves its own ranges on both sides
        if not candidates:
            break
        if not alloc.known(layer):
            continue  # "all data" would hide the change below it: assume it hides nothing
        candidates = _subtract(candidates, _held(alloc, layer, candidates))
    if not candidates:
        return []
    old = _serve(b_rest, alloc, candidates)
    new = _serve(a_rest, alloc, candidates)
    return _coalesce(_differences(old, new))


def _differences(
    old: list[tuple[int, int, str | None]], new: list[tuple[int, int, str | None]]
) -> list[Change]:
    out: list[Change] = []
    i = j = 0
    while i < len(old) and j < len(new):
        o_off, o_n, o_layer = old[i]
        n_off, n_n, n_layer = new[j]
        start = max(o_off, n_off)
        end = min(o_off + o_n, n_off + n_n)
        if end > start and o_layer != n_layer:
            out.append(Change(start, end - start, o_layer, n_layer))
        if o_off + o_n <= n_off + n_n:
            i += 1
        else:
            j += 1
    return out


def _coalesce(changes: list[Change]) -> list[Change]:
    out: list[Change] = []
    for c in sorted(changes):
        last = out[-1] if out else None
        if (
            last is not None
            and last.offset + last.length == c.offset
            and (last.before, last.after) == (c.before, c.after)
        ):
            out[-1] = Change(last.offset, last.length + c.length, c.before, c.after)
        else:
            out.append(c)
    return out


def human_size(n: int) -> str:
    """``4 MiB``, ``64 KiB``, ``512 B``: exact binary units when they divide evenly."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def _what(change: Change) -> str:
    new = f"{change.after}'s data" if change.after is not None else "zeroes"
    if change.before is None:
        old = "zeroes"
    elif change.after is None:
        old = f"{change.before}'s data"
    else:
        old = f"{change.before}'s"
    return f"{new} instead of {old}"


#: ranges spelled out in a sentence; the rest are counted (all are in ``ranges``)
_SHOWN = 3


def violation(
    root: str, who: str, top: str, changes: Sequence[Change], nodes: Sequence[str], policy: str
) -> Violation:
    """The V1 violation of one root: its changed ranges, their layers and one sentence."""
    parts = [
        f"{human_size(c.length)} at {human_size(c.offset) if c.offset else '0'} "
        f"would return {_what(c)}"
        for c in changes[:_SHOWN]
    ]
    more = len(changes) - _SHOWN
    total = human_size(sum(c.length for c in changes))
    detail = "; ".join(parts) + (f"; and {more} more range(s), {total} in all" if more > 0 else "")
    sentence = RULES[RULE].template.format(who=who, top=top, detail=detail)
    return Violation(
        RULE,
        tuple(sorted(set(nodes))),
        (),
        sentence,
        policy,
        ranges=tuple((c.offset, c.length, c.before, c.after) for c in changes),
        root=root,
    )
