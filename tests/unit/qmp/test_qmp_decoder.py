"""The streaming decoder splits, parses and recovers exactly as QEMU's json-lexer/streamer/parser."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from txgraph.qobject.decoder import JSONParseError, JSONStreamDecoder


def feed_all(*chunks: bytes) -> list[Any]:
    decoder = JSONStreamDecoder()
    out: list[Any] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


def err(text: str) -> JSONParseError:
    return JSONParseError(f"JSON parse error, {text}")


def test_messages_need_no_delimiter() -> None:
    assert feed_all(b'{"execute":"a"}{"execute":"b"}[1]') == [
        {"execute": "a"},
        {"execute": "b"},
        [1],
    ]


def test_fragmented_input_is_reassembled_at_any_byte() -> None:
    raw = b'{"execute": "x", "arguments": {"s": "a{b}[c]", "n": [1, -2.5e3, true, null]}}'
    for cut in range(1, len(raw)):
        assert feed_all(raw[:cut], raw[cut:]) == [
            {"execute": "x", "arguments": {"s": "a{b}[c]", "n": [1, -2500.0, True, None]}}
        ]


def test_byte_by_byte() -> None:
    raw = b'{"a": "}"}{"b": \'{\'}'
    assert feed_all(*(bytes([c]) for c in raw)) == [{"a": "}"}, {"b": "{"}]


def test_top_level_scalar_ends_only_at_the_next_byte() -> None:
    decoder = JSONStreamDecoder()
    assert decoder.feed(b"12") == []
    assert decoder.feed(b" ") == [12]


def test_single_quoted_strings_and_escapes() -> None:
    assert feed_all(b"{'a': 'x\"y\\'z', \"b\": \"\\u00e9\\ud83d\\ude00\\/\"}") == [
        {"a": "x\"y'z", "b": "\u00e9\U0001f600/"}
    ]


def test_numbers_take_qnum_types() -> None:
    (msg,) = feed_all(
        b"[9223372036854775807, 18446744073709551615, 18446744073709551616,"
        b" -9223372036854775809, -0, 1e5, 1e400]"
    )
    assert msg[:2] == [2**63 - 1, 2**64 - 1]
    assert all(isinstance(v, float) for v in msg[2:4]) and msg[4] == 0
    assert msg[5:] == [100000.0, float("inf")]


def test_modified_utf8_nul_is_accepted() -> None:
    assert feed_all(b'["\xc0\x80", "\\u0000"]') == [["\0", "\0"]]


def test_parser_errors() -> None:
    assert feed_all(b'{"a" 1}') == [err("missing : in object pair")]
    assert feed_all(b"{1:2}") == [err("key is not a string in object")]
    assert feed_all(b'{"a":1,}') == [err("expecting value")]
    assert feed_all(b'{"a":1 "b":2}') == [err("expected separator in dict")]
    assert feed_all(b"[1 2]") == [err("expected separator in list")]
    assert feed_all(b'{"a":1,"a":2}') == [err("duplicate key")]
    assert feed_all(b"[tru]") == [err("invalid keyword 'tru'")]
    assert feed_all(b"}") == [err("expecting value")]


def test_string_errors() -> None:
    assert feed_all(b'"\\q"') == [err("invalid escape sequence in string")]
    assert feed_all(b'"\\u12"') == [err('\\u12" is not a valid Unicode character')]
    assert feed_all(b'"\\ud83dx"') == [err("\\ud83d is not a valid Unicode character")]
    assert feed_all(b'"\\uffff"') == [err("\\uffff is not a valid Unicode character")]
    for bad in (b'"\xc3"', b'"\xed\xa0\x80"', b'"\xef\xbf\xbf"', b'"\x80"', b'"\xf4\x90\x80\x80"'):
        assert feed_all(bad) == [err("invalid UTF-8 sequence in string")], bad


def test_lexer_error_includes_the_offending_byte_and_recovers() -> None:
    assert feed_all(b"01 ") == [err("stray '01'")]
    assert feed_all(b"[1.}") == [err("stray '1.}'")]
    assert feed_all(b'{"a":-}') == [err("stray '-}'")]
    assert feed_all(b"\xff") == [err("stray '\ufffd'")]
    assert feed_all(b"\x00") == [err("stray ''")]


def test_recovery_skips_to_a_structural_or_control_byte() -> None:
    # After '@' everything up to '{' is skipped, quotes and keywords included.
    assert feed_all(b'@abc "q" nul {"execute":"x"}') == [err("stray '@'"), {"execute": "x"}]
    # A control character also resynchronises, and is itself a stray token.
    assert feed_all(b"@abc\x01{}") == [err("stray '@'"), err("stray '\x01'"), {}]


def test_error_inside_a_message_drops_it_and_the_closing_brace_is_stray() -> None:
    assert feed_all(b'{"execute":"x","id":"\t"}') == [err("stray '\"\t'"), err("expecting value")]


def test_unbalanced_input_waits() -> None:
    decoder = JSONStreamDecoder()
    assert decoder.feed(b'{"a":[}') == []
    assert decoder.feed(b"]") == [err("expecting value")]


def test_nesting_limit() -> None:
    out = feed_all(b"[" * 1025)
    assert out == [JSONParseError("JSON nesting depth limit exceeded")]


# QEMU refuses noncharacters (U+FDD0..U+FDEF, U+xFFFE/U+xFFFF) even when escaped.
_chars = st.characters(blacklist_categories=("Cs",)).filter(
    lambda c: not (0xFDD0 <= ord(c) <= 0xFDEF or ord(c) & 0xFFFE == 0xFFFE)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(_chars),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(_chars, max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)


@given(
    st.lists(st.dictionaries(st.text(_chars, max_size=5), json_values, max_size=4), max_size=4),
    st.data(),
)
def test_any_fragmentation_of_a_stream_decodes_the_same(
    messages: list[Any], data: st.DataObject
) -> None:
    import json

    raw = b"".join(json.dumps(m).encode() for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
    assert feed_all(*chunks) == messages
