"""``txgraph plan --from STATE --to TARGET``: a found plan exits 0, an impossible one 1
with the constraint that blocks it, a bad state file one error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.differential.test_synthesis import throttle_above_export, throttle_below
from tests.support.qsd import qemu_img


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgraph.cli", *args], capture_output=True, text=True, timeout=120
    )


def _files(tmp_path: Path, scenario: object) -> tuple[str, str]:
    qemu_img("create", "-q", "-f", "qcow2", tmp_path / "disk.qcow2", "1M")
    start, target = scenario(tmp_path, str(tmp_path / "nbd.sock"))  # type: ignore[operator]
    a, b = tmp_path / "from.json", tmp_path / "to.json"
    a.write_text(json.dumps(start))
    b.write_text(json.dumps(target))
    return str(a), str(b)


def test_found(tmp_path: Path) -> None:
    a, b = _files(tmp_path, throttle_below)
    res = _cli("plan", "--from", a, "--to", b, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert [s["execute"] for s in report["steps"]] == ["blockdev-add", "blockdev-reopen"]


def test_impossible(tmp_path: Path) -> None:
    a, b = _files(tmp_path, throttle_above_export)
    res = _cli("plan", "--from", a, "--to", b)
    assert res.returncode == 1, res.stderr
    assert res.stdout.startswith("impossible: no sequence of any length")
    assert "export vm0 must use node 'thr' instead of 'disk'" in res.stdout


def test_transaction_reaches_what_commands_cannot(tmp_path: Path) -> None:
    a, b = _files(tmp_path, throttle_above_export)
    res = _cli("plan", "--from", a, "--to", b, "--transaction", "--json")
    assert res.returncode == 0, res.stderr
    [tx] = json.loads(res.stdout)["steps"]
    assert tx["execute"] == "x-txgraph-transaction"
    assert [x["type"] for x in tx["arguments"]["actions"]] == [
        "x-txgraph-blockdev-add",
        "x-txgraph-replace",
    ]
    res = _cli("plan", "--from", a, "--to", b, "--transaction")
    assert res.returncode == 0 and res.stdout.startswith("found: one transaction"), res.stdout


def test_bad_state_is_one_line(tmp_path: Path) -> None:
    a = tmp_path / "from.json"
    a.write_text('{"not": "a list"}')
    res = _cli("plan", "--from", str(a), "--to", str(a))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == ["Error: --from must be a JSON list of QMP commands"]


_SYMBOLIC = Path(__file__).resolve().parents[2] / "examples" / "symbolic"


def test_verify_symbolic_none_and_counterexample() -> None:
    res = _cli("verify", str(_SYMBOLIC / "throttle-insert.json"), "--symbolic", "--max-nodes", "5")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("none up to 5 nodes (z3 over 3 states, "), res.stdout
    res = _cli("verify", str(_SYMBOLIC / "cbw-insert.json"), "--symbolic", "--json")
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    cex = report["counterexample"]
    assert cex["rules"] == ["P3-perm-conflict"] and cex["failing-step"] == 2
    assert report["method"] == "z3" and report["engine-agrees"] is True


def test_verify_needs_symbolic(tmp_path: Path) -> None:
    res = _cli("verify", str(_SYMBOLIC / "cbw-insert.json"))
    assert res.returncode == 2 and "Traceback" not in res.stderr


@pytest.mark.qsd
def test_verify_symbolic_guest_view_confirmed_on_qsd() -> None:
    """``--qsd`` on a guest-view counterexample reads the export through NBD on QSD."""
    res = _cli("verify", str(_SYMBOLIC / "skip-layer.json"), "--symbolic", "--qsd", "--json")
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    assert report["counterexample"]["rules"] == ["V1-guest-view"]
    assert report["qsd"]["prediction-equals-observation"] is True, report["qsd"]
    seen = json.loads(report["qsd"]["observed"])
    assert seen["exports"]["X-exp"]["observed"] == [[65536, 65536]]
