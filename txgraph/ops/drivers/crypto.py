"""Open steps of the encrypted formats: ``luks`` and the ``encrypt.*`` options of qcow2.

``luks`` is ``block_crypto_open_generic``: the ``file`` child first (role
IMAGE, permissions of family ``crypto``), then the options, then the volume; qcow2 passes its
``encrypt.key-secret`` on. In both, the secret is not looked up here but
handed to the driver as a :class:`txgraph.io.crypto.SecretRef`, so that a
missing or wrong secret is reported at the point of the open where QEMU looks
it up (after the qcow2 header checks, before the LUKS header is read).

:mod:`txgraph.ops.drivers` merges :func:`crypto_openers` into its table and
passes its helpers in (this module cannot import it back: one-way imports).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from txgraph.io.crypto.secret import SECRET_OPTION
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode
from txgraph.model.perm import Role
from txgraph.ops.inherit import OptionSet
from txgraph.ops.secrets import secret_ref

if TYPE_CHECKING:
    from txgraph.ops.open import Opener

__all__ = ["crypto_openers", "qcow2_crypto_options"]

OpenFn = Callable[["Opener", BlockNode, DriverSpec, OptionSet], None]
RuntimeOpen = Callable[..., None]
Consume = Callable[[OptionSet, DriverSpec], dict[str, Any]]


def crypto_openers(runtime_open: RuntimeOpen, consume: Consume) -> dict[str, OpenFn]:
    """The open functions of the encrypted formats, built on ops.drivers' helpers."""

    def open_luks(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
        """``block_crypto_open_generic`` for ``luks``."""
        child = opener.open_child(None, work, "file", node, Role.IMAGE, False)
        assert child is not None
        opts = consume(work, spec)
        secret = secret_ref(opener.session, opts.get("key-secret"))
        runtime_open(opener, node, {"file": child}, {SECRET_OPTION: secret})

    return {"luks": open_luks}


def qcow2_crypto_options(opener: Opener, opts: dict[str, Any]) -> dict[str, Any]:
    """What a qcow2 driver needs beyond its options: the ``encrypt.key-secret`` reference."""
    secret_id = opts.get("encrypt.key-secret")
    if secret_id is None:
        return {}
    return {SECRET_OPTION: secret_ref(opener.session, secret_id)}
