"""Smoke test of the control-plane benchmarks: they run and produce well-formed rows.

No timing is asserted (that is what ``txgraph bench`` reports); only that each benchmark
runs end to end against a real qemu-storage-daemon 7.2 and, for the transaction benchmark,
that both peers finished in the same graph, so the ratio compares the same work.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from txgraph.bench.qmp import run_qmp_benchmarks
from txgraph.bench.txn import STEPS, run_txn_benchmark
from txgraph.cli import main

pytestmark = pytest.mark.qsd


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _well_formed(row: dict[str, Any]) -> None:
    assert isinstance(row["name"], str) and row["name"]
    assert row["unit"] == "ms"
    for key in ("txgraph", "peer", "ratio"):
        assert isinstance(row[key], (int, float)) and row[key] > 0, (key, row)
    json.dumps(row)  # one JSON line each


def test_qmp_benchmarks_rows() -> None:
    rows = run_qmp_benchmarks(depth=5, adds=20, repeats=1)
    assert [r["name"] for r in rows] == ["blockdev-add-chain-5", "blockdev-add-x20"]
    for row in rows:
        _well_formed(row)


def test_txn_benchmark_rows_and_final_graphs_match() -> None:
    rows = run_txn_benchmark(nodes=(50,), repeats=1)
    assert len(rows) == 1
    row = rows[0]
    _well_formed(row)
    assert row["graphs_match"] is True, row.get("difference")
    assert row["nodes"] == 50 and row["steps"] == STEPS == 20
    # 4 chains gained an overlay, its file node and a throttle filter each
    assert row["final_nodes"] == 50 + 3 * 4
    assert row["final_edges"] == 5 * 4


def test_bench_txn_command() -> None:
    result = CliRunner().invoke(main, ["bench", "txn", "--nodes", "20", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(rows) == 1 and rows[0]["graphs_match"] and rows[0]["nodes"] == 20


def test_nbd_benchmark_row(tmp_path: Path) -> None:
    """bench nbd end to end on a small image, one round; the image is removed after."""
    from txgraph.bench.nbd import run_nbd_benchmark

    row = run_nbd_benchmark(tmp_path / "w", rounds=1, size=8 << 20)
    assert row["name"] == "nbd_export_read_qemu_img_convert" and row["unit"] == "MB/s"
    assert row["rounds"] == 1
    for key in ("txgraph", "peer", "ratio", "floor", "ratio_cap", "nbdkit", "nbdkit_cap"):
        assert isinstance(row[key], (int, float)) and row[key] > 0, (key, row)
    assert row["of_nbdkit"] == pytest.approx(row["txgraph"] / row["nbdkit"], rel=0.01)
    low, high = row["spread"]["nbdkit"]
    assert 0 < low <= row["nbdkit"] <= high, row
    json.dumps(row)
    assert not (tmp_path / "w").exists()


def test_bench_io_rows_floors_and_cleanup(tmp_path: Path) -> None:
    """bench io end to end on small images, one round: every row once, in order, the
    plain-copy rows with both copy floors; the images and the work directory are gone."""
    work = tmp_path / "io"
    args = ["--workdir", str(work), "--size-mib", "64", "--rounds", "1", "--random-reads", "2000"]
    result = CliRunner().invoke(main, ["bench", "io", *args])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["name"] for r in rows] == [
        "seq_1MiB_full_64MiB",
        "seq_1MiB_full_vs_plain_mmap",
        "rand_4KiB_d1_full",
        "seq_1MiB_chain3",
        "seq_1MiB_zlib_32MiB",
        "translate_1M_batch",
    ]
    for row in rows:
        for key in ("txgraph", "peer", "ratio"):
            assert isinstance(row[key], (int, float)) and row[key] > 0, (key, row)
        floored = not row["name"].startswith(("seq_1MiB_zlib", "translate"))
        assert ("floor" in row) == floored, row
        if floored:
            assert row["floor"] == max(row["floors"].values()) > 0
            assert row["ratio_cap"] == round(row["floor"] / row["peer"], 2)
            assert row["of_floor"] == round(row["txgraph"] / row["floor"], 2)
    assert not work.exists()


def test_bench_io_refuses_an_odd_size_in_one_line() -> None:
    """The images are made of 2 MiB units: an odd --size-mib is a usage error up front."""
    result = CliRunner().invoke(main, ["bench", "io", "--size-mib", "3"])
    assert result.exit_code == 2
    assert "Invalid value for '--size-mib': 3 is not even." in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_io_floor_plan_replays_the_driver_reads(tmp_path: Path) -> None:
    """The floors copy exactly the bytes the driver reads: a chain whose top layer
    holds one cluster, a ZERO cluster in the middle layer and the rest in the base."""
    from txgraph.bench.io import open_image
    from txgraph.bench.io_floor import host_plan
    from txgraph.io.buffers import aligned_buffer

    base, mid, top = (tmp_path / n for n in ("base.qcow2", "mid.qcow2", "top.qcow2"))
    _run("qemu-img", "create", "-q", "-f", "qcow2", str(base), "4M")
    _run("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x11 0 4M", str(base))
    for img, below in ((mid, base), (top, mid)):
        _run("qemu-img", "create", "-q", "-f", "qcow2", "-b", below.name, "-F", "qcow2", str(img))
    _run("qemu-io", "-f", "qcow2", "-c", "write -q -z 1M 64k", str(mid))
    _run("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x33 960k 64k", str(top))
    node = open_image(top)
    out = aligned_buffer(1 << 20)
    seen: set[str] = set()
    image = bytearray()
    for offset in range(0, 4 << 20, 1 << 20):
        plan = host_plan(node, [offset], 1 << 20)
        assert plan is not None
        files, copies = plan
        seen.update(Path(f).name for f in files)
        request = bytearray(1 << 20)
        for f, host, n, at in copies:
            if f >= 0:
                with open(files[f], "rb") as fh:
                    fh.seek(host)
                    request[at : at + n] = fh.read(n)
            else:
                assert request[at : at + n] == bytes(n)
        node.readinto(offset, out)
        assert bytes(request) == bytes(out), offset
        image += request
    assert seen == {"base.qcow2", "top.qcow2"}  # the middle layer has no data
    assert image[960 << 10 : 1 << 20] == b"\x33" * (64 << 10)
    assert image[1 << 20 : (1 << 20) + (64 << 10)] == bytes(64 << 10)  # the ZERO cluster
    assert image[(1 << 20) + (64 << 10) :] == b"\x11" * ((3 << 20) - (64 << 10))
    assert image[: 960 << 10] == b"\x11" * (960 << 10)


def test_jobs_benchmark_rows() -> None:
    """The job benchmark runs end to end on both peers at a small size (no timing asserted)."""
    from txgraph.bench.jobs import run_jobs_benchmark

    rows = run_jobs_benchmark(size_mib=16, rounds=1)
    assert [r["name"] for r in rows] == ["mirror-16MiB", "stream-16MiB"]
    for row in rows:
        assert row["unit"] == "MB/s"
        for key in ("txgraph", "peer", "ratio"):
            assert isinstance(row[key], (int, float)) and row[key] > 0, (key, row)
        for side in ("txgraph", "peer"):
            low, high = row["spread"][side]
            assert low <= row[side] <= high, (side, row)


def test_bench_scale_command_rows() -> None:
    """Both measures per size, interleaved medians with spreads and a memory peak."""
    result = CliRunner().invoke(main, ["bench", "scale", "--nodes", "20", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["name"] for r in rows] == [
        "safe-add-20-nodes",
        "txn-20-steps-20-nodes",
        "plan-step-20-nodes",
    ]
    for row in rows:
        _well_formed(row)
        assert row["spread"]["txgraph"][0] <= row["txgraph"] <= row["spread"]["txgraph"][1]
        assert row["peak_kib"] > 0 and row["maxrss_mib"] > 0


@pytest.mark.parametrize(
    ("bench", "option", "value"),
    [
        ("io", "--rounds", "0"),
        ("io", "--size-mib", "0"),
        ("io", "--random-reads", "0"),
        ("nbd", "--rounds", "0"),
        ("scale", "--rounds", "0"),
        ("scale", "--nodes", "0"),
        ("qmp", "--rounds", "0"),
        ("qmp", "--depth", "0"),
        ("qmp", "--adds", "-1"),
        ("jobs", "--rounds", "0"),
        ("jobs", "--size-mib", "0"),
        ("txn", "--repeats", "0"),
        ("txn", "--nodes", "-5"),
    ],
)
def test_bench_refuses_counts_below_one_in_one_line(bench: str, option: str, value: str) -> None:
    """A count below 1 is click's usage error (exit 2), not an internal error after setup."""
    result = CliRunner().invoke(main, ["bench", bench, option, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': {value} is not in the range x>=1." in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_nbdkit_start_failure_is_one_clear_error(tmp_path: Path) -> None:
    """nbdkit that cannot serve (no such image) is an error naming nbdkit and its own
    reason, not a hang: the CLI prints it as one line (an ``OSError`` with a filename)."""
    from txgraph.bench.nbd import _nbdkit_export

    sock = tmp_path / "k.sock"
    sock.touch()  # a stale socket file must not pass for a listener
    with pytest.raises(OSError) as err, _nbdkit_export(tmp_path / "missing.raw", str(sock)):
        pass
    assert err.value.filename == "nbdkit"
    assert (
        err.value.strerror.startswith("exited at start: ") and "missing.raw" in err.value.strerror
    )
