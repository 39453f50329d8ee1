"""QEMU's command line for drives: QemuOpts parsing of ``-drive`` and the shorthands.

Reproduces ``opts_do_parse``/``get_opt_name_value`` (util/qemu-option.c) as
``qemu_opts_parse_noisily`` runs them for ``-drive`` (no implied key, flags
warned about), ``drive_def``/``drive_add`` (``-hda``..``-hdd`` at index 0..3
with ``media=disk``, ``-cdrom`` at index 2 with ``media=cdrom``), and the
``-snapshot`` switch (softmmu/vl.c). Reference: qemu-options.md §7.1, §8.2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from txgraph.model.names import id_wellformed

__all__ = ["DriveArg", "CommandLine", "DriveError", "parse_command_line", "parse_opts"]

PROG = "qemu-system-x86_64"


class DriveError(Exception):
    """A refusal, printed as QEMU prints it: ``PROG: LOCATION: MESSAGE`` (+ hint lines)."""

    def __init__(self, message: str, location: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{PROG}: {where}{self.message}\n{self.hint}"


@dataclass
class DriveArg:
    """One drive's QemuOpts: ``pairs`` in command-line order (the last value of a key wins)."""

    location: str
    pairs: list[tuple[str, str]] = field(default_factory=list)
    id: str | None = None

    def get(self, key: str) -> str | None:
        for k, v in reversed(self.pairs):
            if k == key:
                return v
        return None

    def has(self, key: str) -> bool:
        return any(k == key for k, _ in self.pairs)

    def set(self, key: str, value: str) -> None:
        """``qemu_opt_set``: a new entry appended, so it wins over earlier ones."""
        self.pairs.append((key, value))

    def unset(self, key: str) -> None:
        self.pairs = [(k, v) for k, v in self.pairs if k != key]

    def to_dict(self) -> dict[str, str]:
        """``qemu_opts_to_qdict``: one entry per key, the last value."""
        out: dict[str, str] = {}
        for k, v in self.pairs:
            out.pop(k, None)
            out[k] = v
        return out


@dataclass
class CommandLine:
    drives: list[DriveArg] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    snapshot: bool = False
    warnings: list[str] = field(default_factory=list)


def _opt_value(text: str, pos: int) -> tuple[str, int]:
    """``get_opt_value``: up to the next single comma; ``,,`` is a literal comma."""
    out = []
    while pos < len(text):
        if text[pos] == ",":
            if text[pos + 1 : pos + 2] == ",":
                out.append(",")
                pos += 2
                continue
            break
        out.append(text[pos])
        pos += 1
    return "".join(out), pos


def parse_opts(text: str, location: str, warnings: list[str]) -> DriveArg:
    """``opts_do_parse`` for ``-drive``: ``key=value`` pairs, bare flags, and the ``id``."""
    drive = DriveArg(location=location)
    pos = 0
    while pos < len(text):
        end = pos
        while end < len(text) and text[end] not in "=,":
            end += 1
        if end < len(text) and text[end] == "=":
            name = text[pos:end]
            value, pos = _opt_value(text, end + 1)
        else:
            name = text[pos:end]
            pos = end
            prefix = ""
            if name.startswith("no"):
                name, value, prefix = name[2:], "off", "no"
            else:
                value = "on"
            warnings.append(
                f"{PROG}: {location}: warning: short-form boolean option "
                f"'{prefix}{name}' deprecated\nPlease use {name}={value} instead"
            )
        if pos < len(text):
            pos += 1  # the separating comma
        if name == "id":
            drive.id = value
            continue
        drive.pairs.append((name, value))
    if drive.id is not None and not id_wellformed(drive.id):
        raise DriveError(
            "Parameter 'id' expects an identifier",
            location,
            "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.\n",
        )
    return drive


_HD_INDEX = {"-hda": 0, "-hdb": 1, "-hdc": 2, "-hdd": 3}


def parse_command_line(argv: list[str]) -> CommandLine:
    """softmmu/vl.c's option loop for the drive options (``drive_def``, ``drive_add``)."""
    cl = CommandLine()
    i = 0
    while i < len(argv):
        opt = argv[i]
        flag = "-" + opt.lstrip("-") if opt.startswith("--") else opt
        if flag == "-snapshot":
            cl.snapshot = True
            i += 1
            continue
        if not opt.startswith("-"):
            # a bare argument is a disk image, -hda's twin: drive_add(IF_DEFAULT, 0, optarg,
            # HD_OPTS) with the argument alone as the error location
            drive = parse_opts("media=disk", opt, cl.warnings)
            drive.set("index", "0")
            drive.set("file", opt)
            cl.drives.append(drive)
            i += 1
            continue
        if flag not in ("-drive", "-object", "-cdrom", *_HD_INDEX):
            raise DriveError(f"{opt}: invalid option")
        if i + 1 >= len(argv):
            raise DriveError(f"{opt}: requires an argument")
        arg = argv[i + 1]
        location = f"{opt} {arg}"
        i += 2
        if flag == "-object":
            cl.objects.append(arg)
            continue
        if flag == "-drive":
            drive = parse_opts(arg, location, cl.warnings)
        else:
            media = "cdrom" if flag == "-cdrom" else "disk"
            drive = parse_opts(f"media={media}", location, cl.warnings)
            drive.set("index", str(2 if flag == "-cdrom" else _HD_INDEX[flag]))
            drive.set("file", arg)
        if drive.id is not None and any(d.id == drive.id for d in cl.drives):
            raise DriveError(f"Duplicate ID '{drive.id}' for drive", location)
        cl.drives.append(drive)
    return cl
