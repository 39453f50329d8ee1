"""qemu-storage-daemon's option scan: ``getopt_long`` over QSD 7.2's options.

Reproduces QSD's first pass over its arguments (``process_options`` with
``pre_parse``, storage-daemon/qemu-storage-daemon.c, and glibc's permuting
``getopt_long``): every option is checked before any of them runs, so a
malformed option anywhere, ``-h``/``-V`` anywhere, or a stray argument wins
over a refusal of an earlier ``--blockdev``. Long options may be abbreviated
to any unambiguous prefix (``--b``), and take their argument either as
``--opt=ARG`` or as the next word; scanning stops at ``--``.

Errors print as QSD prints them: ``qemu-storage-daemon: MESSAGE`` for the
scan, ``qemu-storage-daemon: LOCATION: MESSAGE`` for an option's own refusal,
where LOCATION is the option's words as typed (``--blockdev x`` or
``--blockdev=x``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from txgraph.errors import TxgraphError

__all__ = [
    "LONG_OPTIONS",
    "PROG",
    "CmdlineError",
    "QsdArgv",
    "QsdOption",
    "Unsupported",
    "scan_argv",
]

PROG = "qemu-storage-daemon"

#: QSD 7.2's long options: name -> takes an argument
LONG_OPTIONS: dict[str, bool] = {
    "blockdev": True,
    "chardev": True,
    "daemonize": False,
    "export": True,
    "help": False,
    "monitor": True,
    "nbd-server": True,
    "object": True,
    "pidfile": True,
    "trace": True,
    "version": False,
}
_SHORT = {"h": ("help", False), "T": ("trace", True), "V": ("version", False)}


class CmdlineError(TxgraphError):
    """A refusal printed as QSD prints it, then exit status 1.

    ``location`` is the option's words (empty for the scan's own messages);
    ``hint`` holds any further lines (``error_append_hint``), newline-terminated.
    """

    prog = PROG

    def __init__(self, desc: str, location: str = "", hint: str = "") -> None:
        super().__init__(desc)
        self.location = location
        self.hint = hint
        #: deprecation warnings printed before this refusal (rendered lines)
        self.warnings: list[str] = []

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{self.prog}: {where}{self.desc}\n{self.hint}"


class Unsupported(CmdlineError):
    """A valid QSD option txgraph does not implement: said plainly, in txgraph's name."""

    prog = "txgraph serve"


@dataclass
class QsdOption:
    """One option in command-line order: its long name, argument and words as typed."""

    name: str
    arg: str
    location: str


@dataclass
class QsdArgv:
    options: list[QsdOption] = field(default_factory=list)
    #: "help" or "version" when the scan reached one (QSD answers and exits 0)
    answer: str | None = None
    pidfile: str | None = None


def _long(word: str, argv: list[str], i: int) -> tuple[QsdOption, int]:
    body = word[2:]
    name, eq, inline = body.partition("=")
    matches = [n for n in LONG_OPTIONS if n == name] or [
        n for n in LONG_OPTIONS if n.startswith(name)
    ]
    if len(matches) != 1:
        if matches:  # cannot happen with QSD's names (no two share a prefix)
            listed = " ".join(f"'--{n}'" for n in matches)
            raise CmdlineError(f"option '{word}' is ambiguous; possibilities: {listed}")
        raise CmdlineError(f"unrecognized option '{word}'")
    full = matches[0]
    if not LONG_OPTIONS[full]:
        if eq:
            raise CmdlineError(f"option '--{full}' doesn't allow an argument")
        return QsdOption(full, "", word), i + 1
    if eq:
        return QsdOption(full, inline, word), i + 1
    if i + 1 >= len(argv):
        raise CmdlineError(f"option '--{full}' requires an argument")
    return QsdOption(full, argv[i + 1], f"{word} {argv[i + 1]}"), i + 2


def _short(word: str, argv: list[str], i: int) -> tuple[list[QsdOption], int]:
    out: list[QsdOption] = []
    pos = 1
    while pos < len(word):
        letter = word[pos]
        if letter not in _SHORT:
            raise CmdlineError(f"invalid option -- '{letter}'")
        name, takes = _SHORT[letter]
        if not takes:
            out.append(QsdOption(name, "", word))
            pos += 1
            continue
        if pos + 1 < len(word):
            out.append(QsdOption(name, word[pos + 1 :], word))
            return out, i + 1
        if i + 1 >= len(argv):
            raise CmdlineError(f"option requires an argument -- '{letter}'")
        out.append(QsdOption(name, argv[i + 1], f"{word} {argv[i + 1]}"))
        return out, i + 2
    return out, i + 1


def scan_argv(argv: list[str]) -> QsdArgv:
    """The pre-parse pass: QSD's options in order, or the scan's first error.

    :raise CmdlineError: an unknown option, a missing or unwanted argument, or
        an argument that is not an option (``foo: Unexpected argument``).
    """
    result = QsdArgv()
    stray: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            break  # QSD ignores whatever follows (observed on 7.2)
        if word.startswith("--"):
            option, i = _long(word, argv, i)
            found = [option]
        elif word.startswith("-") and word != "-":
            found, i = _short(word, argv, i)
        else:
            stray.append(word)
            i += 1
            continue
        for option in found:
            if option.name in ("help", "version"):
                result.answer = option.name  # answered at once, like QSD's exit(0)
                return result
            if option.name == "pidfile":
                result.pidfile = option.arg
            else:
                result.options.append(option)
    if stray:
        raise CmdlineError("Unexpected argument", stray[0])
    return result
