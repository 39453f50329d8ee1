"""keyval_parse (util/keyval.c) and the keyval visitor: properties and the rules of §8.1.

The messages themselves are checked against the real daemon in
tests/differential/test_qsd_cmdline_errors.py; here the grammar's laws are
checked on generated input.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txgraph.errors import QAPIError
from txgraph.qmp.keyval_visit import _strtoint, visit_command_arguments
from txgraph.qmp.qsd_argv import CmdlineError, scan_argv
from txgraph.qmp.qsd_chardev import parse_chardev_opts
from txgraph.qobject.keyval import KeyvalHelp, keyval_parse, parse_qapi_name

NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True).filter(lambda n: n not in ("help",))
VALUES = st.text(alphabet=st.sampled_from("ab=,.x-1 /"), max_size=8)


def _trees(depth: int = 2) -> st.SearchStrategy[Any]:
    leaf: st.SearchStrategy[Any] = VALUES
    if depth == 0:
        return leaf
    sub = _trees(depth - 1)
    return st.one_of(
        leaf,
        st.dictionaries(NAMES, sub, min_size=1, max_size=3),
        st.lists(sub, min_size=1, max_size=3),
    )


def _render(value: Any, prefix: str = "") -> list[str]:
    """The keyval text of ``value``: dotted paths, list indexes, ``,,`` for commas."""
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _render(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _render(v, f"{prefix}{i}.")]
    return [f"{prefix[:-1]}={value.replace(',', ',,')}"]


@given(st.dictionaries(NAMES, _trees(), min_size=1, max_size=4))
def test_rendered_trees_parse_back(tree: dict[str, Any]) -> None:
    assert keyval_parse(",".join(_render(tree))) == tree


@given(st.dictionaries(NAMES, _trees(), min_size=1, max_size=4))
def test_a_trailing_comma_changes_nothing(tree: dict[str, Any]) -> None:
    assert keyval_parse(",".join(_render(tree)) + ",") == tree


@given(NAMES, st.lists(VALUES, min_size=1, max_size=4))
def test_the_last_value_of_a_leaf_wins(key: str, values: list[str]) -> None:
    text = ",".join(f"{key}={v.replace(',', ',,')}" for v in values)
    assert keyval_parse(text) == {key: values[-1]}


@given(
    st.text(alphabet=st.sampled_from("ab0=,.?_-"), max_size=16), st.sampled_from([None, "driver"])
)
def test_any_text_parses_or_gets_a_qemu_message(text: str, implied: str | None) -> None:
    try:
        result = keyval_parse(text, implied)
    except QAPIError as err:
        assert err.desc and "Traceback" not in err.desc
    else:
        assert isinstance(result, dict)


@given(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True))
def test_implied_key_takes_the_first_bare_value(driver: str) -> None:
    if driver in ("help",):
        return
    assert keyval_parse(f"{driver},node-name=n", "driver") == {"driver": driver, "node-name": "n"}
    # only the first element may be bare
    with pytest.raises(QAPIError, match="Expected '=' after parameter"):
        keyval_parse(f"node-name=n,{driver}", "driver")


@given(st.lists(st.integers(0, 6), min_size=1, max_size=6, unique=True))
def test_list_indexes_must_be_dense(indexes: list[int]) -> None:
    text = ",".join(f"a.{i}=v{i}" for i in indexes)
    if sorted(indexes) == list(range(len(indexes))):
        assert keyval_parse(text) == {"a": [f"v{i}" for i in range(len(indexes))]}
    else:
        first_missing = min(set(range(max(indexes) + 1)) - set(indexes))
        with pytest.raises(QAPIError, match=f"Parameter 'a.{first_missing}' missing"):
            keyval_parse(text)


@given(st.integers(-(2**63), 2**63 - 1), st.sampled_from(["{:d}", "{:#x}", "0{:o}"]))
def test_integers_read_as_strtoll_base_0(number: int, form: str) -> None:
    text = ("-" if number < 0 else "") + form.format(abs(number))
    assert _strtoint(text) == number


def test_keyval_is_not_qemuopts() -> None:
    # QemuOpts keeps dotted keys flat and reads bare words as booleans (with a warning)
    warnings: list[str] = []
    _, opts = parse_chardev_opts("socket,path=p,server,nowait", "L", warnings)
    assert opts == {"backend": "socket", "path": "p", "server": "on", "wait": "off"}
    assert len(warnings) == 2
    # keyval nests them and has no bare words after the first
    assert keyval_parse("a.b=1") == {"a": {"b": "1"}}
    with pytest.raises(QAPIError, match="Expected '=' after parameter 'server'"):
        keyval_parse("socket,server", "backend")
    with pytest.raises(KeyvalHelp):
        keyval_parse("null-co,help", "driver")


def test_qapi_names_and_downstream_prefixes() -> None:
    assert parse_qapi_name("node-name") == 9
    assert parse_qapi_name("__com.redhat_x") == 14
    assert parse_qapi_name("0a") == -1
    assert parse_qapi_name("_x") == -1


def test_keyval_visitor_types_each_leaf() -> None:
    typed = visit_command_arguments(
        "blockdev-add",
        "quorum,node-name=q,vote-threshold=0x2,read-only=yes,"
        "children.0.driver=null-co,children.0.size=010,children.1=other",
        "driver",
    )
    assert typed == {
        "driver": "quorum",
        "node-name": "q",
        "read-only": True,
        "children": [{"driver": "null-co", "size": 8}, "other"],
        "vote-threshold": 2,
    }
    # the JSON form is typed already and visited as QMP visits it
    assert visit_command_arguments(
        "blockdev-add", '{"driver": "null-co", "size": 5}', "driver"
    ) == {"driver": "null-co", "size": 5}


def test_scan_abbreviations_and_forms() -> None:
    scanned = scan_argv(["--b", "x", "--object=y", "--pidfile", "p", "--mon", "m"])
    assert [(o.name, o.arg, o.location) for o in scanned.options] == [
        ("blockdev", "x", "--b x"),
        ("object", "y", "--object=y"),
        ("monitor", "m", "--mon m"),
    ]
    assert scanned.pidfile == "p"
    # the scan stops at -V/--help (QSD answers at once) and reports what came before
    assert scan_argv(["foo", "-V", "--bogus"]).answer == "version"
    with pytest.raises(CmdlineError, match="unrecognized option '--bogus'"):
        scan_argv(["--bogus", "-V"])
    with pytest.raises(CmdlineError, match="option '--export' requires an argument"):
        scan_argv(["--exp"])
