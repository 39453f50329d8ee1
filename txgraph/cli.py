"""The ``txgraph`` command.

``txgraph serve --qmp PATH`` runs a QMP server that answers like
qemu-storage-daemon 7.2; ``txgraph demo`` runs the built-in example;
``txgraph why`` explains where a node's option values come from;
``txgraph bench`` measures txgraph against the QEMU peers.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from txgraph import __version__

__all__ = ["main"]

_Command = TypeVar("_Command", bound=Callable[..., Any])


#: set to 1 to see the Python traceback of an unexpected failure instead of one line
TRACEBACK_ENV = "TXGRAPH_TRACEBACK"


class _OneLineErrors(click.Group):
    """Every failure is one ``Error: ...`` line and a non-zero exit, never a traceback.

    The commands turn the errors they expect into :class:`click.ClickException`
    (exit 1) or :class:`click.UsageError` (exit 2); this is the net under them:
    an operating-system error names the file and the reason, anything else is a
    bug and says so (``TXGRAPH_TRACEBACK=1`` shows the traceback).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as err:
            if os.environ.get(TRACEBACK_ENV) == "1":
                raise
            raise click.ClickException(_error_line(err)) from None
        except Exception as err:
            if os.environ.get(TRACEBACK_ENV) == "1":
                raise
            raise click.ClickException(
                f"internal error in txgraph ({type(err).__name__}); "
                f"run again with {TRACEBACK_ENV}=1 for the traceback"
            ) from None


def _error_line(err: Exception) -> str:
    """An error as one line: ``FILE: reason`` for an OS error (not Python's ``[Errno 2]``)."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return str(err)


@click.group(cls=_OneLineErrors)
@click.version_option(__version__, prog_name="txgraph")
def main() -> None:
    """A reconfiguration engine with a formal transaction model for QEMU block graphs."""


@main.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}
)
@click.option(
    "--qmp",
    "qmp_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Unix socket path to listen on (created with mode 0600); the same as "
    "--chardev socket,id=C,path=PATH,server=on,wait=off --monitor C.",
)
@click.option(
    "--policy",
    type=click.Choice(["qemu", "safe"]),
    default="qemu",
    show_default=True,
    help="qemu: accept exactly what QEMU 7.2 accepts; safe: also refuse data-losing steps.",
)
@click.option(
    "--confine-dir",
    "confine_dirs",
    multiple=True,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False),
    help="Backing/data-file names in image headers must stay inside DIR and use the "
    "file protocol (repeatable; on by default under --policy safe, where the "
    "image's own directory is allowed).",
)
@click.option(
    "--poll-max-ns",
    type=click.IntRange(min=0),
    default=None,
    metavar="NS",
    help="Poll for the next QMP command up to NS nanoseconds before sleeping, adapting "
    "the window as QEMU's IOThread poll-max-ns does; 0 never polls. [default: 100000]",
)
@click.argument("qsd_args", nargs=-1, type=click.UNPROCESSED, metavar="[QSD OPTIONS]...")
def serve(
    qmp_path: str | None,
    policy: str,
    confine_dirs: tuple[str, ...] = (),
    poll_max_ns: int | None = None,
    qsd_args: tuple[str, ...] = (),
) -> None:
    """Serve QMP on a unix socket, like ``qemu-storage-daemon --monitor``.

    QSD OPTIONS are qemu-storage-daemon 7.2's, run in command-line order with
    its messages: --blockdev, --object, --export (keyval or JSON),
    --nbd-server, --chardev socket,path=P,server=on,wait=off,id=C with
    --monitor C, --pidfile FILE, -V/--version.
    """
    from txgraph.ops.confine import configure
    from txgraph.ops.session import Session
    from txgraph.qmp.commands import CommandContext
    from txgraph.qmp.engine import Engine
    from txgraph.qmp.polling import DEFAULT_POLL_MAX_NS
    from txgraph.qmp.qsd_argv import CmdlineError
    from txgraph.qmp.qsd_cmdline import QsdRun, remove_pidfile, run_command_line, write_pidfile
    from txgraph.qmp.server import ServeError, run_server

    session = Session(policy=policy)
    configure(session, confine_dirs)
    engine = Engine(CommandContext(session))
    pidfile: str | None = None
    run: QsdRun | None = None
    try:
        try:
            run = run_command_line(list(qsd_args), engine)
        except CmdlineError as err:
            sys.stderr.write("".join(err.warnings) + err.render())
            sys.exit(1)
        sys.stderr.write("".join(run.warnings))
        if run.answer == "version":
            click.echo(
                f"txgraph serve version {__version__} (the qemu-storage-daemon 7.2 command line)"
            )
            return
        _warm_up(engine)

        wanted_pidfile = run.pidfile

        def ready() -> None:
            # QSD writes its PID file once everything runs, signal handling included: a
            # SIGTERM sent as soon as the file appears must end the daemon cleanly
            nonlocal pidfile
            if wanted_pidfile is not None:
                write_pidfile(wanted_pidfile)
                pidfile = wanted_pidfile

        try:
            paths = [*([qmp_path] if qmp_path else []), *run.monitors]
            poll = DEFAULT_POLL_MAX_NS if poll_max_ns is None else poll_max_ns
            run_server(paths, engine, ready, run.listening, poll_max_ns=poll)
        except CmdlineError as err:  # the PID file could not be created
            sys.stderr.write(err.render())
            sys.exit(1)
    except ServeError as err:  # one line and exit code 1, like QSD's bind errors
        raise click.ClickException(str(err)) from None
    finally:
        remove_pidfile(pidfile)
        if run is not None:
            run.close()  # the chardevs no monitor served stop listening
        # QSD closes every node on exit: formats write back what they cached (qcow2's
        # metadata after copy-on-read, refcounts), then the image locks go
        session.close()


def _warm_up(engine: Any) -> None:
    """Load the command modules and the z3 solver before the socket opens.

    Startup work belongs to startup: the first QMP command should cost what
    every later one does.
    """
    import txgraph.io.drivers  # noqa: F401  (registers every data-plane driver)
    from txgraph.ops import exports, reopen  # noqa: F401
    from txgraph.qmp.engine import Engine

    # A throwaway engine exercises the whole add/query/delete path once (module
    # imports, the z3 solver's first check) without touching the live session.
    scratch = Engine()
    with tempfile.TemporaryDirectory(prefix="txgraph-warm-up-") as tmp:
        # A qcow2 image with a backing file, auto-opened: the format, file and
        # chain paths (their modules, checker templates) run once here too.
        messages: list[dict[str, Any]] = []
        made = _qemu_img(tmp, "base.qcow2", "1M") and _qemu_img(
            tmp, "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "1M"
        )
        if made:  # without qemu-img the warm-up is only shorter
            file = {"driver": "file", "filename": str(Path(tmp) / "top.qcow2")}
            args = {"driver": "qcow2", "node-name": "q", "file": file}
            messages.append({"execute": "blockdev-add", "arguments": args})
        messages += [
            {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "w"}},
            {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
            {"execute": "blockdev-del", "arguments": {"node-name": "w"}},
        ]
        if made:
            messages.append({"execute": "blockdev-del", "arguments": {"node-name": "q"}})
        for message in messages:
            scratch.execute(message)
        scratch.context.session.close()
    # Start-up objects (modules, the QAPI schema, the solver) live as long as the
    # process: moved out of the collector's generations, a full cyclic-GC pass
    # no longer walks them in the middle of a command.
    gc.collect()
    gc.freeze()


def _qemu_img(cwd: str, *args: str) -> bool:
    """``qemu-img create -q -f qcow2 ARGS`` in ``cwd``; False if it could not."""
    try:
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2", *args]
        return subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@main.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to create the example images (default: a temporary directory).",
)
@click.option("--plain", is_flag=True, help="No colours or box drawing.")
def demo(workdir: str | None, plain: bool) -> None:
    """Build the example graph on real images and explain it."""
    from txgraph.demo import run_demo

    sys.exit(run_demo(Path(workdir) if workdir else None, plain=plain))


@main.command()
@click.argument("script", type=click.File("r"))
@click.argument("node")
def why(script: Any, node: str) -> None:
    """Run a QMP script (a plan file's steps), then explain NODE's resolved options.

    Exit status 1 when NODE does not exist after the script.
    """
    from txgraph.demo import explain_node
    from txgraph.plan.format import PlanError, json_text_error, parse_plan
    from txgraph.qmp.engine import Engine

    try:
        steps = parse_plan(json.load(script)).steps
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise click.ClickException(json_text_error(script.name, err)) from None
    except PlanError as err:
        raise click.ClickException(f"{script.name}: {err}") from None
    engine = Engine()
    for step in steps:
        reply = engine.execute(step.message())
        if "error" in reply:
            click.echo(f"{step.label()}: {reply['error']['desc']}", err=True)
    if node not in engine.context.session.graph.nodes:
        raise click.ClickException(f"no node named '{node}' after the script")
    click.echo(explain_node(engine.context.session, node))


@main.group()
def bench() -> None:
    """Benchmarks against the QEMU peers (ratios measured in the same run)."""


def _count_option(
    *names: str, default: Any, text: str, **kwargs: Any
) -> Callable[[_Command], _Command]:
    """A bench option counting something (rounds, nodes, adds): at least 1, so a 0 or a
    negative count is click's one-line usage error, never an empty measurement."""
    return click.option(
        *names, default=default, type=click.IntRange(min=1), show_default=True, help=text, **kwargs
    )


@bench.command("io")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="/tmp/txgraph-bench-io",
    show_default=True,
    help="Where the (large) benchmark images are made.",
)
@_count_option("--size-mib", default=2048, text="The full image's size (an even number of MiB).")
@_count_option("--rounds", default=5, text="Interleaved rounds (txgraph, peer, floors).")
@_count_option("--random-reads", default=200_000, text="Requests of the random 4 KiB measure.")
def bench_io(workdir: str, size_mib: int, rounds: int, random_reads: int) -> None:
    """Data-plane reads vs qemu-img bench on the same images; one JSON line per measure."""
    from txgraph.bench.io import run_io_benchmarks

    if size_mib % 2:
        raise click.BadParameter(f"{size_mib} is not even.", param_hint="'--size-mib'")
    run_io_benchmarks(
        workdir,
        lambda row: click.echo(json.dumps(row)),
        size=size_mib << 20,
        rounds=rounds,
        random_reads=random_reads,
    )


@bench.command("nbd")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="/tmp/txgraph-bench-nbd",
    show_default=True,
)
@_count_option("--rounds", default=5, text="Interleaved rounds (txgraph, peer) measured.")
def bench_nbd(workdir: str, rounds: int) -> None:
    """NBD export throughput with qemu-img convert as the client vs qemu-storage-daemon."""
    from txgraph.bench.nbd import run_nbd_benchmark

    click.echo(json.dumps(run_nbd_benchmark(workdir, rounds=rounds)))


@bench.command("qmp")
@_count_option("--depth", default=100, text="Backing chain depth.")
@_count_option("--adds", default=1000, text="Separate blockdev-adds.")
@_count_option("--rounds", default=5, text="Interleaved rounds (QSD, then txgraph) per measure.")
def bench_qmp(depth: int, adds: int, rounds: int) -> None:
    """The same QMP scripts on txgraph and on qemu-storage-daemon; one JSON line each."""
    from txgraph.bench.qmp import run_qmp_benchmarks

    for row in run_qmp_benchmarks(depth=depth, adds=adds, repeats=rounds):
        click.echo(json.dumps(row))


@bench.command("txn")
@_count_option(
    "--nodes",
    "sizes",
    multiple=True,
    default=(100, 10_000),
    text="Graph size before the steps (repeatable).",
)
@_count_option("--repeats", default=3, text="Interleaved rounds per size; the median wins.")
def bench_txn(sizes: tuple[int, ...], repeats: int) -> None:
    """A 20-step transaction on txgraph vs the same steps as 20 QMP commands on QSD."""
    from txgraph.bench.txn import run_txn_benchmark

    rows = run_txn_benchmark(nodes=sizes, repeats=repeats)
    for row in rows:
        click.echo(json.dumps(row))
    if not all(row["graphs_match"] for row in rows):
        raise click.ClickException("the final graphs differ: the timings are not comparable")


@bench.command("jobs")
@_count_option("--size-mib", default=1024, text="Image size (fully allocated).")
@_count_option("--rounds", default=3, text="Interleaved rounds per peer.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the images are made (default: a fresh temporary directory).",
)
def bench_jobs(size_mib: int, rounds: int, workdir: str | None) -> None:
    """Mirror and stream throughput vs qemu-storage-daemon on the same images (speed 0)."""
    from txgraph.bench.jobs import run_jobs_benchmark

    for row in run_jobs_benchmark(size_mib=size_mib, rounds=rounds, workdir=workdir):
        click.echo(json.dumps(row))


@bench.command("scale")
@_count_option(
    "--nodes",
    "sizes",
    multiple=True,
    default=(100, 1_000, 10_000, 100_000),
    text="Graph sizes (repeatable).",
)
@_count_option("--rounds", default=5, text="Interleaved rounds per measure.")
def bench_scale(sizes: tuple[int, ...], rounds: int) -> None:
    """One command under policy=safe and one plan step, at growing graph sizes."""
    from txgraph.bench.scale import run_scale_benchmark

    def progress(text: str) -> None:
        click.echo(text, err=True)

    for row in run_scale_benchmark(sizes, rounds, progress):
        click.echo(json.dumps(row))


@bench.command("all")
@click.pass_context
def bench_all(ctx: click.Context) -> None:
    """Every benchmark above with its defaults, one after the other."""
    for command in (bench_qmp, bench_txn, bench_scale, bench_io, bench_nbd, bench_jobs):
        ctx.invoke(command)


@main.command("drive", context_settings={"ignore_unknown_options": True})
@click.option("--explain", is_flag=True, help="Also print which rule produced each resolved value.")
@click.argument("qemu_args", nargs=-1, type=click.UNPROCESSED)
def drive(explain: bool, qemu_args: tuple[str, ...]) -> None:
    """Translate QEMU -drive/-hda/-cdrom/-snapshot options into blockdev-add (docs/drive-spec.md)."""
    from txgraph.drive.command import run_drive_command

    sys.exit(run_drive_command(list(qemu_args), explain))


@main.command("plan")
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option(
    "--from",
    "from_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Synthesize a plan instead: the starting state (a JSON list of QMP commands).",
)
@click.option(
    "--to",
    "to_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With --from: the target state (a JSON list of QMP commands).",
)
@click.option("--max-steps", default=5, show_default=True, help="With --from/--to: the bound.")
@click.option(
    "--transaction",
    is_flag=True,
    help="With --from/--to: one atomic x-txgraph-transaction instead of QEMU 7.2 commands.",
)
@click.option(
    "--graph",
    "graph_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Starting state: a JSON list of QMP commands, or a graph import "
    '{"block-graph": ..., "named-nodes": ...}.',
)
@click.option(
    "--graph-from-qmp",
    "qmp_socket",
    type=click.Path(),
    default=None,
    help="Capture the starting graph from a running QEMU/QSD/txgraph QMP socket.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Substitute {dir} in the plan and state files.",
)
@click.option(
    "--policy",
    type=click.Choice(["qemu", "safe"]),
    default="safe",
    show_default=True,
    help="safe adds txgraph's data-loss rules to QEMU's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the verified plan (the sealed JSON report) here, for txgraph apply.",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Seal the verified plan with HMAC-SHA256 under this key (default: SHA-256).",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write an HTML report with a before/after picture of every step.",
)
@click.option(
    "--confine-dir",
    "confine_dirs",
    multiple=True,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False),
    help="As for serve: image-header references must stay inside DIR (repeatable).",
)
def plan_cmd(
    plan_file: str | None,
    from_file: str | None,
    to_file: str | None,
    max_steps: int,
    transaction: bool,
    graph_file: str | None,
    qmp_socket: str | None,
    directory: str | None,
    policy: str,
    as_json: bool,
    out_file: str | None,
    key_file: str | None,
    html_file: str | None,
    confine_dirs: tuple[str, ...] = (),
) -> None:
    """Dry-run PLAN_FILE on a scratch copy of the graph and report every step.

    Exit status 0 if every step would be accepted and the checker agrees, 1 otherwise.
    """
    from txgraph.errors import TxgraphError
    from txgraph.plan.format import PlanError, load_json, load_plan
    from txgraph.plan.render import render_text
    from txgraph.plan.seal import read_key, seal_report
    from txgraph.plan.verify import StateError, verify_plan
    from txgraph.render import StepRecorder, plan_page

    if graph_file and qmp_socket:
        raise click.UsageError("--graph and --graph-from-qmp are exclusive")
    if from_file or to_file or plan_file is None:
        _synth(plan_file, from_file, to_file, directory, policy, max_steps, as_json, transaction)
        return
    try:
        plan = load_plan(plan_file, directory)
        state: Any = plan.graph
        if graph_file:
            state = load_json(graph_file, directory)
        elif qmp_socket:
            from txgraph.plan.client import QMPClient, capture_graph

            with QMPClient(qmp_socket) as client:
                state = capture_graph(client)
        key = read_key(key_file) if key_file else None
        recorder = StepRecorder() if html_file else None
        report = seal_report(
            verify_plan(
                plan, state, policy=policy, observer=recorder, confine_dirs=confine_dirs
            ).to_dict(),
            key,
        )
        if html_file and recorder is not None:
            Path(html_file).write_text(
                plan_page(report, recorder.steps, f"txgraph plan: {Path(plan_file).name}")
            )
    except (PlanError, StateError, TxgraphError, ValueError, OSError, RuntimeError) as err:
        raise click.ClickException(_error_line(err)) from err
    text = json.dumps(report, indent=2)
    if out_file:
        Path(out_file).write_text(text + "\n")
    click.echo(text if as_json else render_text(report))
    sys.exit(0 if report["ok"] else 1)


def _synth(
    plan_file: str | None,
    from_file: str | None,
    to_file: str | None,
    directory: str | None,
    policy: str,
    max_steps: int,
    as_json: bool,
    transaction: bool = False,
) -> None:
    """``plan --from STATE --to TARGET``: txgraph.symbolic.synth; exit 1 if impossible."""
    from txgraph.errors import TxgraphError
    from txgraph.plan.format import PlanError
    from txgraph.symbolic.commands import render_synth, synth_report

    if plan_file is not None or not (from_file and to_file):
        raise click.UsageError("give PLAN_FILE, or --from STATE and --to TARGET")
    try:
        report = synth_report(from_file, to_file, directory, policy, max_steps, transaction)
    except (PlanError, TxgraphError, ValueError, OSError, RuntimeError) as err:
        raise click.ClickException(_error_line(err)) from err
    click.echo(json.dumps(report, indent=2) if as_json else render_synth(report))
    sys.exit(0 if report["found"] else 1)


@main.command("verify")
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--symbolic", is_flag=True, required=True, help="Search over the plan's variables.")
@click.option("--max-nodes", default=8, show_default=True, help="Bound on the starting graph.")
@click.option("--policy", type=click.Choice(["qemu", "safe"]), default="safe", show_default=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the candidates' images go (and {dir} in the plan); default: a temporary one.",
)
@click.option("--qsd", "confirm", is_flag=True, help="Replay a counterexample on QSD 7.2.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_cmd(
    plan_file: str,
    symbolic: bool,
    max_nodes: int,
    policy: str,
    directory: str | None,
    confirm: bool,
    as_json: bool,
) -> None:
    """Search for a starting graph within PLAN_FILE's constraints on which a step fails.

    Exit status 0 if there is none up to --max-nodes, 1 with a counterexample.
    """
    from txgraph.errors import TxgraphError
    from txgraph.plan.format import PlanError
    from txgraph.symbolic.commands import render_symbolic, verify_symbolic

    if not symbolic:
        raise click.UsageError("only --symbolic verification is implemented")
    try:
        report = verify_symbolic(plan_file, max_nodes, policy, directory, confirm)
    except (PlanError, TxgraphError, ValueError, OSError, RuntimeError) as err:
        raise click.ClickException(_error_line(err)) from err
    click.echo(json.dumps(report, indent=2) if as_json else render_symbolic(report))
    sys.exit(0 if report["counterexample"] is None else 1)


@main.command("show")
@click.argument("state_file", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option(
    "--graph-from-qmp",
    "qmp_socket",
    type=click.Path(),
    default=None,
    help="Draw the live graph of a running QEMU/QSD/txgraph QMP socket.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Substitute {dir} in STATE_FILE.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["dot", "svg", "html"]), default="svg", show_default=True
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the picture here (default: standard output).",
)
def show_cmd(
    state_file: str | None,
    qmp_socket: str | None,
    directory: str | None,
    fmt: str,
    out_file: str | None,
) -> None:
    """Draw a block graph: drivers, edges with perm/shared-perm, read-only, implicit nodes,
    frozen links, exports and jobs.

    STATE_FILE is a QMP script (a JSON list of commands, or a plan file's steps) run
    on a dry-run engine, or a graph import as for ``txgraph plan --graph``.
    """
    from txgraph.errors import TxgraphError
    from txgraph.plan.format import PlanError, load_json, parse_plan
    from txgraph.plan.verify import StateError, scratch_engine
    from txgraph.render import graph_page, picture_of, to_dot
    from txgraph.render.svg import dot_to_svg

    if (state_file is None) == (qmp_socket is None):
        raise click.UsageError("give either STATE_FILE or --graph-from-qmp SOCKET")
    try:
        if qmp_socket:
            from txgraph.plan.client import QMPClient, capture_graph

            with QMPClient(qmp_socket) as client:
                state: Any = capture_graph(client)
            title = f"block graph of {qmp_socket}"
        else:
            assert state_file is not None
            state = load_json(state_file, directory)
            if isinstance(state, dict) and "steps" in state:
                parse_plan(state)  # a plan file: its shape is checked as ``plan`` checks it
                state = state["steps"]
            title = f"block graph after {Path(state_file).name}"
        engine, _source = scratch_engine(state)
        try:
            picture = picture_of(engine.context.session.graph)
        finally:
            engine.context.session.close()
        dot = to_dot(picture, title=title)
        output = (
            dot if fmt == "dot" else dot_to_svg(dot) if fmt == "svg" else graph_page(picture, title)
        )
    except (PlanError, StateError, TxgraphError, ValueError, OSError, RuntimeError) as err:
        raise click.ClickException(_error_line(err)) from err
    if out_file:
        Path(out_file).write_text(output)
    else:
        click.echo(output, nl=False)


@main.command("fuzz")
@click.option(
    "--against",
    type=click.Choice(["qsd", "model"]),
    default="model",
    show_default=True,
    help="qsd: compare every step with a fresh qemu-storage-daemon 7.2; model: check "
    "txgraph's own invariants after every step.",
)
@click.option(
    "--time",
    "seconds",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="The campaign's time budget in seconds.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same campaign.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Parallel workers, each with its own peers.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="fuzz-campaign",
    show_default=True,
    help="The campaign directory (corpus, reproducers, report).",
)
@click.option(
    "--ops",
    default=None,
    metavar="LIST",
    help="Comma-separated operation families: add,del,reopen,snapshot,quorum,objects,"
    "exports,guest,jobs (and x: txgraph's extensions, model only).",
)
@click.option(
    "--shrink-seconds",
    type=click.FloatRange(min=0),
    default=420.0,
    show_default=True,
    help="How long each worker may shrink its finds once the time budget is spent.",
)
@click.option(
    "--stop-on",
    default=None,
    metavar="SIG|crash",
    help="End the search at the first finding of this signature (e.g. "
    "qemu-drained-end-no-poll), or with 'crash' at the first crash or hang; then shrink.",
)
def fuzz_cmd(
    against: str,
    seconds: float,
    seed: int,
    jobs: int,
    out_dir: str,
    ops: str | None,
    shrink_seconds: float,
    stop_on: str | None,
) -> None:
    """Fuzz block-graph reconfiguration; exit 1 when something diverged or crashed."""
    from txgraph.fuzz import CampaignConfig, campaign_dir, families_for, run_campaign
    from txgraph.fuzz.progress import Progress

    try:
        families = families_for(against, [o.strip() for o in ops.split(",")] if ops else None)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    config = CampaignConfig(
        against,
        seconds,
        seed,
        campaign_dir(out_dir).resolve(),
        families,
        shrink_seconds,
        stop_on,
    )
    with Progress(seconds) as progress:
        report = run_campaign(config, jobs, progress.update)
    click.echo(
        f"{report['steps']} steps, {report['sequences']} sequences, "
        f"{report['behaviours']} behaviours, {report['steps_per_second']} steps/s; "
        f"{len(report['divergences'])} divergence(s); report: {config.out / 'report.html'}"
    )
    for sig, d in report["divergences"].items():
        click.echo(
            f"  {sig} {d['kind']} at {d['command']} (x{d['count']}, "
            f"{d.get('steps', '?')} steps): {d.get('repro', 'not shrunk')}"
        )
    # a known QEMU bug (txgraph.fuzz.known, pinned by its own test) is reported, not a failure
    new = [s for s in report["divergences"] if s not in report["known_qemu_bugs"]]
    sys.exit(1 if new or report.get("worker_failures") else 0)


@main.command("replay")
@click.argument("repro_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--against", type=click.Choice(["qsd", "txgraph", "both"]), default="both", show_default=True
)
def replay_cmd(repro_file: str, against: str) -> None:
    """Run a fuzz reproducer step by step; exit 1 if the peers differ (or a peer crashed)."""
    from txgraph.fuzz.replay import render_replay, replay
    from txgraph.fuzz.repro import load_reproducer
    from txgraph.plan.format import PlanError

    # A SIGTERM (a timeout, a CI runner) unwinds like Ctrl-C, so the replay's peers are
    # closed: the default action would leave its qemu-storage-daemon running.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        result = replay(load_reproducer(repro_file), against)
    except PlanError as err:
        raise click.ClickException(str(err)) from None
    click.echo(render_replay(result))
    sys.exit(1 if result.divergence is not None else 0)


@main.command("apply")
@click.argument("verified_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--qmp",
    "qmp_socket",
    required=True,
    type=click.Path(),
    help="QMP socket of the running txgraph serve, qemu-storage-daemon or QEMU.",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The key the plan was sealed with (txgraph plan --key-file).",
)
def apply_cmd(verified_file: str, qmp_socket: str, key_file: str | None) -> None:
    """Apply a plan verified by ``txgraph plan --graph-from-qmp ... --out VERIFIED_FILE``.

    A plan edited after verification is refused (its seal no longer matches);
    the server refuses it as stale if its graph changed since the verification.
    Against QEMU / qemu-storage-daemon the steps are sent one by one as QEMU 7.2
    commands and the first reply or graph that differs from the prediction stops it.
    """
    from txgraph.plan.client import QMPClient, QMPClientError
    from txgraph.plan.format import check_verified
    from txgraph.plan.seal import read_key

    try:
        report = json.loads(Path(verified_file).read_text())
        key = read_key(key_file) if key_file else None
    except json.JSONDecodeError as err:
        raise click.ClickException(f"{verified_file}: not valid JSON: {err}") from None
    except (OSError, ValueError) as err:
        raise click.ClickException(_error_line(err)) from None
    problem = check_verified(report, key)
    if problem:
        raise click.ClickException(problem)
    source = report["source"]
    if "generation" not in source:
        _apply_to_qemu(report, qmp_socket)
        return
    try:
        with QMPClient(qmp_socket) as client:
            reply = client.execute(
                "x-txgraph-apply-plan",
                {
                    "expect-generation": source["generation"],
                    "expect-digest": source["digest"],
                    "steps": report["plan"],
                },
            )
    except QMPClientError as err:
        raise click.ClickException(str(err)) from err
    if "error" in reply:
        detail = reply["error"].get("__io.txgraph_plan", {})
        click.echo(f"refused: {reply['error']['desc']}", err=True)
        if detail:
            click.echo(f"completed steps: {detail.get('completed')}", err=True)
        sys.exit(1)
    result = reply["return"]
    click.echo(
        f"applied {result['completed']} step(s); live graph now at generation "
        f"{result['generation']} (digest {result['digest'][:16]})"
    )
    for warning in result.get("warnings", []):
        click.echo(f"warning: {warning.get('sentence', warning)}")


@main.command("proxy")
@click.option(
    "--listen",
    "listen",
    required=True,
    type=click.Path(dir_okay=False),
    help="Unix socket the proxy's QMP clients connect to (created with mode 0600).",
)
@click.option(
    "--upstream",
    "upstream_path",
    required=True,
    type=click.Path(),
    help="QMP socket of the real QEMU / qemu-storage-daemon.",
)
@click.option(
    "--policy",
    type=click.Choice(["qemu", "safe"]),
    default="safe",
    show_default=True,
    help="safe keeps from QEMU what txgraph's checker refuses; qemu forwards everything.",
)
def proxy_cmd(listen: str, upstream_path: str, policy: str) -> None:
    """A verifying QMP proxy: each command is dry-run on a mirror of QEMU's graph first.

    Refused commands (under safe) get a GenericError and never reach QEMU; after
    every forwarded command the mirror is re-synchronised and a difference from
    the prediction is announced as the event X_TXGRAPH_DRIFT.
    """
    from txgraph.proxy.engine import ProxyEngine
    from txgraph.proxy.server import run_proxy
    from txgraph.proxy.upstream import Upstream, UpstreamError
    from txgraph.qmp.server import ServeError

    try:
        upstream = Upstream(upstream_path)
    except UpstreamError as err:
        raise click.ClickException(str(err)) from None
    try:
        engine = ProxyEngine(upstream, policy)
    except Exception:
        upstream.close()
        raise
    try:
        run_proxy(listen, engine)
    except ServeError as err:
        raise click.ClickException(str(err)) from None
    finally:
        engine.close()
        upstream.close()


def _apply_to_qemu(report: dict[str, Any], qmp_socket: str) -> None:
    """``txgraph apply`` against QEMU 7.2: :func:`txgraph.plan.live.apply_to_qemu`."""
    from txgraph.plan.client import QMPClient, QMPClientError
    from txgraph.plan.live import ApplyError, apply_to_qemu

    try:
        with QMPClient(qmp_socket) as client:
            outcome = apply_to_qemu(report, client)
    except ApplyError as err:
        click.echo(f"refused: {err}", err=True)
        sys.exit(1)
    except QMPClientError as err:
        raise click.ClickException(str(err)) from err
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    for problem in outcome.problems:
        click.echo(f"differs: {problem}", err=True)
    if not outcome.ok:
        click.echo(
            f"stopped after {outcome.sent} of {outcome.total} QEMU command(s): "
            "the live graph differs from the prediction",
            err=True,
        )
        sys.exit(1)
    click.echo(
        f"applied {len(report['plan'])} step(s) as {outcome.total} QEMU command(s); "
        "every reply and graph as predicted"
    )


if __name__ == "__main__":
    main()
