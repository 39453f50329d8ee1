"""Open steps of the encrypted formats: ``luks`` and the ``encrypt.*`` options of qcow2.

``luks`` is ``block_crypto_open_generic``: the ``file`` child first (role
IMAGE, permissions of family ``crypto``), then the options, then the volume; qcow2 passes its
``encrypt.key-secret`` on. In both, the secret is not looked up here but
handed to the driver as a :class:`txgraph.io.crypto.SecretRef`, so that a
missing or wrong secret is reported at the point of the open where QEMU looks
it up (after the qcow2 header checks, before the LUKS header is read).

qcow2's open (:mod:`txgraph.ops.drivers.qcow2`) takes its secret from
:func:`qcow2_crypto_options`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgraph.io.crypto.secret import SECRET_OPTION
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode
from txgraph.model.perm_bits import Role
from txgraph.ops.drivers.common import OpenFn, ReopenFn, consume, runtime_open
from txgraph.ops.inherit import OptionSet
from txgraph.ops.secrets import secret_ref

if TYPE_CHECKING:
    from txgraph.ops.open import Opener

__all__ = ["OPENERS", "REOPENERS", "qcow2_crypto_options"]


def _open_luks(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``block_crypto_open_generic`` for ``luks``."""
    child = opener.open_child(None, work, "file", node, Role.IMAGE, False)
    assert child is not None
    opts = consume(work, spec)
    secret = secret_ref(opener.session, opts.get("key-secret"))
    runtime_open(opener, node, {"file": child}, {SECRET_OPTION: secret})


def qcow2_crypto_options(opener: Opener, opts: dict[str, Any]) -> dict[str, Any]:
    """What a qcow2 driver needs beyond its options: the ``encrypt.key-secret`` reference."""
    secret_id = opts.get("encrypt.key-secret")
    if secret_id is None:
        return {}
    return {SECRET_OPTION: secret_ref(opener.session, secret_id)}


#: this family's ``bdrv_open`` steps, merged into :data:`txgraph.ops.drivers.OPENERS`
OPENERS: dict[str, OpenFn] = {"luks": _open_luks}
#: luks's reopen handler changes nothing: ``key-secret`` must be repeated unchanged
REOPENERS: dict[str, ReopenFn] = {}
