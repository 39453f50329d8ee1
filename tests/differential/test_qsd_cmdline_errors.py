"""Bad qemu-storage-daemon command lines: the same exit status and stderr on QSD 7.2 and txgraph.

Each line runs on the real daemon (a subprocess with a deadline, killed on every
exit path) and on txgraph's command-line runner with a fresh in-process engine
(what ``txgraph serve`` runs before it serves; the CLI itself is covered by
test_qsd_cmdline_graph.py). Every line here is refused by QSD, so neither side
ever gets to serve. ``{dir}`` is a private directory per side, rendered back
as ``{dir}`` before comparing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.qsd import QSD_BINARY
from txgraph.ops.session import Session
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine
from txgraph.qmp.qsd_argv import CmdlineError
from txgraph.qmp.qsd_cmdline import run_command_line, write_pidfile

pytestmark = pytest.mark.qsd

NULL = ["--blockdev", "driver=null-co,node-name=n"]
NBD = ["--nbd-server", "addr.type=unix,addr.path={dir}/nbd.sock"]
SOCK = ["--chardev", "socket,path={dir}/m.sock,server=on,wait=off,id=c"]
LONG = "a" * 128

BAD: list[tuple[str, list[str]]] = [
    # --blockdev, keyval syntax (util/keyval.c)
    ("missing-equals", ["--blockdev", "driver=null-co,node-name"]),
    ("empty-key", ["--blockdev", "driver=null-co,=x"]),
    ("index-first", ["--blockdev", "driver=null-co,node-name=n,0=1"]),
    ("empty-fragment", ["--blockdev", "driver=null-co,node-name=n,a..b=1"]),
    ("key-too-long", ["--blockdev", f"driver=null-co,node-name=n,{LONG}=1"]),
    ("fragment-too-long", ["--blockdev", f"driver=null-co,node-name=n,x.{LONG}=1"]),
    ("leaf-and-object", ["--blockdev", "null-co,node-name=n,cache.direct=on,cache.direct.x=1"]),
    ("list-gap", ["--blockdev", "driver=quorum,node-name=q,children.1=x,vote-threshold=1"]),
    ("list-and-members", ["--blockdev", "quorum,node-name=q,children.0=a,children.x=1"]),
    ("help", ["--blockdev", "help"]),
    ("help-after-error", ["--blockdev", "help,0=1"]),
    ("help-before-list-error", ["--blockdev", "null-co,node-name=n,a.0=1,a.x=2,help"]),
    ("implied-value-ends-at-comma", ["--blockdev", "null-co,,x,node-name=n"]),
    ("escaped-comma", ["--blockdev", "driver=null-co,node-name=n,,x"]),
    ("empty", ["--blockdev", ""]),
    # --blockdev, the keyval visitor and blockdev-add
    ("unknown-driver", ["--blockdev", "driver=bogus,node-name=n"]),
    ("missing-node-name", ["--blockdev", "driver=null-co"]),
    ("size-suffix-is-not-int", ["--blockdev", "null-co,node-name=n,size=1M,bogus=1"]),
    ("unexpected-key", ["--blockdev", "null-co,node-name=n,size=0x10,bogus=1"]),
    ("fraction", ["--blockdev", "driver=null-co,node-name=n,latency-ns=1.5"]),
    ("uint64-no-suffix", ["--blockdev", "null-co,node-name=n,latency-ns=1k,bogus=1"]),
    ("uint64-negative-wraps", ["--blockdev", "null-co,node-name=n,latency-ns=-1,bogus=1"]),
    ("uint64-overflow", ["--blockdev", "null-co,node-name=n,latency-ns=18446744073709551616"]),
    ("int64-overflow", ["--blockdev", "null-co,node-name=n,size=9223372036854775808"]),
    ("bad-bool", ["--blockdev", "driver=null-co,node-name=n,read-only=maybe"]),
    ("object-for-scalar", ["--blockdev", "driver=null-co,node-name.a=x"]),
    ("scalar-for-object", ["--blockdev", "driver=null-co,node-name=n,cache=x"]),
    (
        "list-element-path",
        [
            "--blockdev",
            "driver=quorum,node-name=q,children.0.driver=null-co,"
            "children.0.bogus=1,vote-threshold=1",
        ],
    ),
    (
        "list-to-missing-node",
        ["--blockdev", "quorum,node-name=q,children.0=a,children.00=b,vote-threshold=1"],
    ),
    ("duplicate-node-name", [*NULL, *NULL]),
    ("bad-json", ["--blockdev", '{"driver":"null-co","node-name":"n"']),
    ("two-json-values", ["--blockdev", '{"driver":"null-co","node-name":"n"} x']),
    ("json-wrong-type", ["--blockdev", '{"driver":"null-co","node-name":5}']),
    ("not-json", ["--blockdev", "[1]"]),
    # the option scan (getopt_long, pre-parse)
    ("unknown-option-wins", ["--blockdev", "driver=bogus", "--bogus"]),
    ("unknown-short-option", ["-x"]),
    ("missing-argument", ["--blockdev"]),
    ("stray-argument-wins", ["foo", "--blockdev", "driver=bogus"]),
    ("abbreviation", ["--b", "x"]),
    ("equals-form", ["--blockdev=driver=bogus"]),
    ("trace-missing-argument", ["-T"]),
    ("pidfile-missing-argument", ["--pidfile"]),
    ("pidfile-after-options", ["--pidfile", "{dir}/no/p", "--blockdev", "driver=bogus"]),
    ("pidfile-directory-missing", ["--pidfile", "{dir}/no/p", *NULL]),
    # --object
    ("object-bad-int", ["--object", "throttle-group,id=tg0,x-iops-total=abc"]),
    (
        "object-duplicate-id",
        ["--object", "throttle-group,id=tg0,x-iops-total=10", "--object", "throttle-group,id=tg0"],
    ),
    ("object-unknown-type", ["--object", "bogus,id=x"]),
    ("object-missing-id", ["--object", "iothread"]),
    ("object-bad-id", ["--object", "iothread,id=1bad"]),
    ("object-json-unexpected", ["--object", '{"qom-type":"iothread","id":"t","bogus":1}']),
    ("object-negative-limit", ["--object", "throttle-group,id=tg0,x-iops-total=-1"]),
    # --nbd-server and --export
    ("nbd-missing-path", ["--nbd-server", "addr.type=unix"]),
    ("nbd-bad-type", ["--nbd-server", "addr.type=bogus"]),
    (
        "nbd-max-connections-int",
        ["--nbd-server", "addr.type=unix,addr.path={dir}/n.sock,max-connections=x"],
    ),
    (
        "nbd-max-connections-range",
        ["--nbd-server", "addr.type=unix,addr.path={dir}/n.sock,max-connections=-1"],
    ),
    (
        "nbd-tls-creds-missing",
        ["--nbd-server", "addr.type=unix,addr.path={dir}/n.sock,tls-creds=nope"],
    ),
    (
        "nbd-tls-creds-wrong-type",
        [
            "--object",
            "iothread,id=io",
            "--nbd-server",
            "addr.type=unix,addr.path={dir}/n.sock,tls-creds=io",
        ],
    ),
    ("nbd-server-twice", [*NBD, "--nbd-server", "addr.type=unix,addr.path={dir}/n2.sock"]),
    ("export-without-server", [*NULL, "--export", "type=nbd,id=e,node-name=n"]),
    ("export-missing-node", [*NBD, "--export", "type=nbd,id=e,node-name=nope"]),
    (
        "export-duplicate-id",
        [
            *NULL,
            *NBD,
            "--export",
            "type=nbd,id=e,node-name=n",
            "--export",
            "type=nbd,id=e,node-name=n,name=x",
        ],
    ),
    ("export-missing-id", [*NULL, *NBD, "--export", "nbd,node-name=n"]),
    ("export-unexpected", [*NULL, *NBD, "--export", "nbd,id=e,node-name=n,bogus=1"]),
    ("export-unknown-type", ["--e", "x"]),
    # --chardev and --monitor
    ("monitor-missing-chardev", ["--monitor", "chardev=nope"]),
    ("monitor-implied-chardev", ["--mon", "nope"]),
    ("monitor-readline", [*SOCK, "--monitor", "chardev=c,mode=readline"]),
    ("monitor-unexpected", [*SOCK, "--monitor", "c,bogus=1"]),
    ("monitor-in-use", [*SOCK, "--monitor", "c", "--monitor", "c,pretty=on"]),
    (
        "short-form-warnings",
        ["--chardev", "socket,path={dir}/m.sock,server,nowait,id=c", "--monitor", "c,pretty=maybe"],
    ),
    ("chardev-no-id", ["--chardev", "socket,path={dir}/m.sock,server=on,wait=off"]),
    ("chardev-unknown-key", [*SOCK[:1], SOCK[1] + ",bogus=1"]),
    ("chardev-unknown-backend", ["--chardev", "bogus,id=c"]),
    ("chardev-missing-backend", ["--chardev", "id=c"]),
    ("chardev-bad-id", ["--chardev", "socket,id=1x"]),
    ("chardev-bad-bool", ["--chardev", "socket,path={dir}/z.sock,server=maybe,id=c"]),
    ("chardev-no-path", ["--chardev", "socket,id=c"]),
    (
        "chardev-duplicate",
        [*SOCK, "--chardev", "socket,path={dir}/m2.sock,server=on,wait=off,id=c"],
    ),
    ("chardev-bind-fails", ["--chardev", "socket,path={dir}/no/m.sock,server=on,wait=off,id=c"]),
    ("chardev-path-is-a-directory", ["--chardev", "socket,path={dir},server=on,wait=off,id=c"]),
    ("nbd-bind-fails", ["--nbd-server", "addr.type=unix,addr.path={dir}/no/n.sock"]),
    (
        "chardev-path-too-long",
        ["--chardev", f"socket,path={{dir}}/{'a' * 110},server=on,wait=off,id=c"],
    ),
]


def _args(args: list[str], workdir: Path) -> list[str]:
    return [a.replace("{dir}", str(workdir)) for a in args]


def _qsd(args: list[str], workdir: Path) -> tuple[int, str]:
    """The real daemon; a line it accepted would run forever, so the deadline kills it."""
    # argv[0] as a user types it: glibc's getopt messages print argv[0] verbatim
    proc = subprocess.Popen(
        ["qemu-storage-daemon", *_args(args, workdir)],
        executable=QSD_BINARY,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"qemu-storage-daemon accepted {args}: the case is not a bad line")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, (out + err).replace(str(workdir), "{dir}")


def _txgraph(args: list[str], workdir: Path) -> tuple[int, str]:
    """What ``txgraph serve`` does before serving, on a fresh engine; (exit status, stderr)."""
    session = Session()
    engine = Engine(CommandContext(session))
    try:
        run = run_command_line(_args(args, workdir), engine)
        if run.pidfile is not None:
            write_pidfile(run.pidfile)
        pytest.fail(f"txgraph accepted {args}")
    except CmdlineError as err:
        text = "".join(err.warnings) + err.render()
        return 1, text.replace(str(workdir), "{dir}")
    finally:
        session.close()


@pytest.mark.parametrize(("case", "args"), BAD, ids=[c for c, _ in BAD])
def test_bad_command_line_same_message(case: str, args: list[str], tmp_path: Path) -> None:
    (tmp_path / "qsd").mkdir()
    (tmp_path / "tx").mkdir()
    expected = _qsd(args, tmp_path / "qsd")
    got = _txgraph(args, tmp_path / "tx")
    assert expected[0] == 1, expected  # a refusal on QSD: the table holds bad lines only
    assert got == expected


def test_table_covers_every_option() -> None:
    used = {a.split("=")[0] for _, args in BAD for a in args if a.startswith("-")}
    for option in (
        "--blockdev",
        "--object",
        "--export",
        "--nbd-server",
        "--chardev",
        "--monitor",
        "--pidfile",
    ):
        assert option in used
    assert len(BAD) >= 30
