"""One validator: txgraph's extension commands have QAPI schema entries of their own.

Every registered command is validated by :func:`txgraph.qmp.qapi.validate_arguments`
from a schema entry (QSD's or txgraph's), so no command module hand-writes a
validator or reaches into qapi's private names; ``query-qmp-schema`` stays QSD's;
the action kinds of both transaction commands come from the one table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from txgraph.errors import QAPIError
from txgraph.ops.qmp_transaction import ACTIONS, EXTENSION_ACTIONS, QEMU_ACTIONS
from txgraph.qmp.commands import COMMANDS
from txgraph.qmp.qapi import _schema, schema_json, validate_arguments

QMP_PACKAGE = Path(__file__).resolve().parents[3] / "txgraph" / "qmp"


def test_every_registered_command_has_a_schema_entry() -> None:
    schema = _schema()
    missing = [
        name for name in COMMANDS if name not in schema.commands and name not in schema.ext_commands
    ]
    assert missing == []
    # and only txgraph's own x- names are extensions
    assert all(name.startswith("x-") for name in schema.ext_commands)
    assert not set(schema.ext_commands) & set(schema.commands)


def test_query_qmp_schema_is_still_qsds_reply() -> None:
    names = {e["name"] for e in schema_json()}
    assert not [n for n in names if n.startswith("x-txgraph")]
    assert len(names) == len(schema_json())


def test_no_command_module_imports_qapi_private_names() -> None:
    bad = []
    for path in sorted(QMP_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "txgraph.qmp.qapi":
                bad += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert bad == []


def test_action_kinds_come_from_the_one_table() -> None:
    schema = _schema()
    qsd_kinds = schema.by_name[
        schema.by_name[
            schema.by_name[
                schema.by_name[schema.commands["transaction"]["arg-type"]]["members"][0]["type"]
            ]["element-type"]
        ]["members"][0]["type"]
    ]["values"]
    ours = schema.by_name["x-txgraph.TransactionActionKind"]["values"]
    assert ours == [*qsd_kinds, *EXTENSION_ACTIONS]
    assert set(QEMU_ACTIONS) <= set(qsd_kinds)
    assert set(ACTIONS) == {*QEMU_ACTIONS, *EXTENSION_ACTIONS}
    cases = [v["case"] for v in schema.by_name["x-txgraph.TransactionAction"]["variants"]]
    assert cases == ours


@pytest.mark.parametrize(
    ("command", "arguments", "desc"),
    [
        # the QAPI walk's order: members in schema order ("is missing" first), leftovers last
        ("x-txgraph-apply-plan", {"bogus": 1}, "Parameter 'expect-generation' is missing"),
        (
            "x-txgraph-apply-plan",
            {"expect-generation": "1", "expect-digest": "d", "steps": []},
            "Invalid parameter type for 'expect-generation', expected: integer",
        ),
        (
            "x-txgraph-apply-plan",
            {"expect-generation": 1, "expect-digest": "d", "steps": [], "bogus": 1},
            "Parameter 'bogus' is unexpected",
        ),
        ("x-txgraph-query-objects", {"x": 1}, "Parameter 'x' is unexpected"),
        ("x-txgraph-query-generation", {"x": 1}, "Parameter 'x' is unexpected"),
        ("x-txgraph-remove-filter", {}, "Parameter 'node' is missing"),
        (
            "x-txgraph-remove-filter",
            {"node": 1},
            "Invalid parameter type for 'node', expected: string",
        ),
        (
            "x-blockdev-replace",
            {"parent-type": "nope", "new-child": "n"},
            "Parameter 'parent-type' does not accept value 'nope'",
        ),
        (
            "x-blockdev-replace",
            {"parent-type": "export", "new-child": "n"},
            "Parameter 'export-id' is missing",
        ),
        (
            "x-txgraph-replace-edges",
            {"new-child": "n", "edges": [{"parent": "p"}]},
            "Parameter 'edges[0].child-name' is missing",
        ),
        (
            "x-txgraph-replace-edges",
            {"new-child": "n", "child": "c", "edges": []},
            "The parameters child and edges are in conflict",
        ),
        ("x-txgraph-replace-edges", {"new-child": "n"}, "Either child or edges must be specified"),
        (
            "x-txgraph-insert-filter",
            {"node": "n", "filter": []},
            "Invalid parameter type for 'filter', expected: object",
        ),
        (
            "x-txgraph-insert-filter",
            {"node": "n", "filter": {"driver": "throttle"}},
            "Parameter 'filter.throttle-group' is missing",
        ),
        (
            "x-txgraph-transaction",
            {
                "actions": [
                    {
                        "type": "x-txgraph-replace",
                        "data": {"parent-type": "driver", "new-child": "n", "node-name": "p"},
                    }
                ]
            },
            "Parameter 'actions[0].data.child' is missing",
        ),
        (
            "x-txgraph-transaction",
            {"actions": [{"type": "x-txgraph-remove-filter", "data": {}}]},
            "Parameter 'actions[0].data.node' is missing",
        ),
        (
            "x-txgraph-transaction",
            {"actions": [{"type": "abort", "data": {}}], "properties": {"completion-mode": "x"}},
            "Parameter 'completion-mode' does not accept value 'x'",
        ),
    ],
)
def test_extension_arguments_fail_like_qapi(
    command: str, arguments: dict[str, object], desc: str
) -> None:
    with pytest.raises(QAPIError) as err:
        validate_arguments(command, arguments)
    assert err.value.desc == desc


def test_typed_values_come_back_for_the_handlers() -> None:
    typed = validate_arguments(
        "x-txgraph-insert-filter",
        {"node": "n", "filter": {"driver": "throttle", "throttle-group": "tg"}},
    )
    # the filtered child defaults to the node the filter goes above
    assert typed == {
        "node": "n",
        "filter": {"driver": "throttle", "throttle-group": "tg", "file": "n"},
    }
    typed = validate_arguments(
        "x-txgraph-transaction",
        {"actions": [{"type": "x-txgraph-replace", "data": {"child": "a", "new-child": "b"}}]},
    )
    assert typed == {
        "actions": [{"type": "x-txgraph-replace", "data": {"child": "a", "new-child": "b"}}]
    }
