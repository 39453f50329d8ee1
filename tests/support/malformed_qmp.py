"""A seeded generator of malformed and odd QMP input, for differential runs and fuzzers.

``cases(seed, n)`` yields ``n`` byte strings; each is what a hostile or buggy
client might write to a QMP socket after negotiation: truncated JSON, bad
escapes, bad UTF-8, deep nesting, huge numbers, stray tokens and bytes,
messages without ``execute``, extra members, ids of every type, ``exec-oob``,
unknown commands and real commands with wrong or odd arguments. The same seed
gives the same cases, so a divergence can be replayed with ``case(seed, i)``.

The generator is a pure function of a ``random.Random``; a fuzzer can drive
:func:`one_case` with its own source of randomness.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CATEGORIES", "case", "cases", "one_case"]

#: Real commands; their replies do not depend on the peer's directory or timing.
COMMANDS = (
    "query-version",
    "query-named-block-nodes",
    "query-block",
    "query-block-exports",
    "blockdev-add",
    "blockdev-del",
    "blockdev-reopen",
    "blockdev-snapshot",
    "blockdev-snapshot-sync",
    "transaction",
    "object-add",
    "object-del",
    "nbd-server-stop",
    "block-export-del",
    "qmp_capabilities",
    "x-debug-query-block-graph",
    "x-blockdev-change",
)
#: Commands of QSD that txgraph does not implement (asked for now and then).
OTHER_COMMANDS = (
    "query-jobs",
    "query-block-jobs",
    "blockdev-create",
    "job-cancel",
    "job-dismiss",
    "block-dirty-bitmap-add",
    "block-set-write-threshold",
    "query-iothreads",
    "block-job-cancel",
)
DRIVERS = (
    "null-co",
    "null-aio",
    "raw",
    "qcow2",
    "file",
    "throttle",
    "blkdebug",
    "copy-on-read",
    "nbd",
    "luks",
    "nope",
    "",
)
# Files are never created: every path is under a directory that does not exist.
MISSING = "/nonexistent-txgraph-fuzz/img"

Rng = random.Random


def _scalar(r: Rng) -> Any:
    return r.choice(
        [
            0,
            1,
            -1,
            2**63 - 1,
            2**63,
            2**64,
            -(2**63) - 1,
            0.5,
            -0.0,
            1e300,
            "",
            "a",
            "node0",
            "x" * r.randint(0, 40),
            "\u00e9",
            "\U0001f600",
            True,
            False,
            None,
        ]
    )


def _value(r: Rng, depth: int = 0) -> Any:
    roll = r.random()
    if depth > 3 or roll < 0.6:
        return _scalar(r)
    if roll < 0.8:
        return [_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    return {
        r.choice(["a", "node-name", "driver", "size", "id", "x"]): _value(r, depth + 1)
        for _ in range(r.randint(0, 3))
    }


def _blockdev_args(r: Rng) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if r.random() < 0.9:
        args["driver"] = r.choice(DRIVERS) if r.random() < 0.8 else _scalar(r)
    if r.random() < 0.7:
        args["node-name"] = r.choice(["n0", "n1", "#bad", "a" * 32, "x-y_z.1", "", "1a"])
    if r.random() < 0.5:
        args["size"] = r.choice([0, 512, -1, 2**63, 2**64 - 1, "1M", 1.5, None])
    if r.random() < 0.4:
        args["file"] = r.choice(
            [MISSING, "n0", {"driver": "file", "filename": MISSING}, {"driver": "null-co"}, 7, None]
        )
    if r.random() < 0.3:
        args["filename"] = r.choice([MISSING, "", "nbd://localhost:1/x", 3])
    if r.random() < 0.3:
        args[r.choice(["read-only", "discard", "cache", "detect-zeroes", "bogus"])] = _value(r)
    return args


def _arguments(r: Rng, command: str) -> Any:
    roll = r.random()
    if roll < 0.1:
        return _value(r)  # maybe not even an object
    if command in ("blockdev-add", "blockdev-reopen", "blockdev-create"):
        args = _blockdev_args(r)
        if command == "blockdev-reopen":
            return {"options": [args] if r.random() < 0.8 else args}
        if command == "blockdev-create":
            return {"job-id": r.choice(["j", 1, ""]), "options": args}
        return args
    return {
        r.choice(
            ["node-name", "id", "job-id", "device", "name", "enable", "force", "flat", "x"]
        ): _value(r)
        for _ in range(r.randint(0, 3))
    }


def _message(r: Rng) -> dict[str, Any]:
    msg: dict[str, Any] = {}
    roll = r.random()
    if roll < 0.72:
        msg["execute"] = r.choice(COMMANDS)
    elif roll < 0.75:
        msg["execute"] = r.choice(OTHER_COMMANDS)
    elif roll < 0.85:
        msg["execute"] = (
            r.choice(
                ["nope", "", "QUERY-VERSION", "query_version", "x" * 200, "query-version\u0000"]
            )
            if r.random() < 0.7
            else _scalar(r)
        )
    elif roll < 0.9:
        msg["exec-oob"] = r.choice(COMMANDS)
    if r.random() < 0.7:
        msg["arguments"] = _arguments(r, str(msg.get("execute", "")))
    if r.random() < 0.6:
        msg["id"] = _value(r)
    if r.random() < 0.1:
        msg[r.choice(["control", "extra", "ID", "execute "])] = _scalar(r)
    keys = list(msg)
    r.shuffle(keys)
    return {k: msg[k] for k in keys}


def _text(r: Rng) -> bytes:
    """A message as JSON text, spelled in one of QMP's accepted ways."""
    msg = _message(r)
    text = json.dumps(msg, ensure_ascii=r.random() < 0.5)
    if r.random() < 0.2:
        text = text.replace('"', "'")  # QEMU's single-quote extension
    return text.encode("utf-8", "surrogatepass")


def _truncated(r: Rng) -> bytes:
    text = _text(r)
    return text[: r.randint(0, max(0, len(text) - 1))]


def _corrupted(r: Rng) -> bytes:
    data = bytearray(_text(r))
    for _ in range(r.randint(1, 3)):
        pos = r.randint(0, len(data))
        data[pos:pos] = r.choice(
            [
                b"@",
                b":",
                b",",
                b"}",
                b"]",
                b"{",
                b"[",
                b"\x00",
                b"\x01",
                b"\xff",
                b"\xfe",
                b"\t",
                b"\n",
                b"tru",
                b"0e5",
                b"01",
                b"-",
                b"1.",
                b"1e",
                b"1E+",
                b"'",
                b'"',
                b"\\",
            ]
        )
    return bytes(data)


def _bad_string(r: Rng) -> bytes:
    body = r.choice(
        [
            b"\\q",
            b"\\u12",
            b"\\u12g4",
            b"\\ud800",
            b"\\udc00",
            b"\\ud83dx",
            b"\\ud83d\\u0041",
            b"\\uffff",
            b"\\ufdd0",
            b"\\u0000",
            b"\xc3",
            b"\xc0\x80",
            b"\xed\xa0\x80",
            b"\xef\xbf\xbf",
            b"\x80",
            b"\xe2\x82x",
            b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80",
            b"\x7f",
            b"\t",
            b"\\/",
            b"\\'",
        ]
    )
    quote = r.choice([b'"', b"'"])
    s = quote + b"a" * r.randint(0, 3) + body + b"b" * r.randint(0, 3) + quote
    where = r.choice(["id", "execute", "key", "arg"])
    if where == "id":
        return b'{"execute": "query-version", "id": ' + s + b"}"
    if where == "execute":
        return b'{"execute": ' + s + b"}"
    if where == "key":
        return b'{"execute": "query-version", ' + s + b": 1}"
    return b'{"execute": "blockdev-add", "arguments": {"driver": ' + s + b"}}"


def _number(r: Rng) -> bytes:
    num = r.choice(
        [
            b"9" * r.randint(19, 400),
            b"-" + b"9" * r.randint(19, 400),
            b"1" + b"0" * r.randint(17, 30),
            b"18446744073709551615",
            b"18446744073709551616",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"1e400",
            b"-1e400",
            b"1e-400",
            b"0e5",
            b"0e",
            b"1E+",
            b"-0e-1",
            b"0.5e3",
            b"0E1",
            b"-0",
            b"-",
            b"00",
            b"1.",
            b".5",
            b"+1",
            b"1e+5",
            b"4.9e-324",
        ]
    )
    return b'{"execute": "query-version", "id": ' + num + b"}"


def _nesting(r: Rng) -> bytes:
    depth = r.choice([1, 2, 100, 512, 1000, 1022, 1023, 1024, 1025, 1026, 2000])
    kind = r.choice(["arrays", "objects", "mixed", "id", "args", "options", "unclosed"])
    if kind == "options":  # deep BlockdevOptions: the QAPI visitor and the open path
        depth = min(depth, 600)
        return (
            b'{"execute": "blockdev-add", "arguments": '
            + b'{"driver": "raw", "file": ' * depth
            + r.choice([b'{"driver": "null-co"}', b'"nope"', b"1"])
            + b"}" * depth
            + b"}"
        )
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "mixed":
        half = depth // 2
        return b'{"a":[' * half + b"null" + b"]}" * half
    if kind == "id":
        return b'{"execute": "query-version", "id": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "args":
        return (
            b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", "x": '
            + b"[" * depth
            + b"]" * depth
            + b"}}"
        )
    return b"[" * depth


def _stray(r: Rng) -> bytes:
    parts = [
        r.choice(
            [
                b"@",
                b"}",
                b"]",
                b":",
                b",",
                b"\x00",
                b"\x1b",
                b"\xff",
                b"\xfe",
                b"nul",
                b"True",
                b"1 ",
                b'"s"',
                b"[]",
                b"{}",
                b"null ",
                b"\r\n",
                b"%d",
                b"%p",
                b"'x'",
                b"-1 ",
                b"\xe2\x82\xac",
            ]
        )
        for _ in range(r.randint(1, 5))
    ]
    return b"".join(parts)


def _shape(r: Rng) -> bytes:
    return r.choice(
        [
            b"{}",
            b'{"arguments": {}}',
            b'{"id": 1}',
            b'{"execute": 1}',
            b'{"execute": null, "id": []}',
            b'{"execute": "query-version", "arguments": []}',
            b'{"execute": "query-version", "foo": 1}',
            b'{"exec-oob": "query-version"}',
            b'{"execute": "query-version", "exec-oob": "x", "id": 1}',
            b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
            b'{"execute": "query-version", "id": "dup", "id": 2}',
            b"[1, 2]",
            b'"str"',
            b"42 ",
            b"true ",
        ]
    )


def _valid(r: Rng) -> bytes:
    return _text(r)


#: Each category: a name and its generator, with a weight.
CATEGORIES: tuple[tuple[str, Callable[[Rng], bytes], int], ...] = (
    ("valid-shape", _valid, 30),
    ("truncated", _truncated, 10),
    ("corrupted", _corrupted, 15),
    ("bad-string", _bad_string, 10),
    ("number", _number, 8),
    ("nesting", _nesting, 6),
    ("stray", _stray, 8),
    ("shape", _shape, 8),
)


def one_case(r: Rng) -> tuple[str, bytes]:
    """(category, bytes) of one case: one to three messages of the weighted categories."""
    names = [c[0] for c in CATEGORIES]
    weights = [c[2] for c in CATEGORIES]
    picked = r.choices(range(len(CATEGORIES)), weights, k=r.choice([1, 1, 1, 2, 3]))
    sep = r.choice([b"", b" ", b"\n", b"\r\n"])
    return "+".join(names[i] for i in picked), sep.join(CATEGORIES[i][1](r) for i in picked)


def case(seed: int, index: int) -> tuple[str, bytes]:
    """Case ``index`` of the run with ``seed`` (replayable on its own)."""
    return one_case(random.Random(f"{seed}:{index}"))


def cases(seed: int, n: int) -> Iterator[tuple[str, bytes]]:
    for i in range(n):
        yield case(seed, i)
