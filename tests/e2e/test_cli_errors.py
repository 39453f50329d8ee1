"""Every CLI mistake gives one clear line and a non-zero exit status, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.plan.plankit import EXAMPLES


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "txgraph.cli", *args], capture_output=True,
                          text=True, timeout=120)


def _one_line_error(res: subprocess.CompletedProcess[str], text: str) -> None:
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"Error: {text}"]


def test_why_on_malformed_json(tmp_path: Path) -> None:
    script = tmp_path / "bad.json"
    script.write_text('[{"execute": ')
    res = _cli("why", str(script), "n0")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"Error: {script}: not valid JSON: ")


def test_why_takes_a_plan_file_and_refuses_unknown_nodes(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text('{"steps": [{"execute": "blockdev-add", '
                      '"arguments": {"driver": "null-co", "node-name": "n0"}}]}')
    res = _cli("why", str(script), "n0")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("n0 (null-co):")
    _one_line_error(_cli("why", str(script), "nope"), "no node named 'nope' after the script")


def test_why_on_the_example_plan() -> None:
    # the example's steps refer to images it does not create: each refused step is
    # reported on stderr, and the explained node does not exist afterwards
    res = _cli("why", str(EXAMPLES / "seed-section3.json"), "snap")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "Error: no node named 'snap' after the script"


def test_why_on_a_malformed_plan(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text('[42]')
    _one_line_error(_cli("why", str(script), "n0"), f"{script}: step 0: expected an object, got int")


def test_apply_on_malformed_file(tmp_path: Path) -> None:
    verified = tmp_path / "v.json"
    verified.write_text("{nope")
    res = _cli("apply", str(verified), "--qmp", str(tmp_path / "none.sock"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"Error: {verified}: not valid JSON: ")
    assert len(res.stderr.strip().splitlines()) == 1


def test_apply_on_a_plain_plan(tmp_path: Path) -> None:
    res = _cli("apply", str(EXAMPLES / "seed-section3.json"), "--qmp", str(tmp_path / "none.sock"))
    _one_line_error(res, "not a verified plan (run txgraph plan ... --out FILE first)")
