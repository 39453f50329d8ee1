"""Every CLI mistake gives one clear line and a non-zero exit status, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.plan.plankit import EXAMPLES


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgraph.cli", *args], capture_output=True, text=True, timeout=120
    )


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
    script.write_text(
        '{"steps": [{"execute": "blockdev-add", '
        '"arguments": {"driver": "null-co", "node-name": "n0"}}]}'
    )
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
    script.write_text("[42]")
    _one_line_error(
        _cli("why", str(script), "n0"), f"{script}: step 0: expected an object, got int"
    )


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


def _usage_error(res: subprocess.CompletedProcess[str], text: str) -> None:
    """click's convention for a bad command line: usage, then the error, exit status 2."""
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"Error: {text}"


def _not_a_dir(tmp_path: Path) -> Path:
    """A path whose parent is a regular file: every attempt to create it fails (ENOTDIR)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    return blocker / "sub"


def test_a_confine_dir_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    _usage_error(
        _cli("serve", "--qmp", str(tmp_path / "s.sock"), "--confine-dir", str(missing)),
        f"Invalid value for '--confine-dir': Directory '{missing}' does not exist.",
    )
    plan = tmp_path / "p.json"
    plan.write_text('{"steps": []}')
    _usage_error(
        _cli("plan", str(plan), "--confine-dir", str(missing)),
        f"Invalid value for '--confine-dir': Directory '{missing}' does not exist.",
    )


def test_unwritable_outputs_name_the_file_in_one_line(tmp_path: Path) -> None:
    bad = _not_a_dir(tmp_path)
    plan = tmp_path / "p.json"
    plan.write_text('{"steps": []}')
    for args, target in (
        (("fuzz", "--time", "1", "--out", str(bad)), bad),
        (("plan", str(plan), "--html", str(bad / "r.html")), bad / "r.html"),
        (("plan", str(plan), "--out", str(bad / "v.json")), bad / "v.json"),
        (("show", str(plan), "--out", str(bad / "g.svg")), bad / "g.svg"),
        (("demo", "--workdir", str(bad)), bad),
    ):
        res = _cli(*args)
        assert res.returncode == 1 and "Traceback" not in res.stderr, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Errno" not in lines[0], (
            args,
            lines,
        )
        assert str(target) in lines[0] or str(bad) in lines[0], (args, lines)


def test_an_unexpected_failure_is_one_line_and_the_traceback_is_opt_in() -> None:
    """The net under every command: a bug prints one line, TXGRAPH_TRACEBACK=1 shows it."""
    import click
    from click.testing import CliRunner

    from txgraph.cli import TRACEBACK_ENV, _OneLineErrors

    @click.group(cls=_OneLineErrors)
    def group() -> None:
        """A stand-in for txgraph's group."""

    @group.command()
    def boom() -> None:
        raise KeyError("a Python detail")

    res = CliRunner().invoke(group, ["boom"], env={TRACEBACK_ENV: "0"})
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: internal error in txgraph (KeyError); run again "
        f"with {TRACEBACK_ENV}=1 for the traceback"
    )
    res = CliRunner().invoke(group, ["boom"], env={TRACEBACK_ENV: "1"})
    assert isinstance(res.exception, KeyError)


def test_bench_jobs_refuses_an_empty_image_as_a_usage_error() -> None:
    """A zero size or zero rounds is a usage mistake (exit 2, one line), not a crash."""
    from click.testing import CliRunner

    from txgraph.cli import main

    for args in (["--size-mib", "0"], ["--rounds", "0"]):
        result = CliRunner().invoke(main, ["bench", "jobs", *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "internal error" not in result.output


def test_files_that_are_not_utf8_text(tmp_path: Path) -> None:
    """A binary file handed where JSON is expected: one line naming the byte, for every
    command that reads one (Python's decode error once came out as 'internal error')."""
    blob = tmp_path / "blob.json"
    blob.write_bytes(b"[\xff]")
    text = f"{blob}: not valid JSON: byte 0xff at 1 is not UTF-8"
    for args in (
        ("why", str(blob), "n0"),
        ("plan", str(blob)),
        ("replay", str(blob)),
        ("show", str(blob)),
        ("verify", str(blob), "--symbolic"),
    ):
        _one_line_error(_cli(*args), text)


def test_show_on_a_wrong_shape(tmp_path: Path) -> None:
    """``show`` checks a plan's shape as ``plan`` does, and a graph import's as an object."""
    plan = tmp_path / "p.json"
    plan.write_text('{"steps": 5}')
    _one_line_error(_cli("show", str(plan)), "the steps of a plan must be a JSON array")
    number = tmp_path / "n.json"
    number.write_text("5")
    res = _cli("show", str(number))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "internal error" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
