"""The same raw bytes on the QMP socket of qemu-storage-daemon 7.2 and of txgraph, same replies.

Each case opens a fresh connection on both peers (QEMU resets its JSON parser
per connection), optionally negotiates, sends the chunks one by one, then a
sentinel, and compares every line that comes back byte for byte. Only the
``package`` string of ``query-version`` and the greeting's capability list
(QSD offers ``oob``, txgraph offers nothing because it has no exec-oob) differ
by design and are normalised.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.qmp_server import ServerThread
from tests.support.qsd import QSD

pytestmark = pytest.mark.qsd

SENTINEL = b'{"execute": "qmp_capabilities", "id": "__end__"}'


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(QSD socket, txgraph socket), shared by the module: every exchange opens its own
    connection to QSD's listening monitor ``qmp1`` (its own connection, on ``qmp0``, is
    closed: nothing reads it)."""
    qsd = QSD(listen=True)
    qsd._file.close()
    qsd.sock.close()
    txg = ServerThread(str(tmp_path_factory.mktemp("qmp") / "txgraph.sock"))
    yield qsd.listen_path, txg.path
    txg.stop()
    qsd.close()


def normalise(line: bytes) -> bytes:
    return re.sub(rb'"package": "[^"]*"', b'"package": "*"', line)


def exchange(
    path: str, chunks: list[bytes], negotiate: bool = True, quiet: float = 30.0
) -> tuple[bytes, list[bytes]]:
    """Greeting and every reply line to ``chunks`` (+ the sentinel), on a fresh connection.

    Reading ends at the sentinel's reply; ``quiet`` (the longest wait for more
    output) only matters for a case whose open message swallows the sentinel.
    """
    deadline = time.monotonic() + 10
    while True:  # QSD accepts the next client only once it noticed the last one left
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.settimeout(2)
        buf = b""
        try:
            while b"\r\n" not in buf:
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError
                buf += data
            break
        except (TimeoutError, ConnectionError):
            sock.close()
            assert time.monotonic() < deadline, "no greeting"
    greeting, buf = buf.split(b"\r\n", 1)
    lines: list[bytes] = []
    if negotiate:
        sock.sendall(b'{"execute": "qmp_capabilities"}')
    for chunk in chunks:
        sock.sendall(chunk)
        time.sleep(0.01)  # keep the chunks apart on the wire
    sock.sendall(SENTINEL)
    sock.settimeout(quiet)
    try:
        while b'"__end__"' not in buf:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
    except TimeoutError:
        pass
    sock.close()
    lines = [normalise(x) for x in buf.split(b"\r\n") if x]
    if negotiate:
        assert lines and lines[0] == b'{"return": {}}', lines
        lines = lines[1:]
    return greeting, lines


def test_greeting_shape(peers: tuple[str, str]) -> None:
    qsd_greeting, _ = exchange(peers[0], [], negotiate=False)
    txg_greeting, _ = exchange(peers[1], [], negotiate=False)
    assert qsd_greeting.startswith(
        b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": '
    )
    for raw in (qsd_greeting, txg_greeting):
        greeting = json.loads(raw)
        assert list(greeting) == ["QMP"] and list(greeting["QMP"]) == ["version", "capabilities"]
        assert isinstance(greeting["QMP"]["capabilities"], list)
    assert json.loads(txg_greeting)["QMP"]["capabilities"] == []
    assert normalise(qsd_greeting).replace(b'["oob"]', b"[]") == normalise(txg_greeting)


IDS = [
    b"1",
    b"-7",
    b"0",
    b"-0",
    b"9223372036854775807",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.1",
    b"-0.0",
    b"1e5",
    b"1E400",
    b"1.5e-320",
    b'"abc"',
    b'"\\u00e9\\ud83d\\ude00\\n\\"\\\\/\\u0000"',
    '"\u00e9\U0001f600\x7f"'.encode(),
    b"'single \\' \"quoted\"'",
    b"true",
    b"false",
    b"null",
    b"[]",
    b"{}",
    b'[1, "a", [null], {"k": 2}]',
    b'{"z": 1, "a": {"y": [1, 2], "b": null}, "micro": 0, "minor": 1, "major": 2}',
]


@pytest.mark.parametrize("ident", IDS, ids=[i.decode("utf-8", "replace") for i in IDS])
def test_id_echo(peers: tuple[str, str], ident: bytes) -> None:
    chunks = [
        b'{"execute": "no-such-command", "id": ' + ident + b"}",
        b'{"id": ' + ident + b', "execute": "query-version"}',
    ]
    assert exchange(peers[0], chunks)[1] == exchange(peers[1], chunks)[1]


CASES: dict[str, tuple[bool, list[bytes]]] = {
    # capabilities negotiation
    "command-before-negotiation": (False, [b'{"execute": "query-version", "id": 1}']),
    "unknown-before-negotiation": (False, [b'{"execute": "nope"}']),
    "bad-message-before-negotiation": (False, [b'{"id": 2}', b"[]", b'{"execute": 1}']),
    "caps-bad-enable": (
        False,
        [b'{"execute": "qmp_capabilities", "arguments": {"enable": ["x"]}}'],
    ),
    "caps-bad-argument": (False, [b'{"execute": "qmp_capabilities", "arguments": {"q": 1}}']),
    "caps-enable-not-list": (
        False,
        [b'{"execute": "qmp_capabilities", "arguments": {"enable": 1}}'],
    ),
    "parse-error-before-negotiation": (False, [b'{"a" 1}', b'{"execute": "qmp_capabilities"}']),
    "caps-twice": (
        True,
        [
            b'{"execute": "qmp_capabilities", "id": "again"}',
            b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
        ],
    ),
    # message-level checks (qmp_dispatch)
    "not-an-object": (True, [b"[]", b'"s"', b"1 ", b"true ", b"null "]),
    "lacks-execute": (True, [b"{}", b'{"arguments": {}, "id": 5}']),
    "execute-not-string": (True, [b'{"execute": 1}', b'{"execute": null, "id": []}']),
    "arguments-not-object": (
        True,
        [
            b'{"execute": "query-version", "arguments": []}',
            b'{"execute": "query-version", "arguments": null, "id": "a"}',
        ],
    ),
    "unexpected-member": (
        True,
        [b'{"execute": "query-version", "foo": 1}', b'{"id": 7, "execute": "nope", "zz": 1}'],
    ),
    "exec-oob": (
        True,
        [
            b'{"exec-oob": "query-version"}',
            b'{"execute": "query-version", "exec-oob": "x", "id": 1}',
        ],
    ),
    "several-problems": (
        True,
        [
            b'{"foo": 1, "execute": 1}',
            b'{"execute": 1, "foo": 1}',
            b'{"arguments": 1, "bar": 2}',
            b'{"control": 1, "arguments": 3}',
        ],
    ),
    "unknown-command": (True, [b'{"execute": "no-such-command"}', b'{"execute": ""}']),
    "unexpected-argument": (True, [b'{"execute": "query-version", "arguments": {"x": 1}}']),
    # framing
    "no-delimiter": (True, [b'{"execute": "nope1"}{"execute": "nope2"}[]{"execute": "nope3"}']),
    "fragmented": (
        True,
        [b'{"exec', b'ute": "no', b'pe", "id": [1', b", 2]}", b'{"execute"', b': "x"}'],
    ),
    "braces-in-strings": (True, [b'{"execute": "a}b{c", "id": "]["}']),
    "single-quotes": (True, [b"{'execute': 'nope', 'id': 'it\\'s \"x\"'}"]),
    "whitespace": (True, [b' \t\r\n{ "execute" : "nope" , "id" : 1 }\r\n']),
    # parse errors (json-parser.c)
    "missing-colon": (True, [b'{"a" 1}']),
    "key-not-string": (True, [b"{1:2}"]),
    "trailing-comma": (True, [b'{"a":1,}', b"[1,]"]),
    "missing-value": (True, [b'{"a":}']),
    "separator-dict": (True, [b'{"a":1 "b":2}']),
    "separator-list": (True, [b"[1 2]"]),
    "duplicate-key": (True, [b'{"execute":"query-version", "id": "dup", "id": 2}']),
    "stray-close": (True, [b"}", b"]", b'{"execute": "nope"}]']),
    "mismatched": (True, [b"{]", b"[}", b'{"a":1]', b'{"a":[}]']),
    "bad-keyword": (True, [b'{"execute": "nope", "id": tru}', b"nul "]),
    "bad-escape": (True, [b"'\\q'", b'"\\x"']),
    "bad-unicode-escape": (
        True,
        [b'"\\u12"', b'"\\ud800"', b'"\\ud83dx"', b'"\\ud83d\\u0041"', b'"\\uffff"'],
    ),
    "bad-utf8": (
        True,
        [
            b'"\xc3"',
            b'"\xed\xa0\x80"',
            b'"\xef\xbf\xbf"',
            b'"\x80abc"',
            b'"\xe2\x82x"',
            b'"\xf4\x90\x80\x80"',
        ],
    ),
    "modified-utf8-nul": (True, [b'{"execute": "nope", "id": "\xc0\x80"}']),
    # lexer errors and recovery (json-lexer.c)
    "stray-bytes": (True, [b"@", b"\n", b"\xff", b"\n", b"\x00", b"\n", b"\xe2\x82\xac"]),
    "bad-numbers": (
        True,
        [
            b'{"execute":"nope","id":01}',
            b'{"execute":"nope","id":-}',
            b'{"execute":"nope","id":1.}',
            b'{"execute":"nope","id":1e}',
        ],
    ),
    "control-char-in-string": (
        True,
        [b'{"execute":"nope","id":"\t"}', b'{"execute":"nope","id":"\xc3\xa9\x01/x"}'],
    ),
    "recovery-skips-to-structural": (True, [b'@abc "q" nul {"execute": "nope"}']),
    "recovery-at-control-char": (True, [b'@abc\x01{"execute": "nope"}']),
    "recovery-at-0xfe": (True, [b"@x\xfe{}"]),
    # recovery resynchronises on ':' and ',' too (json-lexer.c IN_RECOVERY)
    "recovery-at-colon": (True, [b'@:{"execute": "nope"}']),
    "recovery-at-comma": (True, [b'@,{"execute": "nope"}']),
    "recovery-inside-object": (True, [b'{"execute": @ , "id": 1}', b'{"a": x: 1}']),
    "recovery-tab-is-skipped": (True, [b"@\t:[]"]),
    # '0' takes no exponent: 0e5 is 0, e, 5 (json-lexer.c IN_ZERO)
    "zero-exponent": (True, [b'{"execute":"nope","id":0e5}', b'{"execute":"nope","id":[0e]}']),
    "exponent-forms": (
        True,
        [
            b'{"execute":"nope","id":[1E+]}',
            b'{"execute":"nope","id":[-0e-1]}',
            b'{"execute":"nope","id":[0.5e3, 0E1]}',
            b'{"execute":"nope","id":[1e+5, 2E-3, -1.5E+2]}',
        ],
    ),
    "huge-numbers": (
        True,
        [
            b'{"execute":"nope","id":' + b"9" * 5000 + b"}",
            b'{"execute":"nope","id":-' + b"9" * 400 + b"}",
            b'{"execute":"nope","id":1' + b"0" * 30 + b".5e-7}",
        ],
    ),
    # nesting limit: MAX_NESTING 1024 open braces + brackets (json-streamer.c)
    **{f"nesting-arrays-{d}": (True, [b"[" * d + b"]" * d]) for d in (1023, 1024, 1025)},
    **{
        f"nesting-objects-{d}": (True, [b'{"a":' * d + b"1" + b"}" * d]) for d in (1023, 1024, 1025)
    },
    **{
        f"nesting-mixed-{d}": (True, [b'{"a":[' * (d // 2) + b"1" + b"]}" * (d // 2)])
        for d in (1024, 1026)
    },
    # arguments as deep as the streamer allows reach the QAPI visitor and the open path
    **{
        f"deep-blockdev-options-{d}": (
            True,
            [
                b'{"execute":"blockdev-add","arguments":'
                + b'{"driver":"raw","file":' * d
                + b'{"driver":"null-co"}'
                + b"}" * d
                + b"}"
            ],
        )
        for d in (300, 600)
    },
    "deep-blockdev-reference": (
        True,
        [
            b'{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r","file":'
            + b'{"driver":"raw","file":' * 300
            + b'"nope"'
            + b"}" * 301
            + b"}"
        ],
    ),
    **{
        f"nesting-id-{d}": (True, [b'{"execute":"nope","id":' + b"[" * d + b"]" * d + b"}"])
        for d in (1022, 1023, 1024)
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_replies(peers: tuple[str, str], case: str) -> None:
    negotiate, chunks = CASES[case]
    expected = exchange(peers[0], chunks, negotiate)[1]
    got = exchange(peers[1], chunks, negotiate)[1]
    assert got == expected


def test_unbalanced_input_swallows_what_follows(peers: tuple[str, str]) -> None:
    chunks = [b"[[[", b'{"execute": "nope"}']
    expected = exchange(peers[0], chunks, quiet=0.3)[1]
    assert expected == []
    assert exchange(peers[1], chunks, quiet=0.3)[1] == expected
