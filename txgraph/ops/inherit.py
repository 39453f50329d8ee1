"""Option inheritance and option filling for a node being opened.

Reproduces ``bdrv_inherited_options``, ``update_options_from_flags``,
``bdrv_fill_options`` and ``bdrv_parse_cache_mode``-free flag derivation
(block.c; reference/qemu-options.md §2 steps 4–6 and §3). Options travel as a
pair of dicts: the flattened values, and the provenance of each value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from txgraph.errors import OpenError
from txgraph.model.drivers import DRIVER_SPECS, driver_spec
from txgraph.model.node import OpenFlag
from txgraph.model.options import Provenance, Source, extract_subdict, parse_bool
from txgraph.model.perm_bits import Role

__all__ = ["OptionSet", "inherit_options", "fill_options", "flags_from_options"]

_EXPLICIT = Provenance(Source.EXPLICIT)


@dataclass
class OptionSet:
    """Flattened option values plus where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    prov: dict[str, Provenance] = field(default_factory=dict)

    @classmethod
    def explicit(cls, values: dict[str, Any]) -> OptionSet:
        return cls(dict(values), dict.fromkeys(values, _EXPLICIT))

    def put(self, key: str, value: Any, prov: Provenance) -> None:
        self.values[key] = value
        self.prov[key] = prov

    def set_default(self, key: str, value: Any, prov: Provenance) -> None:
        if key not in self.values:
            self.put(key, value, prov)

    def pop(self, key: str) -> Any:
        self.prov.pop(key, None)
        return self.values.pop(key)

    def discard(self, key: str) -> None:
        self.values.pop(key, None)
        self.prov.pop(key, None)

    def extract(self, prefix: str) -> OptionSet:
        """``qdict_extract_subqdict``: move ``prefix*`` keys into a new set."""
        values = extract_subdict(self.values, prefix)
        prov = {k: self.prov.pop(prefix + k, _EXPLICIT) for k in values}
        return OptionSet(values, prov)

    def copy(self) -> OptionSet:
        return OptionSet(dict(self.values), dict(self.prov))

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def __len__(self) -> int:
        return len(self.values)


def inherit_options(
    role: Role,
    parent_is_format: bool,
    child: OptionSet,
    parent_flags: OpenFlag,
    parent_options: dict[str, Any],
    parent_name: str,
    edge: str,
) -> OpenFlag:
    """``bdrv_inherited_options``: fill a child's missing options from its parent.

    Returns the child's starting flags. Only *missing* keys are filled, so
    explicit and json: values always win (reference/qemu-options.md §3.2).
    """
    flags = parent_flags
    # Pure data children of non-format parents are probed (quorum, blkverify test).
    if not parent_is_format and role & Role.DATA and not role & (Role.METADATA | Role.FILTERED):
        flags &= ~OpenFlag.PROTOCOL
    # Non-COW children of formats, and all metadata children, are never probed.
    if (parent_is_format and not role & Role.COW) or role & Role.METADATA:
        flags |= OpenFlag.PROTOCOL

    inherited = Provenance(Source.INHERITED, parent_name, edge)

    def copy_default(key: str) -> None:
        if key not in child and key in parent_options:
            child.put(key, parent_options[key], inherited)

    copy_default("cache.direct")
    copy_default("cache.no-flush")
    copy_default("force-share")
    if role & Role.COW:
        forced = Provenance(Source.ROLE, parent_name, edge, "backing files open read-only")
        child.set_default("read-only", "on", forced)
        child.set_default(
            "auto-read-only",
            "off",
            Provenance(Source.ROLE, parent_name, edge, "never auto-read-only"),
        )
    else:
        copy_default("read-only")
        copy_default("auto-read-only")
    child.set_default(
        "discard", "unmap", Provenance(Source.ROLE, parent_name, edge, "lower layers pass discards")
    )
    flags &= ~(OpenFlag.SNAPSHOT | OpenFlag.NO_BACKING | OpenFlag.COPY_ON_READ)
    if role & Role.METADATA:
        flags &= ~OpenFlag.NO_IO
    if role & Role.COW:
        flags &= ~OpenFlag.TEMPORARY
    return flags


def _update_options_from_flags(options: OptionSet, flags: OpenFlag) -> None:
    """``update_options_from_flags``: every node ends up with the four flag options."""
    prov = Provenance(Source.FLAGS)
    options.set_default("cache.direct", bool(flags & OpenFlag.NOCACHE), prov)
    options.set_default("cache.no-flush", bool(flags & OpenFlag.NO_FLUSH), prov)
    options.set_default("read-only", not flags & OpenFlag.RDWR, prov)
    options.set_default("auto-read-only", bool(flags & OpenFlag.AUTO_RDONLY), prov)


def fill_options(options: OptionSet, filename: str | None, flags: OpenFlag) -> OpenFlag:
    """``bdrv_fill_options``: settle the protocol bit, the flag options and the filename.

    txgraph opens legacy filenames only from image headers (after json: parsing):
    a plain path for the ``file`` protocol, or a protocol-prefixed name such as
    ``nbd+unix:///x?socket=PATH`` that the driver's filename parser turns into
    options.
    """
    protocol = bool(flags & OpenFlag.PROTOCOL)
    drvname = options.values.get("driver")
    if isinstance(drvname, str):
        spec = driver_spec(drvname)
        if spec is None:
            raise OpenError(f"Unknown driver '{drvname}'")
        protocol = spec.is_protocol
    flags = flags | OpenFlag.PROTOCOL if protocol else flags & ~OpenFlag.PROTOCOL
    _update_options_from_flags(options, flags)
    parse_filename = False
    if protocol and filename:
        if "filename" in options:
            raise OpenError("Can't specify 'file' and 'filename' options at the same time")
        options.put("filename", filename, Provenance(Source.EXPLICIT, detail="legacy filename"))
        parse_filename = True
    fname = options.values.get("filename")
    if not isinstance(drvname, str) and protocol:
        if isinstance(fname, str):
            drvname = _find_protocol(fname, parse_filename)
            options.put("driver", drvname, Provenance(Source.DEFAULT, detail="from the filename"))
        else:
            raise OpenError("Must specify either driver or file")
    if parse_filename and isinstance(fname, str) and isinstance(drvname, str):
        _parse_filename(options, drvname, fname)
    return flags


def _protocols() -> dict[str, str]:
    """``proto:`` prefix -> driver, from the specs' ``protocol_names``."""
    return {prefix: spec.name for spec in DRIVER_SPECS.values() for prefix in spec.protocol_names}


_PROTOCOLS = _protocols()


def _find_protocol(filename: str, allow_prefix: bool) -> str:
    """``bdrv_find_protocol``: a ``proto:`` prefix (before any '/') picks the driver.

    Only legacy filename strings (image headers) get prefix parsing; a
    ``filename`` option is always a plain path for the file driver.
    """
    colon = filename.find(":")
    slash = filename.find("/")
    if not allow_prefix or colon < 0 or (0 <= slash < colon):
        return "file"
    prefix = filename[:colon]
    driver = _PROTOCOLS.get(prefix)
    if driver is None:
        raise OpenError(f"Unknown protocol '{prefix}'")
    return driver


def _parse_filename(options: OptionSet, driver: str, filename: str) -> None:
    """``bdrv_fill_options``' call of the driver's ``bdrv_parse_filename`` (the spec's),
    after which the ``filename`` option goes unless the driver needs it."""
    spec = driver_spec(driver)
    if spec is None or spec.parse_filename is None:
        return
    prov = Provenance(Source.EXPLICIT, detail="legacy filename")
    parsed = spec.parse_filename(filename, options.values)
    if not spec.needs_filename:
        options.discard("filename")
    for key, value in parsed.items():
        options.put(key, value, prov)


def flags_from_options(flags: OpenFlag, options: dict[str, Any]) -> OpenFlag:
    """``update_flags_from_options``: cache, read-only and auto-read-only options set the flags."""

    def opt(key: str) -> bool:
        return bool(parse_bool(options.get(key)))

    flags &= ~(OpenFlag.NOCACHE | OpenFlag.NO_FLUSH | OpenFlag.RDWR | OpenFlag.AUTO_RDONLY)
    if opt("cache.direct"):
        flags |= OpenFlag.NOCACHE
    if opt("cache.no-flush"):
        flags |= OpenFlag.NO_FLUSH
    if not opt("read-only"):
        flags |= OpenFlag.RDWR
    if opt("auto-read-only"):
        flags |= OpenFlag.AUTO_RDONLY
    return flags
