"""The txgraph exception tree.

Every error txgraph raises on purpose descends from :class:`TxgraphError` and
carries the QMP ``desc`` text QEMU 7.2 would print for the same situation, so
the QMP layer can answer with QEMU's exact words while the structured fields
(rule id, subjects, explanation) travel beside them.

::

    TxgraphError
     ├── QMPError              wire / negotiation level (class CommandNotFound or GenericError)
     ├── QAPIError             argument validation against the QAPI schema
     ├── BlockError            a block-layer rule refused the request (GenericError)
     │    ├── OpenError        opening a node or an image failed
     │    ├── PermissionConflict   P3: two parents disagree on what they share
     │    └── InvariantViolation   a checker rule failed (carries the Verdict)
     ├── IOFailure             a data-plane request failed (EIO, EPERM, ...)
     └── (outside QMP)         PlanError, StateError (plan and state files), QMPClientError
                               (a peer's socket), RenderError (Graphviz): the CLI prints them
                               as one line
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TxgraphError",
    "QMPError",
    "QAPIError",
    "BlockError",
    "OpenError",
    "PermissionConflict",
    "InvariantViolation",
    "IOFailure",
]


class TxgraphError(Exception):
    """Root of every error txgraph raises deliberately.

    ``desc`` is the human text QEMU would put into a QMP error reply;
    ``error_class`` is the QMP error class (QEMU uses ``GenericError`` for
    almost everything in the block layer).
    """

    error_class: str = "GenericError"

    def __init__(
        self,
        desc: str,
        *,
        rule: str | None = None,
        subjects: tuple[str, ...] = (),
        explanation: Any = None,
    ) -> None:
        super().__init__(desc)
        self.desc = desc
        self.rule = rule
        self.subjects = subjects
        self.explanation = explanation

    def __str__(self) -> str:
        return self.desc

    def to_qmp(self) -> dict[str, Any]:
        """The ``error`` member of a QMP reply, plus txgraph's structured explanation.

        The explanation goes into a downstream-prefixed member so that clients
        following the QMP spec ignore it.
        """
        err: dict[str, Any] = {"class": self.error_class, "desc": self.desc}
        extra: dict[str, Any] = {}
        if self.rule:
            extra["rule"] = self.rule
        if self.subjects:
            extra["subjects"] = list(self.subjects)
        if self.explanation is not None:
            extra["explanation"] = self.explanation
        if extra:
            err["__io.txgraph_explanation"] = extra
        return err


class QMPError(TxgraphError):
    """A protocol-level refusal (unknown command, negotiation state)."""

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.error_class = error_class


class QAPIError(TxgraphError):
    """The arguments do not match the QAPI schema (type, member, enum value)."""


class BlockError(TxgraphError):
    """A block-layer rule refused the request; nothing was changed."""


class OpenError(BlockError):
    """Opening a node failed (missing file, bad header, unknown driver...)."""


class PermissionConflict(BlockError):
    """Rule P3: a parent requires permissions another parent does not share."""


class InvariantViolation(BlockError):
    """A checker invariant failed; ``explanation`` holds the checker's verdict."""


class IOFailure(TxgraphError):
    """A data-plane request failed; ``errno`` tells how (as QEMU's -errno)."""

    def __init__(self, desc: str, errno: int) -> None:
        super().__init__(desc)
        self.errno = errno
