"""QEMU's keyval input visitor: typed QAPI values from :func:`keyval_parse`'s strings.

Reproduces ``qobject_input_visitor_new_keyval`` (qapi/qobject-input-visitor.c,
QEMU 7.2) and ``qobject_input_visitor_new_str``, which picks JSON for an
argument starting with ``{`` and keyval otherwise. Compared with the QMP
visitor (:mod:`txgraph.qmp.qapi`), the keyval one

* converts each string leaf to the type the schema expects:
  integers with ``qemu_strtoi64``/``qemu_strtou64`` in base 0 (``0x10``,
  ``-1``) -> "Parameter 'x' expects integer", booleans with
  ``qapi_bool_parse`` -> "expects 'on' or 'off'", numbers with
  ``qemu_strtod_finite`` -> "expects number";
* refuses an object where a scalar belongs: "Parameters 'x.*' are unexpected";
* names list elements ``a.0`` instead of ``a[0]`` in its messages.

Everything else (member order, "is missing", "is unexpected", enum values,
integer widths, alternates) is the QMP visitor's, which this one extends.
"""

from __future__ import annotations

import math
import re
from typing import Any

from txgraph.errors import QAPIError
from txgraph.qmp.qapi import ArgumentVisitor, qsd_schema
from txgraph.qobject.decoder import JSONStreamDecoder
from txgraph.qobject.keyval import keyval_parse
from txgraph.qobject.parser import JSONParseError

__all__ = [
    "MONITOR_OPTIONS",
    "NBD_SERVER_OPTIONS",
    "parse_str",
    "visit_command_arguments",
    "visit_str",
]

_Path = tuple[str | int, ...]

#: ``NbdServerOptions`` and ``MonitorOptions`` are not reachable from QSD's QMP
#: schema, so they are written here as the schema would list them (qapi/block-export.json,
#: qapi/control.json); the nested ``SocketAddress`` is the schema's own (blockdev nbd's server).
NBD_SERVER_OPTIONS = "x-qsd-NbdServerOptions"
MONITOR_OPTIONS = "x-qsd-MonitorOptions"
_MONITOR_MODE = "x-qsd-MonitorMode"

_TRUE = ("on", "yes", "true", "y")
_FALSE = ("off", "no", "false", "n")
_C_SPACE = " \t\n\v\f\r"
_FLOAT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
    r"|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?"
    r"|inf(?:inity)?|nan)",
    re.IGNORECASE,
)


def _synthetic() -> dict[str, dict[str, Any]]:
    schema = qsd_schema()
    blockdev = schema.by_name[schema.commands["blockdev-add"]["arg-type"]]
    nbd = next(v["type"] for v in blockdev["variants"] if v["case"] == "nbd")
    socket_address = next(
        m["type"] for m in schema.by_name[nbd]["members"] if m["name"] == "server"
    )
    return {
        NBD_SERVER_OPTIONS: {
            "name": NBD_SERVER_OPTIONS,
            "meta-type": "object",
            "members": [
                {"name": "addr", "type": socket_address},
                {"name": "tls-creds", "default": None, "type": "str"},
                {"name": "tls-authz", "default": None, "type": "str"},
                {"name": "max-connections", "default": None, "type": "int"},
            ],
        },
        MONITOR_OPTIONS: {
            "name": MONITOR_OPTIONS,
            "meta-type": "object",
            "members": [
                {"name": "id", "default": None, "type": "str"},
                {"name": "mode", "default": None, "type": _MONITOR_MODE},
                {"name": "pretty", "default": None, "type": "bool"},
                {"name": "chardev", "type": "str"},
            ],
        },
        _MONITOR_MODE: {
            "name": _MONITOR_MODE,
            "meta-type": "enum",
            "values": ["readline", "control"],
        },
    }


class _ExtendedSchema:
    """QSD's schema plus the two command-line-only types (read-only, shared)."""

    def __init__(self) -> None:
        base = qsd_schema()
        self.by_name = {**base.by_name, **_synthetic()}
        self.commands = base.commands
        self.alternate_names = base.alternate_names
        self.int_kinds = {**base.int_kinds, NBD_SERVER_OPTIONS: {"max-connections": "uint32"}}


_EXTENDED: list[_ExtendedSchema] = []


def _extended() -> _ExtendedSchema:
    if not _EXTENDED:
        _EXTENDED.append(_ExtendedSchema())
    return _EXTENDED[0]


def _render(path: _Path) -> str:
    """``full_name`` in keyval mode: list elements are ``.N`` too."""
    return ".".join(str(seg) for seg in path)


def _strtoint(text: str) -> int | None:
    """``strtoll``/``strtoull`` with base 0 over the whole string (``qemu_strto[iu]64``)."""
    body = text.lstrip(_C_SPACE)
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", body):
        return sign * int(body, 0)
    if re.fullmatch(r"0[0-7]*", body):
        return sign * int(body, 8)
    if re.fullmatch(r"[1-9][0-9]*", body):
        return sign * int(body)
    return None


def _strtod(text: str) -> float | None:
    """``qemu_strtod_finite``: a C floating-point literal, finite."""
    body = text.lstrip(_C_SPACE)
    if not _FLOAT.fullmatch(body):
        return None
    low = body.lower().lstrip("+-")
    value = float.fromhex(body) if low.startswith("0x") else float(body)
    return value if math.isfinite(value) else None


class KeyvalVisitor(ArgumentVisitor):
    """One walk of keyval strings against the schema (the keyval input visitor)."""

    def __init__(self) -> None:
        super().__init__(_extended())  # type: ignore[arg-type]

    def type_error(self, path: _Path, expected: str) -> QAPIError:
        return QAPIError(f"Invalid parameter type for '{_render(path)}', expected: {expected}")

    def _scalar(self, value: Any, path: _Path) -> str:
        """``qobject_input_get_keyval``: the string at ``path``."""
        if isinstance(value, (dict, list)):
            raise QAPIError(f"Parameters '{_render(path)}.*' are unexpected")
        if not isinstance(value, str):
            raise self.type_error(path, "string")
        return value

    def visit(self, tname: str, value: Any, path: _Path, int_kind: str = "int64") -> Any:
        t = self.schema.by_name[tname]
        if t["meta-type"] == "enum":
            self._scalar(value, path)
        return super().visit(tname, value, path, int_kind)

    def visit_builtin(self, json_type: str, value: Any, path: _Path, int_kind: str) -> Any:
        if json_type == "value":
            return value
        text = self._scalar(value, path)
        if json_type == "int":
            unsigned = int_kind.startswith("uint") or int_kind == "size"
            number = _strtoint(text)
            if number is None or not (
                -(2**64) < number < 2**64 if unsigned else -(2**63) <= number < 2**63
            ):
                raise QAPIError(f"Parameter '{_render(path)}' expects integer")
            if unsigned:
                number %= 2**64  # strtoull wraps a negative value
            return self.visit_int(number, path, int_kind)
        if json_type == "boolean":
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise QAPIError(f"Parameter '{_render(path)}' expects 'on' or 'off'")
        if json_type == "number":
            parsed = _strtod(text)
            if parsed is None:
                raise QAPIError(f"Parameter '{_render(path)}' expects number")
            return parsed
        if json_type == "null":
            raise self.type_error(path, "null")
        return text

    def visit_object(self, tname: str, value: dict[str, Any], path: _Path) -> dict[str, Any]:
        try:
            return super().visit_object(tname, value, path)
        except QAPIError as err:
            raise _keyval_names(err, path) from None


def _keyval_names(err: QAPIError, path: _Path) -> QAPIError:
    """The QMP visitor's "missing"/"unexpected" texts with keyval's ``.N`` element names.

    Only those two texts render a path with list elements; a member name never
    contains ``[`` (QAPI names cannot), so rewriting inside their quotes is exact.
    """
    match = re.fullmatch(r"Parameter '(.*)' (is missing|is unexpected)", err.desc)
    if match is None:
        return err
    name = re.sub(r"\[(\d+)\]", r".\1", match[1])
    return QAPIError(f"Parameter '{name}' {match[2]}")


def parse_str(text: str, implied_key: str | None) -> tuple[dict[str, Any], bool]:
    """``qobject_input_visitor_new_str``: (the parsed object, is it keyval?).

    :raise QAPIError: QEMU's JSON or keyval syntax message.
    """
    if not text.startswith("{"):
        return keyval_parse(text, implied_key), True
    decoder = JSONStreamDecoder()
    results = decoder.feed(text.encode("utf-8", "surrogatepass") + b" ")
    if not results:
        raise QAPIError("JSON parse error, premature EOI")
    if isinstance(results[0], JSONParseError):
        raise QAPIError(results[0].desc)
    if len(results) > 1:
        raise QAPIError("Expecting at most one JSON value")
    value = results[0]
    assert isinstance(value, dict)  # it starts with "{" (QEMU asserts the same)
    return value, False


def visit_str(type_name: str, text: str, implied_key: str | None) -> dict[str, Any]:
    """Parse ``text`` (JSON or keyval) and visit it as QAPI type ``type_name``."""
    value, keyval = parse_str(text, implied_key)
    visitor = KeyvalVisitor() if keyval else ArgumentVisitor(_extended())  # type: ignore[arg-type]
    return visitor.visit_object(type_name, value, ())


def visit_command_arguments(command: str, text: str, implied_key: str | None) -> dict[str, Any]:
    """:func:`visit_str` for the (boxed) argument type of QMP ``command``."""
    return visit_str(qsd_schema().commands[command]["arg-type"], text, implied_key)
