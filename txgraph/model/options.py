"""Flattened option dictionaries and the provenance of every resolved value.

QEMU keeps a node's options as a *flattened* QDict (``file.filename``,
``children.0.driver``; ``qdict_flatten`` in qobject/block-qdict.c). txgraph
stores them the same way, with Python values of the same types QEMU would hold
(QAPI input yields bool/int/str; defaults injected by QEMU as strings stay
strings, because reopen compares values with their types).

Beside each value, a :class:`Provenance` records *why* the node has it, so a
user can ask where ``read-only=on`` on a backing file came from.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from txgraph.qobject.encoder import qdict_order

__all__ = [
    "Source",
    "Provenance",
    "flatten",
    "unflatten",
    "extract_subdict",
    "array_entries",
    "parse_bool",
    "qdict_order",
    "qdict_first",
]

Options = dict[str, Any]


class Source(enum.Enum):
    """Where a resolved option value came from (reference/qemu-options.md §3.2)."""

    #: given by the user for this node (QMP, inline child dict)
    EXPLICIT = "explicit"
    #: from a ``json:`` pseudo-filename (image header backing string); counts as explicit
    JSON = "json"
    #: copied from the parent's options by the role's inheritance rule
    INHERITED = "inherited"
    #: set by the child's role regardless of the parent (backing read-only, discard=unmap)
    ROLE = "role"
    #: injected by the entry point (blockdev-add's cache/read-only defaults)
    ENTRY_DEFAULT = "entry-default"
    #: derived from the open flags when still missing (bdrv_fill_options)
    FLAGS = "flags"
    #: the driver's own default
    DEFAULT = "default"


@dataclass(frozen=True)
class Provenance:
    """Why a node's option has its value.

    ``parent`` and ``edge`` name the parent node and the child edge for
    inherited and role-forced values; ``detail`` is a short human phrase.
    """

    source: Source
    parent: str | None = None
    edge: str | None = None
    detail: str = ""

    def describe(self) -> str:
        if self.source is Source.INHERITED:
            return f"inherited from '{self.parent}' through its '{self.edge}' child"
        if self.source is Source.ROLE:
            return f"forced by the '{self.edge}' role under '{self.parent}'" + (
                f" ({self.detail})" if self.detail else ""
            )
        if self.source is Source.JSON:
            return "from a json: filename" + (f" ({self.detail})" if self.detail else "")
        if self.source is Source.ENTRY_DEFAULT:
            return f"default injected by {self.detail or 'the entry point'}"
        if self.source is Source.FLAGS:
            return "derived from the open flags" + (f" ({self.detail})" if self.detail else "")
        if self.source is Source.DEFAULT:
            return "driver default"
        return "given explicitly"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source.value}
        if self.parent is not None:
            out["parent"] = self.parent
        if self.edge is not None:
            out["edge"] = self.edge
        if self.detail:
            out["detail"] = self.detail
        out["description"] = self.describe()
        return out


def flatten(value: Mapping[str, Any]) -> Options:
    """``qdict_flatten``: nested dicts/lists become dotted keys.

    Empty dicts and lists are kept as values (QEMU does not flatten them, and
    later rejects them as unknown options). A nested value wins over an
    explicit dotted key it collides with.
    """
    out: Options = {}
    dotted: Options = {}

    def walk(prefix: str, item: Any) -> None:
        if isinstance(item, Mapping) and item:
            for key, sub in item.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(item, list) and item:
            for index, sub in enumerate(item):
                walk(f"{prefix}.{index}", sub)
        else:
            out[prefix] = item

    for key, item in value.items():
        if (isinstance(item, Mapping) and item) or (isinstance(item, list) and item):
            walk(key, item)
        else:
            dotted[key] = item
    for key, item in dotted.items():
        out.setdefault(key, item)
    return out


def unflatten(options: Mapping[str, Any], *, nested_wins: bool = False) -> dict[str, Any]:
    """Inverse of :func:`flatten` for display (numeric keys stay dict keys).

    With ``nested_wins``, a key that is both a leaf and a prefix keeps the nested
    form, as the dotted keys win in ``qdict_crumple`` (reference §8.3).
    """
    root: dict[str, Any] = {}
    for key, value in options.items():
        parts = key.split(".")
        cur = root
        for part in parts[:-1]:
            nxt = cur.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                cur[part] = nxt
            cur = nxt
        if not (nested_wins and isinstance(cur.get(parts[-1]), dict)):
            cur[parts[-1]] = value
    return root


def extract_subdict(options: Options, prefix: str) -> Options:
    """``qdict_extract_subqdict``: move every ``prefix*`` key out, prefix stripped."""
    sub: Options = {}
    for key in [k for k in options if k.startswith(prefix)]:
        sub[key[len(prefix) :]] = options.pop(key)
    return sub


_INDEX = re.compile(r"^(\d+)(?:\.|$)")


def array_entries(options: Mapping[str, Any], prefix: str) -> int:
    """``qdict_array_entries``: number of dense ``prefix<N>`` entries, or -1 if invalid.

    An index must be either a plain value or a dict (``prefix<N>.*``), never
    both, and indexes must run 0..N-1 without holes.
    """
    seen: dict[int, set[str]] = {}
    for key in options:
        if not key.startswith(prefix):
            continue
        match = _INDEX.match(key[len(prefix) :])
        if match is None:
            return -1
        index = int(match.group(1))
        kind = "dict" if key[len(prefix) + len(match.group(1)) :].startswith(".") else "value"
        seen.setdefault(index, set()).add(kind)
    for kinds in seen.values():
        if len(kinds) > 1:
            return -1
    count = len(seen)
    if set(seen) != set(range(count)):
        return -1
    return count


def parse_bool(value: Any) -> bool | None:
    """QemuOpts boolean parsing (``qapi_bool_parse``): bools and on/off-style strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in ("on", "yes", "true", "y"):
            return True
        if value in ("off", "no", "false", "n"):
            return False
    return None


def iter_child_keys(options: Mapping[str, Any], child: str) -> Iterator[str]:
    """Keys that belong to child ``child``: the reference key and ``child.*``."""
    dot = child + "."
    for key in options:
        if key == child or key.startswith(dot):
            yield key


# -- QDict iteration order ------------------------------------------------------------------
# QEMU's QDict iterates by hash bucket, newest insertion first inside a bucket.
# Which key an error message names ("first unsupported option") and the key
# order of generated json: filenames both follow it.


def qdict_first(options: Mapping[str, Any]) -> str | None:
    """``qdict_first``: the key QEMU would look at first."""
    ordered = qdict_order(list(options))
    return ordered[0] if ordered else None
