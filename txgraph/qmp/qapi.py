"""QMP message checks and QAPI argument validation, driven by QSD 7.2's own schema.

The schema is the verbatim ``query-qmp-schema`` reply of qemu-storage-daemon 7.2
(``data/qsd-7.2-schema.json``). Introspection hides two things QEMU prints in
its errors: the real names of alternate types and the width of integer
members; both were learnt from the daemon by experiment
(``data/qsd-7.2-types.json``, see ``tools/capture_qapi_data.py``).

:func:`check_message` reproduces ``qmp_dispatch``'s checks of the message
itself; :func:`validate_arguments` reproduces the generated marshaller walking
the arguments with QEMU's QObject input visitor (``qobject_input_visitor_new_qmp``):
members in schema order (base members, then the variant's), the first error
stops the walk, unvisited members are reported last. txgraph's extension
commands are validated by the same walk, from their own schema entries
(:mod:`txgraph.qmp.qapi_ext`), which ``query-qmp-schema`` does not show. Where QEMU names the
failing value it uses one of two forms, and so does this module:

* the full path (``options[0].file.filename``): "is missing", "is unexpected",
  "Invalid parameter type ... expected: <json type>", "expects uint64";
* the bare member name, or ``null`` for a list element: "does not accept value"
  (enums), "expects int32_t" (range of narrow integers) and
  "expected: <alternate name>".
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from txgraph.errors import QAPIError, QMPError
from txgraph.qmp import qapi_ext
from txgraph.qobject.encoder import ghash_first, qdict_order

__all__ = [
    "check_message",
    "validate_arguments",
    "schema_json",
    "has_command",
    "ArgumentVisitor",
    "qsd_schema",
    "order_return",
    "order_event",
]

_DATA = Path(__file__).resolve().parent / "data"
_SCHEMA_FILE = _DATA / "qsd-7.2-schema.json"
_TYPES_FILE = _DATA / "qsd-7.2-types.json"

_Path = tuple[str | int, ...]

# Ranges of the integer kinds; QEMU visits every unsigned kind as uint64 first
# (accepting negative int64 values, which wrap) and then checks the width.
_SIGNED = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_UNSIGNED = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64, "size": 64}


class _Schema:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = json.loads(_SCHEMA_FILE.read_text())
        self.by_name = {e["name"]: e for e in self.entries}
        self.commands = {e["name"]: e for e in self.entries if e["meta-type"] == "command"}
        # txgraph's extension commands: validated alike, never shown by query-qmp-schema
        extensions = qapi_ext.extension_entries(self.by_name)
        clash = {e["name"] for e in extensions} & set(self.by_name)
        assert not clash, f"extension schema entries shadow QSD's: {sorted(clash)}"
        self.by_name.update((e["name"], e) for e in extensions)
        self.ext_commands = {e["name"]: e for e in extensions if e["meta-type"] == "command"}
        facts = json.loads(_TYPES_FILE.read_text())
        self.alternate_names: dict[str, str] = facts["alternates"]
        self.int_kinds: dict[str, dict[str, str]] = facts["integers"]


@cache
def _schema() -> _Schema:
    return _Schema()


def schema_json() -> list[dict[str, Any]]:
    """The ``query-qmp-schema`` reply (a fresh copy the caller may modify)."""
    return copy.deepcopy(_schema().entries)


def has_command(name: str) -> bool:
    """Whether QSD 7.2's schema defines command ``name``."""
    return name in _schema().commands


def order_return(command: str, value: Any) -> Any:
    """``value`` with every object's members in the order of ``command``'s ret-type.

    QEMU's output visitor inserts members in schema order, and that insertion
    order decides the output order of keys sharing a QDict bucket (``micro``
    and ``minor`` in ``query-version``). Reordering here keeps the bytes equal
    to QEMU's whatever order a handler built its dicts in. Unknown commands and
    keys outside the schema are left as they are.
    """
    entry = _schema().commands.get(command)
    return value if entry is None else _reorder(entry["ret-type"], value)


def order_event(name: str, data: Any) -> Any:
    """Event ``data`` reordered by the event's schema type (see :func:`order_return`)."""
    entry = _schema().by_name.get(name)
    if entry is None or entry["meta-type"] != "event" or "arg-type" not in entry:
        return data
    return _reorder(entry["arg-type"], data)


def _reorder(tname: str, value: Any) -> Any:
    t = _schema().by_name.get(tname)
    if t is None:
        return value
    meta = t["meta-type"]
    if meta == "array" and isinstance(value, list):
        return [_reorder(t["element-type"], v) for v in value]
    if meta == "alternate" and isinstance(value, dict):
        for member in t["members"]:
            if _schema().by_name[member["type"]]["meta-type"] == "object":
                return _reorder(member["type"], value)
        return value
    if meta != "object" or not isinstance(value, dict):
        return value
    members = [(m["name"], m["type"]) for m in t.get("members", [])]
    tag = t.get("tag")
    for variant in t.get("variants", []):
        if tag is not None and variant["case"] == value.get(tag):
            members += [
                (m["name"], m["type"]) for m in _schema().by_name[variant["type"]]["members"]
            ]
    result = {name: _reorder(mtype, value[name]) for name, mtype in members if name in value}
    result.update((k, v) for k, v in value.items() if k not in result)
    return result


def check_message(message: Any) -> tuple[str, dict[str, Any]]:
    """Check a QMP request's shape as ``qmp_dispatch`` does; return (command, arguments).

    Members are examined in QDict iteration order, so when a message has
    several problems the one QEMU reports is the one raised. ``exec-oob`` is
    an unexpected member because txgraph never enables the oob capability.
    Missing ``arguments`` means an empty object.
    """
    if not isinstance(message, dict):
        raise QMPError("QMP input must be a JSON object")
    for key in qdict_order(message):
        value = message[key]
        if key == "execute":
            if not isinstance(value, str):
                raise QMPError("QMP input member 'execute' must be a string")
        elif key == "arguments":
            if not isinstance(value, dict):
                raise QMPError("QMP input member 'arguments' must be an object")
        elif key != "id":
            raise QMPError(f"QMP input member '{key}' is unexpected")
    if "execute" not in message:
        raise QMPError("QMP input lacks member 'execute'")
    return message["execute"], message.get("arguments", {})


def validate_arguments(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate ``arguments`` of command ``name``; return them as typed values.

    Absent optional members stay absent (no defaults are filled in). Unsigned
    integers come back as QEMU stores them (``-1`` for a uint64 is 2**64-1),
    ``number`` members as float. txgraph's extension commands are validated
    from their own entries (:mod:`txgraph.qmp.qapi_ext`), by the same walk.
    """
    schema = _schema()
    command = schema.commands.get(name) or schema.ext_commands.get(name)
    if command is None:
        raise AssertionError(f"command {name} has no schema entry")
    return _Visitor(schema).visit_object(command["arg-type"], arguments, ())


def _render(path: _Path) -> str:
    """QEMU's ``full_name``: ``a.b`` for members, ``a[0]`` for list elements."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else seg
    return out


def _bare(path: _Path) -> str:
    """The name the visitor was called with: the member name, or ``null`` in a list."""
    last = path[-1] if path else None
    return last if isinstance(last, str) else "null"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array"


class _Visitor:
    """One walk of a value against the schema (the QObject input visitor)."""

    def __init__(self, schema: _Schema) -> None:
        self.schema = schema

    def type_error(self, path: _Path, expected: str) -> QAPIError:
        return QAPIError(f"Invalid parameter type for '{_render(path)}', expected: {expected}")

    def arg_type(self, command: str) -> str:
        """The argument type of a command (QSD's or an extension's)."""
        entry = self.schema.commands.get(command) or self.schema.ext_commands[command]
        return str(entry["arg-type"])

    def visit(self, tname: str, value: Any, path: _Path, int_kind: str = "int64") -> Any:
        choose = qapi_ext.CHOOSERS.get(tname)
        if choose is not None:
            return self.visit(choose(value), value, path, int_kind)
        t = self.schema.by_name[tname]
        meta = t["meta-type"]
        if meta == "builtin":
            return self.visit_builtin(t["json-type"], value, path, int_kind)
        if meta == "enum":
            if not isinstance(value, str):
                raise self.type_error(path, "string")
            if value not in t["values"]:
                raise QAPIError(f"Parameter '{_bare(path)}' does not accept value '{value}'")
            return value
        if meta == "array":
            if not isinstance(value, list):
                raise self.type_error(path, "array")
            return [
                self.visit(t["element-type"], item, (*path, i), int_kind)
                for i, item in enumerate(value)
            ]
        if meta == "alternate":
            return self.visit_alternate(t, value, path)
        if meta == "object":
            if not isinstance(value, dict):
                raise self.type_error(path, "object")
            return self.visit_object(tname, value, path)
        raise AssertionError(f"cannot visit a {meta}")

    def visit_builtin(self, json_type: str, value: Any, path: _Path, int_kind: str) -> Any:
        if json_type == "value":
            return value
        if json_type == "int":
            return self.visit_int(value, path, int_kind)
        if json_type == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.type_error(path, "number")
            return float(value)
        expected = {"string": str, "boolean": bool, "null": type(None)}[json_type]
        if not isinstance(value, expected):
            raise self.type_error(path, json_type)
        return value

    def visit_int(self, value: Any, path: _Path, kind: str) -> int:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if kind in _UNSIGNED:
            if not is_int or not -(2**63) <= value < 2**64:
                raise QAPIError(f"Parameter '{_render(path)}' expects uint64")
            unsigned = int(value) % 2**64
            if unsigned >= 2 ** _UNSIGNED[kind]:
                raise QAPIError(f"Parameter '{_bare(path)}' expects {kind}_t")
            return unsigned
        if not is_int or not -(2**63) <= value < 2**63:
            raise self.type_error(path, "integer")
        bits = _SIGNED.get(kind, 64)
        if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise QAPIError(f"Parameter '{_bare(path)}' expects {kind}_t")
        return int(value)

    def visit_alternate(self, t: dict[str, Any], value: Any, path: _Path) -> Any:
        """Pick the branch by the value's JSON type, as generated alternate visitors do."""
        kind = _json_kind(value)
        for member in t["members"]:
            branch = self.schema.by_name[member["type"]]
            meta = branch["meta-type"]
            if (
                (meta == "object" and kind == "object")
                or (meta == "enum" and kind == "string")
                or (meta == "array" and kind == "array")
            ):
                return self.visit(member["type"], value, path)
            if meta == "builtin" and (
                branch["json-type"] == kind or (branch["json-type"] == "int" and kind == "number")
            ):
                return self.visit(member["type"], value, path)
        alt = self.schema.alternate_names.get(t["name"], t["name"])
        raise QAPIError(f"Invalid parameter type for '{_bare(path)}', expected: {alt}")

    def visit_object(self, tname: str, value: dict[str, Any], path: _Path) -> dict[str, Any]:
        """Members of ``tname`` (base, then the variant chosen by the tag), then leftovers."""
        t = self.schema.by_name[tname]
        inserted = qdict_order(value)
        unvisited = set(value)
        result: dict[str, Any] = {}
        self.visit_members(tname, t["members"], value, path, unvisited, result)
        tag = t.get("tag")
        if tag is not None and tag in result:
            for variant in t.get("variants", []):
                if variant["case"] == result[tag]:
                    vtype = variant["type"]
                    self.visit_members(
                        vtype, self.schema.by_name[vtype]["members"], value, path, unvisited, result
                    )
                    break
        extra = ghash_first(inserted, unvisited)
        if extra is not None:
            raise QAPIError(f"Parameter '{_render((*path, extra))}' is unexpected")
        check = qapi_ext.CHECKS.get(tname)
        return check(self, result, path) if check is not None else result

    def visit_members(
        self,
        owner: str,
        members: list[dict[str, Any]],
        value: dict[str, Any],
        path: _Path,
        unvisited: set[str],
        result: dict[str, Any],
    ) -> None:
        kinds = self.schema.int_kinds.get(owner, {})
        for member in members:
            mname = member["name"]
            mpath = (*path, mname)
            if mname not in value:
                if "default" in member:
                    continue
                raise QAPIError(f"Parameter '{_render(mpath)}' is missing")
            unvisited.discard(mname)
            result[mname] = self.visit(
                member["type"], value[mname], mpath, kinds.get(mname, "int64")
            )


#: the schema walker, for validators of other input syntaxes (``--blockdev`` keyval)
ArgumentVisitor = _Visitor


def qsd_schema() -> _Schema:
    """QSD 7.2's schema as the visitor reads it (loaded once)."""
    return _schema()
