"""Typed node settings for the data plane, parsed once from the model's resolved values.

A driver object receives a flat options mapping. The generic per-node
settings in it (QEMU's ``bdrv_runtime_opts`` as resolved by
``bdrv_open_common``/``bdrv_reopen_commit``: ``read-only``, ``cache.direct``,
``cache.no-flush``, ``detect-zeroes``, ``discard``) are turned into one frozen
:class:`NodeSettings` at construction and at every reopen, and nothing in the
data path reads them from the mapping again. Driver-specific options are read
through the ``opt_*`` helpers, which accept the value types QEMU accepts for
that option (bools and QemuOpts ``on``/``off`` strings for booleans, ints for
numbers) and refuse anything else with QEMU's text: ``bool("off")`` can never
again mean *on*.

The model hands typed values (:func:`txgraph.model.node.runtime_common_options`);
string forms are still parsed the way QemuOpts parses them, because ``json:``
filenames and image headers produce strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from txgraph.errors import OpenError
from txgraph.model.node import DetectZeroes, Discard
from txgraph.model.options import parse_bool

__all__ = ["NodeSettings", "DetectZeroes", "Discard", "opt_bool", "opt_int", "opt_str", "opt_enum"]

E = TypeVar("E", bound=StrEnum)

#: ``bdrv_parse_discard_flags``: the accepted spellings and what they mean
_DISCARD = {
    "ignore": Discard.IGNORE,
    "off": Discard.IGNORE,
    "unmap": Discard.UNMAP,
    "on": Discard.UNMAP,
}


@dataclass(frozen=True)
class NodeSettings:
    """The generic block-layer settings of one node (the fields ``block/io.c`` consults).

    * ``read_only``: ``bdrv_is_read_only``; writes, zero writes and discards
      fail with EPERM, flushes do nothing (``bdrv_co_write_req_prepare``,
      ``bdrv_co_pdiscard``, ``bdrv_co_flush``).
    * ``direct``: ``BDRV_O_NOCACHE`` (reported; see the file driver for what
      it can mean over a memory mapping).
    * ``no_flush``: ``BDRV_O_NO_FLUSH``; a flush stops before reaching the
      disk (``bdrv_co_flush`` skips ``bdrv_co_flush_to_disk``).
    * ``detect_zeroes``: ``bs->detect_zeroes``; an all-zero write becomes a
      zero write, allowed to unmap with ``unmap`` (``bdrv_aligned_pwritev``).
    * ``discard``: ``BDRV_O_UNMAP``; discards are dropped unless ``unmap``, and
      a parent's zero write may not unmap without it (``bdrv_co_pdiscard``,
      ``bdrv_co_pwrite_zeroes``).
    """

    read_only: bool = False
    direct: bool = False
    no_flush: bool = False
    detect_zeroes: DetectZeroes = DetectZeroes.OFF
    discard: Discard = Discard.IGNORE

    @property
    def unmap(self) -> bool:
        return self.discard is Discard.UNMAP

    @classmethod
    def parse(cls, options: Mapping[str, Any], read_only: bool) -> NodeSettings:
        """Parse the resolved common options (``bdrv_open_common``'s checks, QEMU's texts).

        ``read_only`` is the mode the node is opened in (the Runtime's word wins
        over the ``read-only`` option: ``auto-read-only`` may have degraded it).
        """
        discard = options.get("discard", Discard.IGNORE)
        resolved = _DISCARD.get(discard) if isinstance(discard, str) else None
        if resolved is None:
            raise OpenError("Invalid discard option")
        detect = opt_enum(options, "detect-zeroes", DetectZeroes, DetectZeroes.OFF)
        if detect is DetectZeroes.UNMAP and resolved is not Discard.UNMAP:
            raise OpenError(
                "setting detect-zeroes to unmap is not allowed without setting "
                "discard operation to unmap"
            )
        return cls(
            read_only=bool(read_only),
            direct=opt_bool(options, "cache.direct", False),
            no_flush=opt_bool(options, "cache.no-flush", False),
            detect_zeroes=detect,
            discard=resolved,
        )

    def with_read_only(self, read_only: bool) -> NodeSettings:
        return dataclasses.replace(self, read_only=bool(read_only))


# -- driver-specific options ---------------------------------------------------------------
def opt_bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean option: a bool, or a QemuOpts spelling (``on``/``off``, ``yes``/``no``...)."""
    if key not in options:
        return default
    value = parse_bool(options[key])
    if value is None:
        raise OpenError(f"Parameter '{key}' expects 'on' or 'off'")
    return value


def opt_int(options: Mapping[str, Any], key: str, default: int, *, minimum: int = 0) -> int:
    """A number option (QAPI int/size); strings of digits are what QemuOpts would yield."""
    if key not in options:
        return default
    value = options[key]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        if minimum >= 0:
            raise OpenError(f"Parameter '{key}' expects a non-negative number below 2^64")
        raise OpenError(f"Parameter '{key}' expects a number")
    return value


def opt_str(options: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    """A string option (node references included)."""
    if key not in options:
        return default
    value = options[key]
    if not isinstance(value, str):
        raise OpenError(f"Invalid parameter type for '{key}', expected: string")
    return value


def opt_enum(options: Mapping[str, Any], key: str, enum: type[E], default: E) -> E:
    """A QAPI enum option (``qapi_enum_parse``): one of the enum's names, nothing else."""
    if key not in options:
        return default
    value = options[key]
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    raise OpenError(f"Parameter '{key}' does not accept value '{value}'")
