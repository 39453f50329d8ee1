"""QEMU's keyval syntax: ``key=value,...`` strings as nested dicts of strings.

Reproduces ``keyval_parse`` (util/keyval.c, QEMU 7.2), the parser behind
``-blockdev``, qemu-storage-daemon's ``--blockdev``/``--export``/``--monitor``/
``--nbd-server`` and ``--object`` (reference/qemu-options.md §8.1).

How keyval differs from QemuOpts (``-drive``, ``--chardev``; txgraph/drive/qemuopts.py):

* dotted keys build **nested objects**, and numeric fragments build **lists**
  (``children.0.driver=x``); QemuOpts keeps ``a.b`` as one flat key;
* every key fragment must be a QAPI name (or, after the first, a decimal
  index) of 1..127 characters: ``Invalid parameter 'a..b'``;
* there are no bare flags: ``server`` alone is ``Expected '=' after
  parameter 'server'`` (QemuOpts reads it as ``server=on`` with a warning),
  and ``help``/``?`` alone asks for help;
* only the *first* element may omit its key (the implied key, e.g. ``driver``
  for ``--blockdev``), and that bare value cannot contain ``=`` or ``,``;
* a key used both as a leaf and as an object, or a list with a gap, is an
  error instead of two independent entries;
* the values stay strings; the QAPI keyval visitor converts them later
  (:mod:`txgraph.qmp.keyval_visit`).

Common to both: ``,,`` is a literal comma, a trailing comma is allowed, and
for the same leaf the last value wins.
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import QAPIError
from txgraph.qobject.encoder import qdict_order

__all__ = ["KeyvalHelp", "keyval_parse", "parse_qapi_name"]

#: key fragments are at most this long (QEMU's ``key_in_cur[128]`` buffer)
FRAGMENT_MAX = 127

_INT_MAX = 2**31 - 1


class KeyvalHelp(QAPIError):
    """``help`` (or ``?``) where a ``key=value`` was expected; QSD has no help there."""

    def __init__(self) -> None:
        super().__init__("Help is not available for this option")


def _isalpha(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z"


def _isalnum(c: str) -> bool:
    return _isalpha(c) or "0" <= c <= "9"


def parse_qapi_name(text: str, pos: int = 0) -> int:
    """``parse_qapi_name(str, false)``: the length of the QAPI name at ``pos``, or -1.

    A name is a letter followed by letters, digits, ``-`` and ``_``, optionally
    after a downstream ``__RFQDN_`` prefix (whose characters may include ``.``).
    """
    p = pos
    n = len(text)
    if p < n and text[p] == "_":
        p += 1
        if p >= n or text[p] != "_":
            return -1
        p += 1
        while p < n and (_isalnum(text[p]) or text[p] in "-."):
            p += 1
        if p >= n or text[p] != "_":
            return -1
        p += 1
    if p >= n or not _isalpha(text[p]):
        return -1
    p += 1
    while p < n and (_isalnum(text[p]) or text[p] in "-_"):
        p += 1
    return p - pos


def _index_prefix(text: str, pos: int) -> int:
    """Length of the run of decimal digits at ``pos`` (``key_to_index`` with an end)."""
    p = pos
    while p < len(text) and "0" <= text[p] <= "9":
        p += 1
    return p - pos


def _key_to_index(key: str) -> int:
    """``key_to_index(key, NULL)``: the list index ``key`` denotes, else -1 (capped at INT_MAX)."""
    if not key or not key.isascii() or not key.isdigit():
        return -1
    return min(int(key), _INT_MAX)


def _put(cur: dict[str, Any], key: str, value: str | None, shown: str) -> Any:
    """``keyval_parse_put``: make ``cur[key]`` a dict (``value`` None) or the string ``value``."""
    old = cur.get(key)
    if old is not None:
        if isinstance(old, str) != (value is not None):
            raise QAPIError(f"Parameters '{shown}.*' used inconsistently")
        if value is None:
            return old
    new: Any = {} if value is None else value
    cur[key] = new  # a replaced key keeps its place, as qdict_put_obj's does
    return new


def _is_help(fragment: str) -> bool:
    return fragment in ("help", "?")


def _skip_comma(params: str, pos: int) -> int:
    return pos + 1 if pos < len(params) and params[pos] == "," else pos


def _parse_one(
    root: dict[str, Any], params: str, pos: int, implied_key: str | None, seen_help: list[bool]
) -> int:
    """``keyval_parse_one``: one ``key=value`` at ``pos``; return where the next one starts."""
    length = 0
    while pos + length < len(params) and params[pos + length] not in "=,":
        length += 1
    bare = length > 0 and (pos + length >= len(params) or params[pos + length] != "=")
    if bare and _is_help(params[pos : pos + length]):
        seen_help.append(True)
        return _skip_comma(params, pos + length)
    if implied_key and bare:
        # the bare value ends at the first ',' or '=' (no ',,' escape in it)
        _put(root, implied_key, params[pos : pos + length], implied_key)
        return _skip_comma(params, pos + length)
    key, start, key_end = params, pos, pos + length
    cur = root
    s = start
    in_cur = ""
    while True:
        digits = _index_prefix(key, s) if s != start else 0
        if digits:
            flen = digits
        else:
            flen = max(parse_qapi_name(key, s), 0)
        if not flen or (s + flen < key_end and key[s + flen] != "."):
            raise QAPIError(f"Invalid parameter '{key[start:key_end]}'")
        if flen > FRAGMENT_MAX:
            fragment = " fragment" if s != start or s + flen != key_end else ""
            raise QAPIError(f"Parameter{fragment} '{key[s : s + flen]}' is too long")
        if s != start:
            cur = _put(cur, in_cur, None, key[start : s - 1])
        in_cur = key[s : s + flen]
        s += flen
        if s >= key_end or key[s] != ".":
            break
        s += 1
    if s >= len(params) or params[s] != "=":
        raise QAPIError(f"Expected '=' after parameter '{key[start:s]}'")
    s += 1
    value: list[str] = []
    while s < len(params):
        if params[s] == ",":
            s += 1
            if s >= len(params) or params[s] != ",":
                break
        value.append(params[s])
        s += 1
    _put(cur, in_cur, "".join(value), key[start:key_end])
    return s


def _listify(cur: dict[str, Any], path: list[str]) -> Any:
    """``keyval_listify``: dicts whose keys are all indexes become lists, densely."""
    order = qdict_order(cur)
    has_index = has_member = False
    for key in order:
        if _key_to_index(key) >= 0:
            has_index = True
        else:
            has_member = True
        value = cur[key]
        if isinstance(value, dict):
            cur[key] = _listify(value, [*path, key])
    prefix = "".join(f"{p}." for p in path)
    if has_index and has_member:
        raise QAPIError(f"Parameters '{prefix}*' used inconsistently")
    if not has_index:
        return cur
    # QEMU sizes its array by the entry count: an index beyond it is never stored,
    # so the first missing index is reported; equal indexes ("1", "01") overwrite.
    slots: list[Any] = [None] * (len(cur) + 1)
    max_index = -1
    for key in order:
        index = _key_to_index(key)
        max_index = max(max_index, index)
        if index < len(cur):
            slots[index] = cur[key]
    out = []
    for i in range(min(len(slots), max_index + 1)):
        if slots[i] is None:
            raise QAPIError(f"Parameter '{prefix}{i}' missing")
        out.append(slots[i])
    return out


def keyval_parse(params: str, implied_key: str | None = None) -> dict[str, Any]:
    """``keyval_parse(params, implied_key, NULL)``: the nested dict ``params`` denotes.

    Leaves are strings; dicts keep their keys in insertion order (what QEMU's
    QDict iteration is derived from). ``help`` raises :class:`KeyvalHelp`.

    :raise QAPIError: QEMU's message for a malformed string.
    """
    root: dict[str, Any] = {}
    seen_help: list[bool] = []
    pos = 0
    while pos < len(params):
        pos = _parse_one(root, params, pos, implied_key, seen_help)
        implied_key = None
    if seen_help:  # after every syntax error, before the list checks (keyval_parse)
        raise KeyvalHelp()
    _listify(root, [])  # the root is an object, never a list (its first key is a name)
    return root
