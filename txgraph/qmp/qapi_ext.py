"""txgraph's extension commands as QAPI schema entries, for the one validator.

QEMU generates its argument visitors from the QAPI schema; txgraph does the
same for its own ``x-`` commands: each has entries here in the form of QSD's
``query-qmp-schema`` reply (commands, objects, flat unions with a tag, enums,
arrays), and :mod:`txgraph.qmp.qapi` walks them with the same visitor, so an
extension command's errors read exactly like a QEMU command's (member paths,
"is missing" before "is unexpected", enum texts). Where QSD already has the
type (``blockdev-add``'s options, ``transaction``'s properties, its action
variants) the entries point at QSD's own.

Two things the introspection format cannot say are code, kept here beside
the entries and run by the visitor:

* checks a QEMU command handler would make after the visit
  (:data:`CHECKS`: members in conflict, the filter's default child);
* a choice of type by content (:data:`CHOOSERS`: the ``x-txgraph-replace``
  action is ``x-blockdev-replace``'s union when it has ``parent-type``,
  otherwise ``x-txgraph-replace-edges``'s arguments).

The extension entries are not part of ``query-qmp-schema``, which stays QSD's
reply byte for byte. The action kinds come from the one table of them,
:data:`txgraph.ops.qmp_transaction.ACTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from txgraph.errors import QAPIError
from txgraph.model.drivers import driver_spec
from txgraph.ops.filters import filtered_child_name
from txgraph.ops.qmp_transaction import ACTIONS, EXTENSION_ACTIONS

__all__ = ["extension_entries", "CHECKS", "CHOOSERS", "Walker"]

Entry = dict[str, Any]
Path = tuple[str | int, ...]

#: the type of the ``x-txgraph-replace`` action's data (chosen by content, see CHOOSERS)
REPLACE_ACTION_DATA = "x-txgraph.ReplaceActionData"


class Walker(Protocol):
    """What a check needs of the validator (:class:`txgraph.qmp.qapi._Visitor`)."""

    def visit(self, tname: str, value: Any, path: Path, int_kind: str = "int64") -> Any: ...

    def arg_type(self, command: str) -> str: ...


def _member(name: str, tname: str, optional: bool = False) -> Entry:
    return {"name": name, "type": tname, **({"default": None} if optional else {})}


def _object(name: str, *members: Entry, **extra: Any) -> Entry:
    return {"name": name, "meta-type": "object", "members": list(members), **extra}


def _enum(name: str, *values: str) -> Entry:
    return {
        "name": name,
        "meta-type": "enum",
        "values": list(values),
        "members": [{"name": v} for v in values],
    }


def _array(element: str) -> Entry:
    return {"name": f"[{element}]", "meta-type": "array", "element-type": element}


def _command(name: str, *members: Entry) -> list[Entry]:
    return [
        {"name": name, "meta-type": "command", "arg-type": f"{name}.args", "ret-type": "any"},
        _object(f"{name}.args", *members),
    ]


def extension_entries(qsd: Mapping[str, Entry]) -> list[Entry]:
    """The entries of every extension command; ``qsd`` is QSD's schema by name."""

    def args_of(command: str) -> str:
        return str(qsd[command]["arg-type"]) if command in qsd else f"{command}.args"

    edge = "x-txgraph.Edge"
    entries: list[Entry] = [
        _object(edge, _member("parent", "str"), _member("child-name", "str")),
        _array(edge),
        _enum("x-txgraph.ReplaceParentType", "driver", "export"),
        _enum("x-txgraph.ParentsMode", "auto", "all", "exactly-one"),
        _object("x-blockdev-replace.driver", _member("node-name", "str"), _member("child", "str")),
        _object("x-blockdev-replace.export", _member("export-id", "str")),
        _array("any"),
        # the upstream v9 blockdev-replace proposal: a union on parent-type
        {
            "name": "x-blockdev-replace",
            "meta-type": "command",
            "arg-type": "x-blockdev-replace.args",
            "ret-type": "any",
        },
        _object(
            "x-blockdev-replace.args",
            _member("parent-type", "x-txgraph.ReplaceParentType"),
            _member("new-child", "str"),
            tag="parent-type",
            variants=[
                {"case": "driver", "type": "x-blockdev-replace.driver"},
                {"case": "export", "type": "x-blockdev-replace.export"},
            ],
        ),
        *_command(
            "x-txgraph-replace-edges",
            _member("child", "str", True),
            _member("parents-mode", "x-txgraph.ParentsMode", True),
            _member("edges", f"[{edge}]", True),
            _member("new-child", "str"),
        ),
        *_command(
            "x-txgraph-insert-filter",
            _member("node", "str"),
            _member("filter", "any"),  # blockdev-add options, visited by the check
            _member("edges", f"[{edge}]", True),
        ),
        *_command("x-txgraph-remove-filter", _member("node", "str")),
        *_command("x-txgraph-query-objects"),
        *_command("x-txgraph-query-generation"),
        *_command(
            "x-txgraph-apply-plan",
            _member("expect-generation", "int"),
            _member("expect-digest", "str"),
            _member("steps", "[any]"),
        ),
        # a plan's wait point (txgraph.jobs.manager.JobManager.wait_for)
        *_command(
            "x-txgraph-wait-job",
            _member("job", "str"),
            _member("event", "str"),
            _member("timeout", "number", optional=True),
        ),
    ]
    # x-txgraph-transaction: QEMU's TransactionAction union plus one variant per extension kind
    qsd_args = qsd[str(qsd["transaction"]["arg-type"])]
    actions_type, props_member = qsd_args["members"][0]["type"], qsd_args["members"][1]
    qsd_action = qsd[str(qsd[actions_type]["element-type"])]
    qsd_kinds = qsd[str(qsd_action["members"][0]["type"])]["values"]
    variants = list(qsd_action["variants"])
    for kind in EXTENSION_ACTIONS:
        data = ACTIONS[kind].data
        assert data is not None
        wrapper = f"x-txgraph.{kind}.wrapper"
        entries.append(
            _object(
                wrapper, _member("data", data if data == REPLACE_ACTION_DATA else args_of(data))
            )
        )
        variants.append({"case": kind, "type": wrapper})
    entries += [
        _enum("x-txgraph.TransactionActionKind", *qsd_kinds, *EXTENSION_ACTIONS),
        _object(
            "x-txgraph.TransactionAction",
            _member("type", "x-txgraph.TransactionActionKind"),
            tag="type",
            variants=variants,
        ),
        _array("x-txgraph.TransactionAction"),
        *_command(
            "x-txgraph-transaction",
            _member("actions", "[x-txgraph.TransactionAction]"),
            _member("properties", props_member["type"], True),
        ),
    ]
    return entries


def _check_replace_edges(walker: Walker, args: dict[str, Any], path: Path) -> dict[str, Any]:
    """qmp_x_txgraph_replace_edges' own checks, in QEMU's words for such conflicts."""
    if "child" in args and "edges" in args:
        raise QAPIError("The parameters child and edges are in conflict")
    if "child" not in args and "edges" not in args:
        raise QAPIError("Either child or edges must be specified")
    if "edges" in args and "parents-mode" in args:
        raise QAPIError("The parameters parents-mode and edges are in conflict")
    return args


def _check_insert_filter(walker: Walker, args: dict[str, Any], path: Path) -> dict[str, Any]:
    """``filter`` is blockdev-add's options; the filtered child defaults to ``node``.

    A known non-filter driver is refused before its options are judged.
    """
    options = args["filter"]
    if isinstance(options, dict):
        options = dict(options)
        driver = options.get("driver")
        if isinstance(driver, str) and driver_spec(driver) is not None:
            options.setdefault(filtered_child_name(driver), args["node"])
    return {
        **args,
        "filter": walker.visit(walker.arg_type("blockdev-add"), options, (*path, "filter")),
    }


def _choose_replace(value: Any) -> str:
    if isinstance(value, dict) and "parent-type" in value:
        return "x-blockdev-replace.args"
    return "x-txgraph-replace-edges.args"


#: checks run on an object type's visited value (a handler's checks, before anything runs)
CHECKS: dict[str, Callable[[Walker, dict[str, Any], Path], dict[str, Any]]] = {
    "x-txgraph-replace-edges.args": _check_replace_edges,
    "x-txgraph-insert-filter.args": _check_insert_filter,
}

#: types whose real type depends on the value
CHOOSERS: dict[str, Callable[[Any], str]] = {REPLACE_ACTION_DATA: _choose_replace}
