"""The command line: help texts, and bad arguments give one line and a usage hint, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from initwatch.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, command: str | None, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 2, err
    assert lines[0].startswith("initwatch: error: "), err
    hint = f"initwatch {command} --help" if command else "initwatch --help"
    assert hint in lines[1], err
    for needle in needles:
        assert needle in lines[0], err


@pytest.mark.parametrize("command", ["demo", "check", "report"])
def test_help_shows_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    assert "examples:" in out and f"initwatch {command}" in out.split("examples:")[1]


def test_top_level_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "demo" in out and "check" in out and "report" in out
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("initwatch ")
    code, out, _ = run([], capsys)
    assert code == 2 and "COMMAND" in out


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["train"], capsys)
    assert_one_line_error(code, err, None, "invalid choice", "'train'")


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["demo", "--schemes", "vanilla,magic"], ["unknown scheme 'magic'", "deepnet"]),
        (["demo", "--schemes", ","], ["--schemes"]),
        (["demo", "--steps", "0"], ["--steps", "positive integer"]),
        (["demo", "--steps", "many"], ["--steps", "'many'"]),
        (["demo", "--lr", "-1"], ["--lr", "positive number"]),
        (["demo", "--bogus"], ["unrecognized arguments: --bogus"]),
    ],
)
def test_demo_bad_arguments(
    argv: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert_one_line_error(code, err, "demo", *needles)
    assert out == ""  # nothing was trained


def test_check_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", str(tmp_path / "missing.json")], capsys)
    assert_one_line_error(code, err, "check", "no such file or directory", "missing.json")

    code, _, err = run(["check", "bertt"], capsys)
    assert_one_line_error(code, err, "check", "unknown model 'bertt'", "bert", "gpt2")

    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    code, _, err = run(["check", str(bad)], capsys)
    assert_one_line_error(code, err, "check", "cannot read", "broken.json")

    no_type = tmp_path / "no_type.json"
    no_type.write_text(json.dumps({"hidden_size": 32}))
    code, _, err = run(["check", str(no_type)], capsys)
    assert_one_line_error(code, err, "check", "model_type")

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"model_type": "no-such-arch"}))
    code, _, err = run(["check", str(unknown)], capsys)
    assert_one_line_error(code, err, "check", "no-such-arch")

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    code, _, err = run(["check", str(empty_dir)], capsys)
    assert_one_line_error(code, err, "check", "without config.json")

    code, _, err = run(["check", "bert", "--schemes", "deepnet,magic"], capsys)
    assert_one_line_error(code, err, "check", "unknown scheme 'magic'")

    code, _, err = run(["check", "bert", "--optimizer", "lion"], capsys)
    assert_one_line_error(code, err, "check", "invalid choice: 'lion'")

    code, _, err = run(["check", "bert", "--plot", str(tmp_path / "no" / "dir" / "p.png")], capsys)
    assert_one_line_error(code, err, "check", "--plot: no such directory")

    code, _, err = run(["check", "llama", "--hidden", "8192", "--layers", "32"], capsys)
    assert_one_line_error(code, err, "check", "too large", "--hidden")

    code, _, err = run(["check"], capsys)
    assert_one_line_error(code, err, "check", "MODEL")


def test_report_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["report", str(tmp_path / "nothing")], capsys)
    assert_one_line_error(code, err, "report", "no such file or directory", "nothing")

    code, _, err = run(["report", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "report", "no TensorBoard event files")

    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "other")) as writer:
        writer.add_scalar("loss", 1.0, 0)
    code, _, err = run(["report", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "report", "no initwatch data")

    code, _, err = run(["report", str(tmp_path), "--stat", "loss"], capsys)
    assert_one_line_error(code, err, "report", "invalid choice: 'loss'")


def test_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    """The installed ``initwatch`` script (pyproject's console script), as a user runs it."""
    script = Path(sys.executable).with_name("initwatch")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "initwatch.cli"]
    proc = subprocess.run(
        [*cmd, "check", str(tmp_path / "nope.json")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("initwatch: error: no such file or directory")
    assert proc.stdout == ""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_no_torch(flag: str) -> None:
    proc = _python(
        "import sys\n"
        "from initwatch.cli import main\n"
        f"code = main([{flag!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'numpy', 'transformers', 'lightning', 'tensorboard'))\n"
        "print('HEAVY', code, heavy)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY 0 []" in proc.stdout, proc.stdout
    assert (
        ("usage: initwatch" in proc.stdout) if flag == "--help" else ("initwatch 0." in proc.stdout)
    )


def test_command_modules_do_not_import_the_cli() -> None:
    """No cycle: the commands share :mod:`initwatch.commands.args`, never ``initwatch.cli``."""
    proc = _python(
        "import sys\n"
        "from initwatch.commands import COMMANDS, load\n"
        "mods = [load(n) for n in COMMANDS]\n"
        "print('CLI', 'initwatch.cli' in sys.modules, 'torch' in sys.modules)\n"
        "print('API', [all(hasattr(m, a) for a in ('NAME', 'HELP', 'EXAMPLES', 'add_arguments',"
        " 'run')) for m in mods])\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "CLI False False" in proc.stdout and "API [True, True, True]" in proc.stdout


def test_version_matches_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    import initwatch

    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"initwatch {initwatch.__version__}"


@pytest.mark.parametrize(
    ("argv", "command", "needle"),
    [
        (["chek", "bert"], None, "did you mean 'check'?"),
        (["check", "bret"], "check", "unknown model 'bret' (did you mean 'bert'?)"),
        (["check", "gtp2"], "check", "(did you mean 'gpt2'?)"),
        (["check", "bert", "--schemes", "reezro"], "check", "(did you mean 'rezero'?)"),
        (["demo", "--schemes", "vanilla,deepnte"], "demo", "(did you mean 'deepnet'?)"),
        (["demo", "--schemes", "tfixpu"], "demo", "(did you mean 't-fixup'?)"),
    ],
)
def test_typos_get_a_suggestion(
    argv: list[str], command: str | None, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, command, needle)


def test_no_suggestion_for_a_name_far_from_every_valid_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(["check", "zzzzzz"], capsys)
    assert_one_line_error(code, err, "check", "unknown model 'zzzzzz'")
    assert "did you mean" not in err


def test_depth_is_the_flag_everywhere_and_layers_its_alias() -> None:
    from initwatch.cli import build_parser

    parser = build_parser()
    for command in ("demo", "check"):
        extra = ["bert"] if command == "check" else []
        assert parser.parse_args([command, *extra, "--depth", "6"]).depth == 6
        assert parser.parse_args([command, *extra, "--layers", "5"]).depth == 5
