"""Driver specifications of the encrypted formats (merged into ``DRIVER_SPECS``).

``luks`` (block/crypto.c ``bdrv_crypto_luks``): a format with one ``file``
child of role IMAGE whose permissions follow ``block_crypto_child_perms``
(family ``crypto``: WRITE and RESIZE only when the parents take them, and
shared when they share them), the ``key-secret`` option (strong: it appears in
``json:`` filenames, ``block_crypto_strong_runtime_opts``) and a reopen
handler with no mutable options, so a reopen must repeat ``key-secret``
unchanged (``bdrv_reopen_prepare``'s generic rules). qcow2's ``encrypt.*``
options are part of the qcow2 spec itself.

The classes are passed in by :mod:`txgraph.model.drivers` (this module cannot
import it back: one-way imports).
"""

from __future__ import annotations

from typing import Any

from txgraph.model.perm import Role

__all__ = ["crypto_specs"]


def crypto_specs(spec_cls: Any, child_cls: Any) -> list[Any]:
    """The DriverSpec objects of the encrypted formats, built with the given classes."""
    return [
        spec_cls(
            "luks",
            "format",
            options=frozenset({"key-secret"}),
            strong_opts=frozenset({"key-secret"}),
            children=(child_cls("file", Role.IMAGE),),
            perm_family="crypto",
        ),
    ]
