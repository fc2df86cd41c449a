"""``initwatch demo`` in its fast mode, then ``initwatch report`` on the runs it wrote."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest

from initwatch.cli import main
from initwatch.commands.demo import RunResult

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    logdir = tmp_path_factory.mktemp("demo") / "runs"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["demo", "--fast", "--schemes", "vanilla,rezero", "--logdir", str(logdir)])
    assert code == 0, err.getvalue()
    assert "Traceback" not in err.getvalue()
    return logdir, out.getvalue()


def row(out: str, scheme: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(f"{scheme} "))
    return re.split(r"\s{2,}", line.strip())


def test_vanilla_fails_with_an_alert_whose_remedy_names_a_scheme(demo: tuple[Path, str]) -> None:
    _, out = demo
    scheme, final, to_target, alerts, verdict, _ = row(out, "vanilla")
    assert verdict.startswith("FAILED") and to_target == "never"
    assert float(final) > math.log(16) - 0.2
    assert int(alerts) >= 1
    remedies = out.split("Alerts and remedies:")[1].split("No alerts")[0]
    assert "vanilla, step" in remedies and "vanishing_gradient" in remedies
    assert 'scheme="deepnet"' in remedies or 'scheme="t-fixup"' in remedies


def test_a_scheme_trains_without_a_warning(demo: tuple[Path, str]) -> None:
    _, out = demo
    scheme, final, to_target, alerts, verdict, _ = row(out, "rezero")
    assert verdict == "trained" and alerts == "0"
    assert float(final) < 0.5 and int(to_target) <= 100
    assert "No alerts: rezero." in out
    assert "rezero, step" not in out


def test_runs_are_written_and_the_tensorboard_command_printed(demo: tuple[Path, str]) -> None:
    logdir, out = demo
    assert out.startswith("initwatch demo: a 24-block Post-LN transformer")
    assert f"tensorboard --logdir {logdir}" in out
    for scheme in ("vanilla", "rezero"):
        assert list((logdir / scheme).glob("events.out.tfevents.*")), scheme


def test_report_reads_the_demo_runs(
    demo: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir, _ = demo
    png = tmp_path / "heatmap.png"
    assert main(["report", str(logdir), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    covered = re.search(r"^run vanilla: steps 0-(\d+) \(\d+ logged\), finished", out, re.M)
    assert covered
    vanilla = out.split("run vanilla:")[1].split("\n\n")[0]
    assert "step " in vanilla and "vanishing_gradient at encoder." in vanilla
    assert "verdict: UNHEALTHY" in vanilla
    assert f"worst layers at step {covered.group(1)}" in vanilla  # the last logged step
    rezero = out.split("run rezero:")[1].split("\n\n")[0]
    assert "alerts: none" in rezero and "verdict: healthy" in rezero
    assert re.search(r"^vanilla +[1-9]\d* +UNHEALTHY", out, re.M), out  # the overview table
    assert re.search(r"^rezero +0 +healthy", out, re.M), out
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 300_000


def test_verdicts() -> None:
    chance = math.log(16)
    assert (
        RunResult("v", [2.8] * 30, [], 1.0, "d", 0.5, chance).verdict == "FAILED: stuck at chance"
    )
    assert RunResult("v", [1.5] * 30, [], 1.0, "d", 0.5, chance).verdict.startswith("FAILED: did")
    nan = [1.0, float("nan")]
    assert "diverged" in RunResult("v", nan, [], 1.0, "d", 0.5, chance).verdict
    assert RunResult("v", [0.1] * 30, [], 1.0, "d", 0.5, chance).verdict == "trained"


def test_default_runs_are_the_featured_schemes_and_all_runs_every_scheme_that_applies() -> None:
    from initwatch.anatomy import inspect
    from initwatch.cli import build_parser
    from initwatch.commands.demo import settings_from_args
    from initwatch.demo_task import TaskConfig, build_model
    from initwatch.schemes.registry import SCHEMES

    parse = build_parser().parse_args
    assert settings_from_args(parse(["demo"])).schemes == (
        "vanilla",
        "deepnet",
        "t-fixup",
        "rezero",
    )
    every = settings_from_args(parse(["demo", "--schemes", "ALL", "--depth", "6"])).schemes
    anatomy = inspect(build_model(TaskConfig(depth=6, width=64, heads=4, ffn=128), seed=0))
    applicable = [n for n, s in SCHEMES.items() if s.applies(anatomy) is None]
    assert every == ("vanilla", *applicable) and len(every) > 4
    assert {"admin", "ds-init"} <= set(every) and "scaled" not in every  # Post-LN demo model
    picked = settings_from_args(parse(["demo", "--schemes", "vanilla,admin"])).schemes
    assert picked == ("vanilla", "admin")


@pytest.mark.parametrize(
    ("schemes", "why"),
    [
        ("vanilla,skipinit", "SkipInit there is ReZero"),
        ("vanilla,Fixup", "T-Fixup"),
        ("vanilla,scaled", "Pre-LN"),
        ("vanilla,skipint", "'skipinit' would not apply"),
    ],
)
def test_a_scheme_that_cannot_apply_to_the_demo_model_is_refused_before_training(
    schemes: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = tmp_path / "runs"
    code = main(
        ["demo", "--schemes", schemes, "--steps", "3", "--depth", "2"] + ["--logdir", str(logdir)]
    )
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    assert first.startswith("initwatch: error: --schemes: ") and why in first, err
    assert "does not apply to the demo's Post-LN transformer" in first or "would not" in first
    choices = first.split("choose from ")[1].split(", ")
    from initwatch.schemes.registry import SCHEMES

    post_ln = [n for n in SCHEMES if n not in ("scaled", "skipinit", "fixup")]
    assert choices == ["vanilla", *post_ln]
    assert not logdir.exists()  # nothing trained, nothing written


def test_the_unknown_scheme_choices_are_those_that_apply_to_the_demo_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--schemes", "vanilla,magic"]) == 2
    choices = capsys.readouterr().err.split("choose from ")[1].splitlines()[0].split(", ")
    assert "deepnet" in choices and not {"skipinit", "fixup", "scaled"} & set(choices)


def test_run_demo_refuses_a_scheme_that_cannot_apply_before_training(tmp_path: Path) -> None:
    from initwatch.commands.args import UsageError
    from initwatch.commands.demo import DemoSettings, run_demo

    settings = DemoSettings(
        schemes=("vanilla", "fixup"), steps=2, depth=2, width=16, logdir=str(tmp_path / "runs")
    )
    with pytest.raises(UsageError, match="'fixup' does not apply to the demo"):
        run_demo(settings)
    assert not (tmp_path / "runs").exists()
