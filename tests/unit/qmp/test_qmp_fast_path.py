"""The QMP decoder's fast path (C json) and the exact QEMU lexer path give identical results.

Random byte streams — plain commands, the spellings where Python's json and
QEMU's grammar differ (``0e5``, ``NaN``, duplicate keys, single quotes,
escapes, non-ASCII, deep nesting, huge integers), junk, and messages cut at
random places across feeds — are decoded twice: with the fast path on and
with it off. The messages (values with their exact types, and parse errors
with QEMU's text) must be the same, in the same order.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from txgraph.qobject.decoder import JSONParseError, JSONStreamDecoder
from txgraph.qobject.fast import fast_messages

_PLAIN = [
    b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n1"}}',
    b'{"execute":"query-version","id":7}',
    b'{"execute": "x", "arguments": {"a": [1, -2, 3.5, 1e3, -0, 0.5e-2, true, false, null]}}',
    b'{"execute": "x", "arguments": {"big": 18446744073709551615, "bigger": 18446744073709551616}}',
    b'{"execute": "x", "arguments": {"neg": -9223372036854775808, "less": -9223372036854775809}}',
    b'{"a": {}, "b": [], "c": [[{}]]}',
    b"{}",
]
_TRICKY = [
    b'{"a": 0e5}',
    b'{"a": -0E+1}',
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"a": 1, "a": 2}',
    b"{'execute': 'x'}",
    b'{"a": "\\u00e9\\n"}',
    b'{"a": "\xc3\xa9"}',
    b'{"a": "\xc0\x80"}',
    b'{"a": "\\ud800"}',
    b'{"a": 01}',
    b'{"a": 1.}',
    b'{"a": .5}',
    b'{"a": tru}',
    b'{"a": truex}',
    b'{"a" 1}',
    b'{"a": [1,]}',
    b"{,}",
    b"}",
    b"]",
    b"[1, 2]",
    b"123",
    b'"str"',
    b'{"a": "tab\there"}',
    b'{"a": "\x7f"}',
    b"\x00",
    b"\xff",
    b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}",
    b"[" * 1100,
    b'{"k": 1' + b"0" * 30 + b"}",
]
_WS = [b"", b" ", b"\n", b"\r\n", b"\t", b"  \n"]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 9))
        if kind < 5:
            parts.append(draw(st.sampled_from(_PLAIN)))
        elif kind < 8:
            parts.append(draw(st.sampled_from(_TRICKY)))
        else:
            parts.append(draw(st.binary(max_size=12)))
        parts.append(draw(st.sampled_from(_WS)))
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return data, cuts


def _decode(data: bytes, cuts: list[int], fast: bool) -> list[str]:
    decoder = JSONStreamDecoder(fast=fast)
    out: list[Any] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        out += decoder.feed(data[prev:cut])
        prev = cut
    out += decoder.feed(b" ")  # ends a top-level scalar, as the next byte would
    # repr keeps the types apart (1 vs 1.0 vs True) and the key order
    return [repr(m) if isinstance(m, JSONParseError) else repr(_typed(m)) for m in out]


def _typed(v: Any) -> Any:
    if isinstance(v, dict):
        return [(k, _typed(x)) for k, x in v.items()]
    if isinstance(v, list):
        return [_typed(x) for x in v]
    return (type(v).__name__, v)


@given(streams())
def test_fast_path_and_qemu_lexer_agree(stream: tuple[bytes, list[int]]) -> None:
    data, cuts = stream
    assert _decode(data, cuts, fast=True) == _decode(data, cuts, fast=False)


def test_fast_path_takes_plain_commands_and_declines_the_rest() -> None:
    """The fast path really runs on plain input (or the property above proves nothing)."""
    line = _PLAIN[0] + b"\n"
    values, used = fast_messages(line * 3)
    assert used == len(line) * 3 and values == [json.loads(_PLAIN[0])] * 3
    for tricky in (
        b'{"a": 0e5}',
        b'{"a": NaN}',
        b'{"a": 1, "a": 2}',
        b"{'a': 1}",
        b'{"a": "\\n"}',
        b'{"a": "\xc3\xa9"}',
        b'{"a": 1',
    ):
        assert fast_messages(tricky) == ([], 0), tricky
    # a plain command, then one the fast path declines: it stops in front of it
    values, used = fast_messages(line + b'{"a": NaN}')
    assert values == [json.loads(_PLAIN[0])] and used == len(line)
