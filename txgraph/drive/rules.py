"""The rule registry of the -drive specification and the state the rules work on.

A rule is a small named function with the QEMU function it reproduces; rules
run in registration order, one drive at a time (``drive_init_func`` runs
``drive_new`` for each ``-drive`` in command-line order). Every value a rule
resolves is recorded with the rule's name, which is what ``--explain`` prints
and what docs/drive-spec.md is generated from (:mod:`txgraph.drive.docs`).

Lock discipline: a :class:`DriveState` and a :class:`DriveContext` are owned by
the single translation call that creates them; nothing here is shared between
threads, and the registry is filled at import time only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from txgraph.drive.qemuopts import DriveArg, DriveError

__all__ = ["Rule", "RULES", "rule", "DriveState", "DriveContext", "Explained"]


@dataclass(frozen=True)
class Explained:
    """One resolved value and the rule that produced it."""

    drive: str
    key: str
    value: Any
    rule: str


@dataclass
class DriveState:
    """One ``-drive`` as the rules transform it (``all_opts`` -> ``bs_opts`` -> nodes)."""

    arg: DriveArg
    #: the remaining QemuOpts, last value per key (``qemu_opts_to_qdict``)
    opts: dict[str, str] = field(default_factory=dict)
    #: keys consumed by drive_new (qemu_legacy_drive_opts), string values
    legacy: dict[str, str] = field(default_factory=dict)
    #: keys consumed by blockdev_init (qemu_common_drive_opts), string values
    common: dict[str, str] = field(default_factory=dict)
    file: str | None = None
    #: BDRV_O_* flags set by the drive options: SNAPSHOT, COPY_ON_READ, NATIVE_AIO, IO_URING
    flags: set[str] = field(default_factory=set)
    interface: str = "none"
    bus: int = 0
    unit: int = 0
    index: int = -1
    media: str = "disk"
    read_only: bool = False
    id: str = ""
    #: what belongs to the BlockBackend or the device, each with a reason
    backend: dict[str, Any] = field(default_factory=dict)
    #: the root node in the scratch session (None for an empty drive)
    top: str | None = None
    #: the original image's root when snapshot=on put an overlay above it
    snapshot_base: str | None = None
    explained: list[Explained] = field(default_factory=list)

    def fail(self, message: str) -> DriveError:
        return DriveError(message, self.arg.location)

    def note(self, key: str, value: Any, rule_name: str) -> None:
        self.explained.append(Explained(self.id or self.arg.location, key, value, rule_name))


@dataclass
class DriveContext:
    """What the drives of one command line share: the scratch engine and the warnings."""

    #: the scratch txgraph Engine the drives are opened on (``session`` is its Session)
    engine: Any
    session: Any
    drives: list[DriveState] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapshot_switch: bool = False
    block_default_type: str = "none"
    #: files the translation created (snapshot overlays), removed by the caller
    temp_files: list[str] = field(default_factory=list)

    def warn(self, location: str, text: str) -> None:
        """``warn_report`` with the option's location (what QEMU prints, program prefix included)."""
        self.warnings.append(f"qemu-system-x86_64: {location}: warning: {text}")


RuleFn = Callable[[DriveState, DriveContext], None]


@dataclass(frozen=True)
class Rule:
    name: str
    #: the QEMU function(s) this rule reproduces, with their source file
    qemu: str
    #: drive_new, blockdev_init, bdrv_open or backend
    stage: str
    fn: RuleFn

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()

    def __call__(self, st: DriveState, ctx: DriveContext) -> None:
        self.fn(st, ctx)


RULES: list[Rule] = []


def rule(name: str, qemu: str, stage: str) -> Callable[[RuleFn], Rule]:
    """Register a rule; the registration order is the order QEMU applies them."""

    def wrap(fn: RuleFn) -> Rule:
        if any(r.name == name for r in RULES):
            raise ValueError(f"duplicate rule {name}")
        r = Rule(name, qemu, stage, fn)
        RULES.append(r)
        return r

    return wrap
