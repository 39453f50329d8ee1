"""The ``txgraph`` command.

``txgraph serve --qmp PATH`` runs a QMP server that answers like
qemu-storage-daemon 7.2; ``txgraph demo`` runs the built-in example;
``txgraph why`` explains where a node's option values come from;
``txgraph bench`` measures txgraph against the QEMU peers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from txgraph import __version__

__all__ = ["main"]


@click.group()
@click.version_option(__version__, prog_name="txgraph")
def main() -> None:
    """A reconfiguration engine with a formal transaction model for QEMU block graphs."""


@main.command()
@click.option("--qmp", "qmp_path", required=True, type=click.Path(dir_okay=False),
              help="Unix socket path to listen on (created with mode 0600).")
@click.option("--policy", type=click.Choice(["qemu", "safe"]), default="qemu", show_default=True,
              help="qemu: accept exactly what QEMU 7.2 accepts; safe: also refuse data-losing steps.")
@click.option("--blockdev", "blockdevs", multiple=True, metavar="JSON",
              help="Run a blockdev-add with these JSON arguments before serving (repeatable).")
@click.option("--object", "objects", multiple=True, metavar="JSON",
              help="Run an object-add with these JSON arguments before serving (repeatable).")
def serve(qmp_path: str, policy: str, blockdevs: tuple[str, ...], objects: tuple[str, ...]) -> None:
    """Serve QMP on a unix socket, like ``qemu-storage-daemon --monitor``."""
    from txgraph.ops.session import Session
    from txgraph.qmp.commands import CommandContext
    from txgraph.qmp.engine import Engine
    from txgraph.qmp.server import ServeError, run_server

    engine = Engine(CommandContext(Session(policy=policy)))
    _warm_up(engine)
    for command, items in (("object-add", objects), ("blockdev-add", blockdevs)):
        for text in items:
            reply = engine.execute({"execute": command, "arguments": json.loads(text)})
            if "error" in reply:
                raise click.ClickException(f"{command}: {reply['error']['desc']}")
    try:
        run_server(qmp_path, engine)
    except ServeError as err:   # one line and exit code 1, like QSD's bind errors
        raise click.ClickException(str(err)) from None


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
    for message in ({"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "w"}},
                    {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
                    {"execute": "blockdev-del", "arguments": {"node-name": "w"}}):
        scratch.execute(message)
    scratch.context.session.close()


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where to create the example images (default: a temporary directory).")
@click.option("--plain", is_flag=True, help="No colours or box drawing.")
def demo(workdir: str | None, plain: bool) -> None:
    """Build the example graph on real images and explain it."""
    from txgraph.demo import run_demo

    sys.exit(run_demo(Path(workdir) if workdir else None, plain=plain))


@main.command()
@click.argument("script", type=click.File("r"))
@click.argument("node")
def why(script: Any, node: str) -> None:
    """Run a JSON list of QMP commands, then explain NODE's resolved options."""
    from txgraph.demo import explain_node
    from txgraph.qmp.engine import Engine

    engine = Engine()
    for message in json.load(script):
        reply = engine.execute(message)
        if "error" in reply:
            click.echo(f"{message.get('execute')}: {reply['error']['desc']}", err=True)
    click.echo(explain_node(engine.context.session, node))


@main.group()
def bench() -> None:
    """Benchmarks against the QEMU peers (ratios measured in the same run)."""


def _checkout_benchmarks() -> Any:
    """The benchmark scripts live in the checkout's tests/bench (they need the QEMU peers)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "tests" / "bench").is_dir():
        raise click.ClickException("txgraph bench io/nbd runs from a source checkout (tests/bench)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import tests.bench as benches

    return benches


@bench.command("io")
@click.option("--workdir", type=click.Path(file_okay=False), default="/tmp/txgraph-bench-io",
              show_default=True, help="Where the (large) benchmark images are made.")
def bench_io(workdir: str) -> None:
    """Data-plane reads vs qemu-img bench on the same images; one JSON line per measure."""
    _checkout_benchmarks()
    from tests.bench.bench_io import run_io_benchmarks

    for row in run_io_benchmarks(workdir):
        click.echo(json.dumps(row))


@bench.command("nbd")
@click.option("--workdir", type=click.Path(file_okay=False), default="/tmp/txgraph-bench-nbd",
              show_default=True)
def bench_nbd(workdir: str) -> None:
    """NBD export throughput with qemu-img convert as the client vs qemu-storage-daemon."""
    _checkout_benchmarks()
    from tests.bench.bench_nbd import run_nbd_benchmark

    click.echo(json.dumps(run_nbd_benchmark(workdir)))


@bench.command("qmp")
@click.option("--depth", default=100, show_default=True, help="Backing chain depth.")
@click.option("--adds", default=1000, show_default=True, help="Separate blockdev-adds.")
def bench_qmp(depth: int, adds: int) -> None:
    """The same QMP scripts on txgraph and on qemu-storage-daemon; one JSON line each."""
    from txgraph.bench import run_qmp_benchmarks

    for row in run_qmp_benchmarks(depth=depth, adds=adds):
        click.echo(json.dumps(row))


@bench.command("txn")
@click.option("--nodes", "sizes", multiple=True, type=int, default=(100, 10_000), show_default=True,
              help="Graph size before the steps (repeatable).")
@click.option("--repeats", default=3, show_default=True, help="Fresh peers per size; best time wins.")
def bench_txn(sizes: tuple[int, ...], repeats: int) -> None:
    """A 20-step transaction on txgraph vs the same steps as 20 QMP commands on QSD."""
    from txgraph.bench_txn import run_txn_benchmark

    rows = run_txn_benchmark(nodes=sizes, repeats=repeats)
    for row in rows:
        click.echo(json.dumps(row))
    if not all(row["graphs_match"] for row in rows):
        raise click.ClickException("the final graphs differ: the timings are not comparable")


@main.command("plan")
@click.argument("plan_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--graph", "graph_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Starting state: a JSON list of QMP commands, or a graph import "
                   '{"block-graph": ..., "named-nodes": ...}.')
@click.option("--graph-from-qmp", "qmp_socket", type=click.Path(), default=None,
              help="Capture the starting graph from a running QEMU/QSD/txgraph QMP socket.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Substitute {dir} in the plan and state files.")
@click.option("--policy", type=click.Choice(["qemu", "safe"]), default="safe", show_default=True,
              help="safe adds txgraph's data-loss rules to QEMU's.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="Write the verified plan (the JSON report) here, for txgraph apply.")
def plan_cmd(plan_file: str, graph_file: str | None, qmp_socket: str | None,
             directory: str | None, policy: str, as_json: bool, out_file: str | None) -> None:
    """Dry-run PLAN_FILE on a scratch copy of the graph and report every step.

    Exit status 0 if every step would be accepted and the checker agrees, 1 otherwise.
    """
    from txgraph.plan import PlanError, StateError, load_plan, render_text, verify_plan
    from txgraph.plan.format import load_json

    if graph_file and qmp_socket:
        raise click.UsageError("--graph and --graph-from-qmp are exclusive")
    try:
        plan = load_plan(plan_file, directory)
        state: Any = plan.graph
        if graph_file:
            state = load_json(graph_file, directory)
        elif qmp_socket:
            from txgraph.plan.client import QMPClient, capture_graph

            with QMPClient(qmp_socket) as client:
                state = capture_graph(client)
        report = verify_plan(plan, state, policy=policy).to_dict()
    except (PlanError, StateError, ValueError, OSError, RuntimeError) as err:
        raise click.ClickException(str(err)) from err
    text = json.dumps(report, indent=2)
    if out_file:
        Path(out_file).write_text(text + "\n")
    click.echo(text if as_json else render_text(report))
    sys.exit(0 if report["ok"] else 1)


@main.command("apply")
@click.argument("verified_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--qmp", "qmp_socket", required=True, type=click.Path(),
              help="QMP socket of the running txgraph serve.")
def apply_cmd(verified_file: str, qmp_socket: str) -> None:
    """Apply a plan verified by ``txgraph plan --graph-from-qmp ... --out VERIFIED_FILE``.

    The server refuses it as stale if its graph changed since the verification.
    """
    from txgraph.plan.client import QMPClient, QMPClientError
    from txgraph.plan.format import check_verified

    report = json.loads(Path(verified_file).read_text())
    problem = check_verified(report)
    if problem:
        raise click.ClickException(problem)
    source = report["source"]
    try:
        with QMPClient(qmp_socket) as client:
            reply = client.execute("x-txgraph-apply-plan", {
                "expect-generation": source["generation"], "expect-digest": source["digest"],
                "steps": report["plan"]})
    except QMPClientError as err:
        raise click.ClickException(str(err)) from err
    if "error" in reply:
        detail = reply["error"].get("__io.txgraph_plan", {})
        click.echo(f"refused: {reply['error']['desc']}", err=True)
        if detail:
            click.echo(f"completed steps: {detail.get('completed')}", err=True)
        sys.exit(1)
    result = reply["return"]
    click.echo(f"applied {result['completed']} step(s); live graph now at generation "
               f"{result['generation']} (digest {result['digest'][:16]})")
    for warning in result.get("warnings", []):
        click.echo(f"warning: {warning.get('sentence', warning)}")


if __name__ == "__main__":
    main()
