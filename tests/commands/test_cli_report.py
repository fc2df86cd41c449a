"""``initwatch report`` on runs written by a Watch: finished, still being written, truncated."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from builders import plain_loop
from torch import nn
from torch.utils.tensorboard import SummaryWriter

import initwatch
from initwatch.cli import main
from initwatch.commands.report import depth_key, load, parse_alerts, verdict


def report(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What ``initwatch report ARGV`` printed; it exited with 0."""
    assert main(["report", *argv]) == 0
    return capsys.readouterr().out


def dead_relu_model() -> nn.Module:
    """Its ReLU outputs are all zero (bias -10): a dead_units alert after 3 logging steps."""
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        model[0].bias.fill_(-10.0)
    return model


def write_run(logdir: Path, steps: int, close: bool) -> initwatch.Watch:
    model = dead_relu_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    writer = SummaryWriter(str(logdir))
    watch = initwatch.Watch(model, writer=writer, every=1, on_alert="ignore")
    plain_loop(watch, opt, steps, lambda step: model(torch.randn(16, 8)).pow(2).mean() + 1.0)
    if close:
        watch.close()
        writer.close()
    else:
        watch.end_step()
        writer.flush()  # on disk, but the run goes on: no summary yet
    return watch


def write_healthy_run(logdir: Path) -> None:
    """4 steps of a GELU MLP at a small lr, closed: no alert."""
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with SummaryWriter(str(logdir)) as writer:
        watch = initwatch.Watch(model, writer=writer, every=1, on_alert="ignore")
        plain_loop(watch, opt, 4, lambda step: model(torch.randn(16, 8)).pow(2).mean())
        watch.close()


def test_a_run_still_being_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    watch = write_run(tmp_path / "live", steps=6, close=False)
    assert any(a.kind == "dead_units" for a in watch.alerts)
    out = report([str(tmp_path)], capsys)
    assert "run live: steps 0-" in out and "still being written" in out
    assert "dead_units at 1" in out  # the ReLU at module path "1"
    assert "remedy: " in out and "LeakyReLU" in out
    assert "verdict: UNHEALTHY" in out


def test_a_truncated_event_file_is_read_up_to_its_last_whole_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "done", steps=6, close=True)
    (events,) = (tmp_path / "done").glob("events.out.tfevents.*")
    cut = tmp_path / "cut"
    cut.mkdir()
    data = events.read_bytes()
    (cut / events.name).write_bytes(data[: len(data) - 37])  # a record cut in the middle
    out = report([str(cut)], capsys)
    assert "run .: steps 0-" in out and "dead_units" in out

    out = report([str(tmp_path / "done")], capsys)
    assert "finished" in out


def test_one_event_file_and_the_heatmap_of_another_statistic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "run", steps=4, close=True)
    (events,) = (tmp_path / "run").glob("events.out.tfevents.*")
    png = tmp_path / "h.png"
    out = report([str(events), "--plot", str(png), "--stat", "act_rms", "--top", "1"], capsys)
    assert f"run {events.name}: steps 0-3" in out and png.read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"smallest gradient norm +0 \(0\.00\)$", out, re.M), out  # --top 1


def test_healthy_run_verdict(tmp_path: Path) -> None:
    write_healthy_run(tmp_path)
    (run,) = load(str(tmp_path))
    v = verdict(run)
    assert v.healthy and v.reason.startswith("no alerts") and "loss" in v.reason


def test_markdown_parser_of_older_runs_round_trip_and_still_updates() -> None:
    parsed = parse_alerts(OLD_MARKDOWN)
    assert [(a.step, a.layer, a.is_update) for a in parsed] == [
        (10, "encoder.0", False),
        (20, "encoder.0", True),
    ]
    assert parsed[0].remedy == "use DeepNet" and parsed[0].message == "grad tiny"


def test_depth_order() -> None:
    names = ["decoder.1", "encoder.11", "embed", "encoder.2", "decoder.0"]
    assert sorted(names, key=depth_key) == [
        "encoder.2",
        "encoder.11",
        "decoder.0",
        "decoder.1",
        "embed",
    ]


def test_copied_run_directory_is_found_recursively(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "a" / "b", steps=3, close=True)
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    out = report([str(tmp_path)], capsys)
    assert "run a/b:" in out and "run c/b:" in out


def test_report_reads_the_alert_data_not_the_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wording change of the Markdown cannot break the report: it reads the plain data."""
    from initwatch.sinks import tensorboard

    monkeypatch.setattr(tensorboard, "alert_markdown", lambda alerts: "reworded entirely")
    watch = write_run(tmp_path / "run", steps=6, close=True)
    dead = next(a for a in watch.alerts if a.kind == "dead_units")
    (run,) = load(str(tmp_path))
    assert [(a.step, a.kind, a.layer, a.repeat) for a in run.alerts] == [
        (a.step, a.kind, a.layer, a.repeat) for a in watch.alerts
    ]
    assert run.alerts[0].remedy == dead.remedy and run.alerts[0].value == dead.value
    assert "dead_units at 1" in report([str(tmp_path)], capsys)


# The alert Markdown initwatch wrote before it wrote alerts as data (a run of an older version).
OLD_MARKDOWN = (
    "**warning · vanishing_gradient** at `encoder.0` (step 10, value 1e-05, threshold 0.01): "
    "grad tiny\n\n→ use DeepNet\n\n---\n\n"
    "**warning · vanishing_gradient** at `encoder.0` (step 20, value 1e-06, threshold 0.01, "
    "still since step 10): still tiny\n\n→ use DeepNet"
)


def test_runs_of_older_versions_are_read_from_their_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SummaryWriter(str(tmp_path / "old")) as writer:
        for step in (10, 20):
            writer.add_scalar("initwatch/grad_norm/encoder.0", 1e-5, step)
            writer.add_scalar("initwatch/grad_norm/encoder.1", 1.0, step)
        writer.add_text("initwatch/alerts", OLD_MARKDOWN, 20)
    (run,) = load(str(tmp_path))
    assert [(a.step, a.layer, a.is_update, a.first_step) for a in run.alerts] == [
        (10, "encoder.0", False, 10),
        (20, "encoder.0", True, 10),
    ]
    assert run.alerts[0].value == 1e-05 and run.alerts[0].remedy == "use DeepNet"
    out = report([str(tmp_path)], capsys)
    assert "vanishing_gradient" in out and "verdict: UNHEALTHY" in out


def test_unhealthy_runs_and_the_summary_come_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "a-healthy" sorts first on disk; the report leads with the summary, then "b-sick"."""
    write_healthy_run(tmp_path / "a-healthy")
    write_run(tmp_path / "b-sick", steps=6, close=True)
    out = report([str(tmp_path)], capsys)
    lines = out.splitlines()
    assert lines[0] == "1 of 2 runs UNHEALTHY: b-sick"
    table_rows = [ln.split()[0] for ln in lines[2:6] if ln and not ln.startswith(("run ", "-"))]
    assert table_rows == ["b-sick", "a-healthy"]
    runs = [ln.split(":")[0] for ln in lines if re.match(r"run \S+:", ln)]
    assert runs == ["run b-sick", "run a-healthy"]


def test_worst_layers_name_blocks_as_the_alerts_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from initwatch import zoo

    torch.manual_seed(0)
    model = zoo.build("torch_encoder", layers=2, hidden=16, heads=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with SummaryWriter(str(tmp_path / "enc")) as writer:
        watch = initwatch.Watch(model, writer=writer, every=1, on_alert="ignore")
        plain_loop(watch, opt, 2, lambda step: model(torch.randn(2, 5, 16)).pow(2).mean())
        watch.close()
    tags = {t for t in load(tmp_path / "enc")[0].scalars}
    assert any(".00" in t for t in tags)  # TensorBoard's tags pad the block index
    out = report([str(tmp_path / "enc")], capsys)
    worst = out[out.index("worst layers") :]
    assert re.search(r"\bencoder\.[01]\b", worst) and not re.search(r"encoder\.0\d", worst)
