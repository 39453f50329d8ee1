"""Node names, flattening, QDict order and the auto-name counter."""

from __future__ import annotations

from txgraph.model.names import AutoNamer, id_wellformed
from txgraph.model.options import array_entries, flatten, qdict_first, unflatten


def test_id_wellformed_is_qemus_rule() -> None:
    assert id_wellformed("a") and id_wellformed("disk-0.top_1")
    for bad in ("", "0disk", "-x", "#block1", "a b", "a:b", "ä"):
        assert not id_wellformed(bad), bad


def test_auto_names_count_and_carry_two_random_digits() -> None:
    namer = AutoNamer(seed=7)
    names = [namer.next() for _ in range(12)]
    assert [n[:-2] for n in names] == [f"#block{i}" for i in range(12)]
    assert all(n[-2:].isdigit() for n in names)


def test_flatten_nests_dicts_and_lists_but_keeps_empty_ones() -> None:
    value = {
        "driver": "quorum",
        "children": [{"driver": "null-co"}, "n1"],
        "cache": {},
        "file.filename": "dotted",
        "file": {"filename": "nested"},
    }
    flat = flatten(value)
    assert flat["children.0.driver"] == "null-co"
    assert flat["children.1"] == "n1"
    assert flat["cache"] == {}
    assert flat["file.filename"] == "nested"  # the nested value wins, as in qdict_flatten
    assert unflatten({"a.b": 1, "a.c": 2}) == {"a": {"b": 1, "c": 2}}


def test_array_entries_requires_dense_indexes() -> None:
    assert array_entries({"children.0.driver": "x", "children.1": "n"}, "children.") == 2
    assert array_entries({"children.1": "n"}, "children.") == -1
    assert array_entries({"children.0": "n", "children.0.driver": "x"}, "children.") == -1


def test_qdict_first_follows_the_hash_buckets() -> None:
    # QEMU names 'offset' before 'driver' in json:{"offset": 512, "driver": "raw", ...}
    assert qdict_first({"driver": "raw", "offset": 512, "file": {}}) == "offset"
