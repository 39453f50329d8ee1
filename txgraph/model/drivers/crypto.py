"""Driver specifications of the encrypted formats.

``luks`` (block/crypto.c ``bdrv_crypto_luks``): a format with one ``file``
child of role IMAGE whose permissions follow ``block_crypto_child_perms``
(family ``crypto``: WRITE and RESIZE only when the parents take them, and
shared when they share them), the ``key-secret`` option (strong: it appears in
``json:`` filenames, ``block_crypto_strong_runtime_opts``) and a reopen
handler with no mutable options, so a reopen must repeat ``key-secret``
unchanged (``bdrv_reopen_prepare``'s generic rules). qcow2's ``encrypt.*``
options are part of the qcow2 spec itself.
"""

from __future__ import annotations

from txgraph.model.drivers.spec import ChildSpec, DriverSpec
from txgraph.model.perm_bits import Role

__all__ = ["SPECS"]

#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
    DriverSpec(
        "luks",
        "format",
        options=frozenset({"key-secret"}),
        strong_opts=frozenset({"key-secret"}),
        children=(ChildSpec("file", Role.IMAGE),),
        perm_family="crypto",
    ),
)
