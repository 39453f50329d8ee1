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
    from txgraph.qmp.server import run_server

    engine = Engine(CommandContext(Session(policy=policy)))
    for command, items in (("object-add", objects), ("blockdev-add", blockdevs)):
        for text in items:
            reply = engine.execute({"execute": command, "arguments": json.loads(text)})
            if "error" in reply:
                raise click.ClickException(f"{command}: {reply['error']['desc']}")
    run_server(qmp_path, engine)


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


if __name__ == "__main__":
    main()
