"""A reference to a ``secret`` object that a driver resolves when QEMU would look it up.

QEMU's crypto drivers call ``qcrypto_secret_lookup_as_utf8`` in the middle of
their open (after the header of qcow2 was validated, before the LUKS header is
read), so the error a user sees depends on where the lookup happens. The ops
layer owns the QOM objects; it hands the driver a :class:`SecretRef` whose
:meth:`resolve` does the lookup with QEMU's errors at the driver's own point.

The reference never shows its value: ``repr`` and ``str`` print the object id
only, so options dicts holding one can be logged safely.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SecretRef", "SECRET_OPTION"]

#: the key under which the ops layer passes a :class:`SecretRef` to a driver
SECRET_OPTION = "x-txgraph-key-secret"


class SecretRef:
    """The secret named ``secret_id``; :meth:`resolve` raises OpenError with QEMU's text."""

    __slots__ = ("secret_id", "_lookup")

    def __init__(self, secret_id: str, lookup: Callable[[str], str]) -> None:
        self.secret_id = secret_id
        self._lookup = lookup

    def resolve(self) -> str:
        """``qcrypto_secret_lookup_as_utf8``: the password, or OpenError."""
        return self._lookup(self.secret_id)

    def __repr__(self) -> str:
        return f"SecretRef({self.secret_id!r})"

    __str__ = __repr__
