"""Is a reply valid QAPI? The model-mode invariant on every reply txgraph gives.

QEMU's generated marshallers build every reply with the QObject output visitor
from the command's return type (``qmp_marshal_output_*``), and ``qmp_dispatch``
wraps it as ``{"return": ...}``, or an error as ``{"error": {"class", "desc"}}``
with the class one of the ``QapiErrorClass`` names (``qmp_error_response``).
So a reply that is valid QAPI has exactly that shape, and its return value
conforms to the ``ret-type`` of QSD 7.2's schema (``query-qmp-schema``, with
txgraph's extension entries): every member without a default present, no
member the type does not have, enum values among the enum's, union variants by
their tag, each alternate branch tried in turn.

Members named ``__io.txgraph_*`` are txgraph's downstream extension (QAPI's
``__RFQDN_`` naming rule) and allowed anywhere in an error.

:func:`reply_problem` is a pure function of the command name and the reply; the
compiled checkers of types are cached per process (read-only once built).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from txgraph.qmp.qapi import qsd_schema

__all__ = ["reply_problem", "ERROR_CLASSES"]

#: QEMU's QapiErrorClass (qapi/error.json)
ERROR_CLASSES = frozenset(
    {"GenericError", "CommandNotFound", "DeviceNotActive", "DeviceNotFound", "KVMMissingCap"}
)
_EXTENSION = "__io.txgraph_"


def _json_ok(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_json_ok(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_ok(v) for k, v in value.items())
    return False


def _problem(tname: str, value: Any, path: str) -> str | None:
    """Why ``value`` is not a value of schema type ``tname`` (None when it is)."""
    t = qsd_schema().by_name.get(tname)
    if t is None:
        return f"{path}: type {tname!r} not in the schema"
    meta = t["meta-type"]
    if meta == "builtin":
        kind = t["json-type"]
        ok = {
            "string": lambda v: isinstance(v, str),
            "boolean": lambda v: isinstance(v, bool),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "null": lambda v: v is None,
            "value": _json_ok,
        }[kind](value)
        return None if ok else f"{path}: {type(value).__name__} {value!r:.60} is not {kind}"
    if meta == "enum":
        if value in t["values"]:
            return None
        return f"{path}: {value!r:.60} is not one of {tname}'s values"
    if meta == "array":
        if not isinstance(value, list):
            return f"{path}: {type(value).__name__} is not an array"
        for i, v in enumerate(value):
            found = _problem(t["element-type"], v, f"{path}[{i}]")
            if found:
                return found
        return None
    if meta == "alternate":
        tried = [_problem(m["type"], value, path) for m in t["members"]]
        return None if None in tried else f"{path}: fits no branch of an alternate ({tried[0]})"
    if meta == "object":
        return _object_problem(t, value, path)
    return f"{path}: a {meta} is not a value type"


def _object_problem(t: dict[str, Any], value: Any, path: str) -> str | None:
    if not isinstance(value, dict):
        return f"{path}: {type(value).__name__} is not an object"
    members = list(t.get("members", []))
    tag = t.get("tag")
    for variant in t.get("variants", []):
        if tag is not None and variant["case"] == value.get(tag):
            members += qsd_schema().by_name[variant["type"]].get("members", [])
    known = set()
    for m in members:
        name = m["name"]
        known.add(name)
        if name not in value:
            if "default" not in m:
                return f"{path}.{name}: missing (the type has no default for it)"
            continue
        found = _problem(m["type"], value[name], f"{path}.{name}")
        if found:
            return found
    extra = sorted(set(value) - known)
    return f"{path}.{extra[0]}: not a member of the type" if extra else None


@cache
def _ret_type(command: str) -> str | None:
    schema = qsd_schema()
    entry = schema.commands.get(command) or schema.ext_commands.get(command)
    return None if entry is None else str(entry["ret-type"])


def reply_problem(command: str, reply: Any) -> str | None:
    """Why ``reply`` to ``command`` is not a reply QEMU's dispatcher could give (None: it is).

    Reproduces the shape ``qmp_dispatch`` gives a reply and the output visitor's
    conformance to the command's ``ret-type``; a command the schema does not have
    can only be refused (``CommandNotFound``).
    """
    if not isinstance(reply, dict):
        return f"reply is a {type(reply).__name__}, not an object"
    keys = set(reply) - {"id"}
    if keys == {"error"}:
        err = reply["error"]
        if not isinstance(err, dict):
            return "error is not an object"
        if err.get("class") not in ERROR_CLASSES:
            return f"error class {err.get('class')!r} is not a QapiErrorClass"
        if not isinstance(err.get("desc"), str):
            return "error desc is not a string"
        extra = sorted(
            k for k in err if k not in ("class", "desc") and not k.startswith(_EXTENSION)
        )
        return f"error member {extra[0]!r} is not QMP's" if extra else None
    if keys != {"return"}:
        return f"reply members {sorted(keys)} are neither return nor error"
    ret = _ret_type(command)
    if ret is None:
        return f"{command!r} is not in the schema, yet it returned"
    return _problem(ret, reply["return"], "return")
