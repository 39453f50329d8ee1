"""The QObject JSON layer without recursion: QEMU 7.2's limits, lexing and deep values."""

from __future__ import annotations

import sys

import pytest

from txgraph.qobject import decoder
from txgraph.qobject.decoder import MAX_NESTING, JSONParseError, JSONStreamDecoder, parse_json_text
from txgraph.qobject.encoder import encode
from txgraph.qobject.lexer import MAX_TOKEN_SIZE, JSONLexer, Tok


def tokens(data: bytes) -> list[tuple[Tok, bytes]]:
    out: list[tuple[Tok, bytes]] = []
    lexer = JSONLexer(lambda kind, text: out.append((kind, text)))
    lexer.feed(data)
    return out


def test_zero_takes_no_exponent() -> None:
    assert tokens(b"0e5 ") == [(Tok.INTEGER, b"0"), (Tok.KEYWORD, b"e"), (Tok.INTEGER, b"5")]
    assert tokens(b"-0e-1 ") == [(Tok.INTEGER, b"-0"), (Tok.KEYWORD, b"e"), (Tok.INTEGER, b"-1")]
    # 'E' is no token start: an error, and recovery skips the '1' after it
    assert tokens(b"0E1 ") == [(Tok.INTEGER, b"0"), (Tok.ERROR, b"E")]
    assert tokens(b"0.5e3 1e+2 ") == [(Tok.FLOAT, b"0.5e3"), (Tok.FLOAT, b"1e+2")]
    assert tokens(b"1E+]") == [(Tok.ERROR, b"1E+]")]


def test_recovery_resyncs_on_every_structural_character() -> None:
    for sep in b"[]{}:,":
        assert tokens(b"@xy" + bytes([sep]))[1][1] == bytes([sep])
    assert tokens(b"@\t:") == [(Tok.ERROR, b"@"), (Tok.COLON, b":")]
    assert tokens(b"@ a \x01") == [(Tok.ERROR, b"@"), (Tok.ERROR, b"\x01")]


def test_nesting_limit_is_1024_and_deep_values_do_not_recurse() -> None:
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)  # far below the depth: any recursion would fail
    try:
        _nesting_checks()
    finally:
        sys.setrecursionlimit(old_limit)


def _nesting_checks() -> None:
    assert MAX_NESTING == 1024
    ok = JSONStreamDecoder().feed(b"[" * 1024 + b"]" * 1024)
    assert len(ok) == 1 and isinstance(ok[0], list)
    assert encode(ok[0]) == "[" * 1024 + "]" * 1024
    deep = JSONStreamDecoder().feed(b'{"a":' * 1024 + b"1" + b"}" * 1024)[0]
    assert encode(deep).count("{") == 1024
    over = JSONStreamDecoder().feed(b"[" * 1025)
    assert over == [JSONParseError("JSON nesting depth limit exceeded")]
    # json: filenames go through the same streamer (qobject_from_json), limit included
    assert encode(parse_json_text("[" * 1024 + "]" * 1024)).count("[") == 1024
    try:
        parse_json_text("[" * 1025 + "]" * 1025)
    except ValueError as err:
        assert str(err) == "JSON nesting depth limit exceeded"
    else:
        raise AssertionError("no nesting error")


def test_huge_integers_become_doubles_without_python_limits() -> None:
    assert JSONStreamDecoder().feed(b"9" * 5000 + b" ") == [float("inf")]
    assert JSONStreamDecoder().feed(b"18446744073709551616 ") == [18446744073709551616.0]
    assert JSONStreamDecoder().feed(b"-9223372036854775808 ") == [-(2**63)]


def test_a_token_over_64_mib_is_cut_as_qemu_cuts_it() -> None:
    out: list[tuple[Tok, int]] = []
    lexer = JSONLexer(lambda kind, text: out.append((kind, len(text))))
    lexer.feed(b'"' + b"x" * MAX_TOKEN_SIZE + b'x"')
    # the rest lexes from the start state: 'x' is a keyword, '"' opens a new string
    assert out == [(Tok.PARTIAL, MAX_TOKEN_SIZE + 1), (Tok.KEYWORD, 1)]
    # and the streamer answers the cut token with the size limit, even at top level
    big = JSONStreamDecoder().feed(b'"' + b"y" * (MAX_TOKEN_SIZE + 5) + b'" ')
    assert big[0] == JSONParseError("JSON token size limit exceeded")


def test_limits_are_checked_before_the_balance(monkeypatch: pytest.MonkeyPatch) -> None:
    """QSD 7.2 answers 2**21 + 1 tokens closing a message with the limit's error, not
    a parse (tests/differential/test_qmp_limits.py shows it at full size)."""
    monkeypatch.setattr(decoder, "MAX_TOKEN_COUNT", 5)
    assert JSONStreamDecoder().feed(b"[1,2]") == [[1, 2]]
    assert JSONStreamDecoder().feed(b"[1,2,3]") == [
        JSONParseError("JSON token count limit exceeded"),
        JSONParseError("JSON parse error, expecting value"),
    ]
    monkeypatch.setattr(decoder, "MAX_TOKEN_SIZE", 8)
    assert JSONStreamDecoder().feed(b'["abc"]') == [["abc"]]
    assert JSONStreamDecoder().feed(b'["abcd"]')[0] == JSONParseError(
        "JSON token size limit exceeded"
    )
