"""From -drive strings to typed blockdev-add arguments, driven by QSD 7.2's schema.

``-drive`` values stay strings all the way into the block layer (QemuOpts;
reference/qemu-options.md §8.2), while ``blockdev-add`` is typed QAPI. This
reproduces what QEMU's keyval input visitor does for ``-blockdev``
(``qobject_input_visitor_new_keyval``): a flat ``a.b.c`` dict is nested, then
each leaf string is converted to the type the schema gives that member
(``qapi_bool_parse`` for booleans, ``qemu_strtou64``-style integers). Members
the schema does not know are left as they are, so the server refuses them
with its own message.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from txgraph.model.options import parse_bool, unflatten
from txgraph.qmp.qapi import schema_json

__all__ = ["typed_blockdev_options", "nest", "SizeError"]


class SizeError(ValueError):
    """``parse_option_size``: a driver's integer option that is not a number (QemuOpts)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Parameter '{key}' expects a non-negative number below 2^64")
        self.key = key


@cache
def _entities() -> dict[str, dict[str, Any]]:
    return {str(e["name"]): e for e in schema_json()}


def _blockdev_options_type() -> str:
    return str(_entities()["blockdev-add"]["arg-type"])


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``qdict_crumple`` without lists: ``{"a.b": 1}`` -> ``{"a": {"b": 1}}``.

    A key that is both a leaf and a prefix keeps the nested form (the dotted
    keys win, as in ``qdict_flatten`` collisions; reference §8.3).
    """
    return unflatten(flat, nested_wins=True)


_SUFFIXES = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def _to_int(value: str) -> Any:
    """``qemu_strtou64`` (any base), else ``qemu_strtosz`` (a size with a K/M/G/... suffix)."""
    try:
        return int(value, 0)
    except ValueError:
        pass
    if len(value) > 1 and value[-1].lower() in _SUFFIXES:
        try:
            number = float(value[:-1])
        except ValueError:
            return value
        return int(number * (1 << _SUFFIXES[value[-1].lower()]))
    return value


def _visit(tname: str, value: Any, key: str = "?") -> Any:
    ent = _entities().get(tname)
    if ent is None:
        return value
    meta = ent["meta-type"]
    if meta == "builtin":
        if not isinstance(value, str):
            return value
        jt = ent["json-type"]
        if jt == "boolean":
            parsed = parse_bool(value)
            return value if parsed is None else parsed
        if jt == "int":
            number = _to_int(value)
            if not isinstance(number, int) or number < 0:
                raise SizeError(key)
            return number
        if jt == "number":
            try:
                return float(value)
            except ValueError:
                return value
        return value
    if meta == "alternate":
        members = [_entities().get(m["type"], {}) for m in ent["members"]]
        if isinstance(value, dict):
            for m, e in zip(ent["members"], members):
                if e.get("meta-type") == "object":
                    return _visit(m["type"], value, key)
            return value
        # a string leaf: keep it when the alternate has a string branch (a node reference)
        for e in members:
            if (
                e.get("meta-type") in ("builtin", "enum")
                and e.get("json-type", "string") == "string"
            ):
                return value
        for m in ent["members"]:
            converted = _visit(m["type"], value, key)
            if converted is not value:
                return converted
        return value
    if meta == "array":
        if isinstance(value, dict) and all(k.isdigit() for k in value):
            return [_visit(ent["element-type"], value[k], key) for k in sorted(value, key=int)]
        return value
    if meta == "object" and isinstance(value, dict):
        return _visit_object(ent, value)
    return value


def _visit_object(ent: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    types = {m["name"]: m["type"] for m in ent.get("members", [])}
    tag = ent.get("tag")
    if tag is not None:
        for variant in ent.get("variants", []):
            if variant["case"] == value.get(tag):
                sub = _entities().get(variant["type"], {})
                types.update({m["name"]: m["type"] for m in sub.get("members", [])})
    return {k: _visit(types[k], v, k) if k in types else v for k, v in value.items()}


def typed_blockdev_options(flat: dict[str, Any]) -> dict[str, Any]:
    """Nest a flat option dict and give every leaf its ``BlockdevOptions`` type."""
    return _visit(_blockdev_options_type(), nest(flat))  # type: ignore[no-any-return]
