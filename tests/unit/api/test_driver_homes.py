"""One home per driver: every driver's three parts are found from :mod:`txgraph.drivers` and agree.

For every driver the engine accepts (``DRIVER_SPECS``), the spec must sit in
the model module of its family, its open/reopen rules in the ops module of the
same family, its data-plane class in :mod:`txgraph.io.registry`; the spec's
option list must be the QAPI schema's ``BlockdevOptions<Driver>`` members of
QSD 7.2 (the few differences are listed below with their reason, and the list
must stay exact); the options a reopen may change or omit, and the defaults,
must be options the driver has; and blockdev-add must accept exactly the
drivers that have an open step.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import txgraph.io.drivers  # noqa: F401  (importing the package registers every data-plane class)
from txgraph.drivers import driver_names, driver_parts
from txgraph.io.registry import DRIVERS
from txgraph.model.drivers import DRIVER_SPECS, FAMILIES, DriverSpec
from txgraph.ops import drivers as ops_drivers
from txgraph.qmp.qapi import qsd_schema

#: spec-derived members QSD 7.2's QAPI type lacks: options QEMU's driver reads from its
#: runtime opts only (legacy filename syntax, json: filenames), never from blockdev-add
NOT_IN_QAPI: dict[str, set[str]] = {
    "nbd": {"host", "port", "path"},  # nbd_process_legacy_socket_options
    "null-co": {"filename"},  # null_file_open accepts "null-co://" filenames
    "null-aio": {"filename"},
    "blkdebug": {"x-image"},  # blkdebug_parse_filename's image
    "blkverify": {"x-raw", "x-image"},  # blkverify_parse_filename
    # QEMU sets supports_backing for parallels; its QAPI type is the generic one
    "parallels": {"backing"},
}

#: QAPI members the spec does not model: the driver refuses them instead of faking them
NOT_IN_SPEC: dict[str, set[str]] = {
    "quorum": {"children"},  # an array ``children.N``, opened by ops.drivers.quorum
    # copy-before-write's error policy and timeout are not implemented by the data plane
    "copy-before-write": {"on-cbw-error", "cbw-timeout"},
}


def _qapi_members() -> dict[str, set[str]]:
    """``BlockdevOptions``' variants: driver name -> the member names of its options type."""
    schema = qsd_schema()
    union = schema.by_name[schema.commands["blockdev-add"]["arg-type"]]
    return {
        v["case"]: {m["name"] for m in schema.by_name[v["type"]]["members"]}
        for v in union["variants"]
    }


def _spec_members(spec: DriverSpec) -> set[str]:
    """The top-level member names a spec implies: options, children, ``backing``."""
    members = {opt.split(".")[0] for opt in spec.options}
    members |= {child.name for child in spec.children}
    if spec.supports_backing:
        members.add("backing")
    return members


def _has_option(spec: DriverSpec, key: str) -> bool:
    return spec.accepts_option(key) or any(key.startswith(c.name + ".") for c in spec.children)


@pytest.mark.parametrize("name", driver_names())
def test_each_driver_has_its_three_parts_in_its_family(name: str) -> None:
    parts = driver_parts(name)
    assert parts is not None
    assert parts.spec is DRIVER_SPECS[name]
    assert parts.spec in parts.spec_module.SPECS
    assert parts.spec_module.__name__ == f"txgraph.model.drivers.{parts.family}"
    assert parts.rules_module.__name__ == f"txgraph.ops.drivers.{parts.family}"
    assert parts.opener is parts.rules_module.OPENERS.get(name)
    assert parts.reopener is parts.rules_module.REOPENERS.get(name)
    assert parts.data_class is not None, f"no data-plane class for {name}"
    assert DRIVERS[name] is parts.data_class


@pytest.mark.parametrize("name", driver_names())
def test_spec_options_are_the_qapi_members(name: str) -> None:
    qapi = _qapi_members()
    spec = DRIVER_SPECS[name]
    if name not in qapi:
        # only the job filters are not blockdev-add drivers: no open step either
        assert name in ("commit_top", "mirror_top")
        assert driver_parts(name).opener is None  # type: ignore[union-attr]
        return
    assert driver_parts(name).opener is not None  # type: ignore[union-attr]
    implied = _spec_members(spec)
    assert implied - qapi[name] == NOT_IN_QAPI.get(name, set())
    assert qapi[name] - implied == NOT_IN_SPEC.get(name, set())


@pytest.mark.parametrize("name", driver_names())
def test_reopen_and_default_options_are_options_of_the_driver(name: str) -> None:
    spec = DRIVER_SPECS[name]
    for key in spec.changeable_opts | spec.mutable_opts | spec.strong_opts | set(spec.defaults):
        assert _has_option(spec, key.rstrip(".")) or key in spec.options, (name, key)
    if not spec.reopenable:
        # no bdrv_reopen_prepare: nothing may change, and no check exists to run
        assert not spec.changeable_opts and name not in ops_drivers.REOPENERS


def test_the_exception_lists_name_real_drivers() -> None:
    assert set(NOT_IN_QAPI) <= set(DRIVER_SPECS)
    assert set(NOT_IN_SPEC) <= set(DRIVER_SPECS)


def test_no_rule_or_class_without_a_spec() -> None:
    assert set(ops_drivers.OPENERS) <= set(DRIVER_SPECS)
    assert set(ops_drivers.REOPENERS) <= set(DRIVER_SPECS)
    # other test modules may register stand-ins of their own (their classes are not txgraph's)
    built_in = {n for n, cls in DRIVERS.items() if cls.__module__.startswith("txgraph.")}
    assert built_in <= set(DRIVER_SPECS)


def test_families_match_on_both_sides() -> None:
    assert list(FAMILIES) == list(ops_drivers.FAMILIES)
    assert driver_parts("no-such-driver") is None


def test_reopen_has_no_per_driver_branches() -> None:
    """ops/reopen.py reads the spec and the rules table, it names no driver of its own."""
    source = (Path(ops_drivers.__file__).parents[1] / "reopen.py").read_text()
    branches = re.findall(r'driver\s*(?:==|!=|in)\s*[(\[{]?\s*"[^"]*"', source)
    assert branches == []
