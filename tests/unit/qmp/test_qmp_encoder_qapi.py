"""QEMU-exact output formatting and the message/argument checks that need no daemon."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from txgraph.errors import QAPIError, QMPError
from txgraph.qmp.qapi import check_message, schema_json, validate_arguments
from txgraph.qobject.encoder import _encode_str, _encode_str_escaped, encode, encode_message


def test_keys_come_out_in_qdict_order() -> None:
    version = {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": "p"}
    assert encode({"return": version, "id": 1}) == (
        '{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "p"}, "id": 1}'
    )
    assert encode({"error": {"class": "C", "desc": "d"}, "id": 1}) == (
        '{"id": 1, "error": {"class": "C", "desc": "d"}}'
    )


def test_numbers_and_strings_like_qobject_to_json() -> None:
    assert encode([0.1, -0.0, 1e5, float("inf"), 2**64 - 1, True, None]) == (
        "[0.10000000000000001, -0, 100000, inf, 18446744073709551615, true, null]"
    )
    assert (
        encode('\u00e9\x01\x7f\U0001f600"\\/\n')
        == '"\\u00E9\\u0001\\u007F\\uD83D\\uDE00\\"\\\\/\\n"'
    )
    assert encode_message({}) == b"{}\r\n"


#: around printable ASCII (0x20-0x7E, where the fast path applies) and anything at all
_NEAR_PLAIN = st.text(st.characters(min_codepoint=0x1F, max_codepoint=0x7F))


@given(_NEAR_PLAIN | st.text())
@example("")
@example("/tmp/a b/~img.qcow2")
@example('say "hi"')
@example("a\\b")
@example("".join(map(chr, range(0x20, 0x7F))))
@example("tail\x7f")
def test_plain_string_fast_path_prints_what_the_escaping_loop_prints(text: str) -> None:
    fast: list[str] = []
    slow: list[str] = []
    _encode_str(text, fast)
    _encode_str_escaped(text, slow)
    assert "".join(fast) == "".join(slow)


@pytest.mark.parametrize(
    ("message", "desc"),
    [
        ([], "QMP input must be a JSON object"),
        ({}, "QMP input lacks member 'execute'"),
        ({"execute": 1}, "QMP input member 'execute' must be a string"),
        ({"execute": "x", "arguments": []}, "QMP input member 'arguments' must be an object"),
        ({"execute": "x", "foo": 1}, "QMP input member 'foo' is unexpected"),
        ({"exec-oob": "x"}, "QMP input member 'exec-oob' is unexpected"),
        ({"foo": 1, "execute": 1}, "QMP input member 'execute' must be a string"),
    ],
)
def test_check_message(message: object, desc: str) -> None:
    with pytest.raises(QMPError) as info:
        check_message(message)
    assert info.value.desc == desc and info.value.error_class == "GenericError"


def test_check_message_returns_name_and_arguments() -> None:
    assert check_message({"execute": "x", "id": [1]}) == ("x", {})
    assert check_message({"execute": "x", "arguments": {"a": 1}}) == ("x", {"a": 1})


def test_validate_returns_typed_values_without_defaults() -> None:
    typed = validate_arguments(
        "blockdev-add", {"driver": "null-co", "node-name": "n", "latency-ns": -1}
    )
    assert typed == {"driver": "null-co", "node-name": "n", "latency-ns": 2**64 - 1}
    reopen = validate_arguments(
        "blockdev-reopen",
        {"options": [{"driver": "qcow2", "node-name": "a", "file": "f", "backing": None}]},
    )
    assert reopen["options"][0]["backing"] is None and "read-only" not in reopen["options"][0]


@pytest.mark.parametrize(
    ("command", "arguments", "desc"),
    [
        ("blockdev-add", {}, "Parameter 'driver' is missing"),
        (
            "blockdev-add",
            {"driver": "raw", "file": {"driver": "file"}},
            "Parameter 'file.filename' is missing",
        ),
        (
            "blockdev-reopen",
            {"options": [{"driver": "null-co", "x": 1}]},
            "Parameter 'options[0].x' is unexpected",
        ),
        (
            "blockdev-add",
            {"driver": "blkdebug", "image": "x", "max-transfer": 2**32},
            "Parameter 'max-transfer' expects int32_t",
        ),
        (
            "blockdev-add",
            {"driver": "quorum", "children": [1], "vote-threshold": 1},
            "Invalid parameter type for 'null', expected: BlockdevRef",
        ),
        ("qmp_capabilities", {"enable": ["x"]}, "Parameter 'null' does not accept value 'x'"),
    ],
)
def test_validate_errors(command: str, arguments: dict[str, object], desc: str) -> None:
    with pytest.raises(QAPIError) as info:
        validate_arguments(command, arguments)
    assert info.value.desc == desc


def test_schema_json_is_the_captured_reply() -> None:
    schema = schema_json()
    assert len(schema) == 494
    assert {
        "name": "blockdev-add",
        "ret-type": "0",
        "meta-type": "command",
        "arg-type": "29",
    } in schema
    schema.clear()
    assert len(schema_json()) == 494


def test_event_layout_matches_qsd() -> None:
    # As QSD 7.2 printed a blockdev-create job's first event.
    event = {
        "event": "JOB_STATUS_CHANGE",
        "data": {"id": "j", "status": "created"},
        "timestamp": {"microseconds": 797708, "seconds": 1795659544},
    }
    assert encode(event) == (
        '{"timestamp": {"seconds": 1795659544, "microseconds": 797708}, '
        '"event": "JOB_STATUS_CHANGE", "data": {"status": "created", "id": "j"}}'
    )
