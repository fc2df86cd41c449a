"""The dashboard answers "which layer, since when": depth ratios equal to what the rules test,
log10 lines, zero-padded tags (synthetic frames: no model, fast)."""

from __future__ import annotations

import pytest
from builders import events as load
from torch.utils.tensorboard import SummaryWriter

from initwatch.context import RunContext
from initwatch.frame import Frame, LayerInfo
from initwatch.rules.depth import depth_ratios
from initwatch.rules.detectors import Inputs, activations, vanishing_gradient
from initwatch.rules.thresholds import Thresholds
from initwatch.sinks.layout import TagNames
from initwatch.sinks.tensorboard import TensorBoardSink


def vanishing_frame(step: int = 0, depth: int = 12) -> Frame:
    """Blocks whose gradients fall 10x per block toward the input, outputs growing 2x."""
    blocks = [
        LayerInfo(f"encoder.{i}", "block", i, f"layers.{i}", "encoder", i) for i in range(depth)
    ]
    params = [
        LayerInfo(f"layers.{i}.w", "param", i, f"layers.{i}.w", "encoder", i) for i in range(depth)
    ]
    values = {
        "grad_norm": {f"layers.{i}.w": 10.0 ** (i - depth + 1) for i in range(depth)},
        "weight_norm": {f"layers.{i}.w": 1.0 for i in range(depth)},
        "update_ratio": {f"layers.{i}.w": 1e-3 for i in range(depth)},
        "act_rms": {f"encoder.{i}": 2.0**i for i in range(depth)},
        "out_grad_rms": {f"encoder.{i}": 1e-3 * 10.0 ** (i - depth + 1) for i in range(depth)},
    }
    return Frame(step, blocks + params, values, {"loss": 2.0, "lr": 1e-3})


def test_depth_ratios_are_the_numbers_the_rules_alert_on():
    frame, th = vanishing_frame(), Thresholds()
    found = {(d.stat, d.stack): d for d in depth_ratios(frame, th)}
    x = Inputs(frame, RunContext(), th)
    depth = [f for f in vanishing_gradient(x) if f.evidence["source"] == "depth"]
    by_what = {f.message.split(" of ")[0]: f for f in depth}
    grad = by_what["gradient norm"]
    assert found[("grad_norm", "encoder")].ratio == pytest.approx(grad.value, rel=1e-12)
    assert found[("grad_norm", "encoder")].threshold == grad.threshold
    signal = by_what["backward signal (out_grad_rms)"]
    assert found[("out_grad_rms", "encoder")].ratio == pytest.approx(signal.value, rel=1e-12)
    assert found[("grad_norm", "encoder")].layer == grad.layer == "encoder.0"
    # 11 blocks above the lowest: largest / lowest = 2^11, beyond the growth threshold 100
    growth = found[("act_rms_growth", "encoder")]
    assert growth.ratio == pytest.approx(2.0**11) and growth.alerting
    exploding = [f for f in activations(x) if f.kind == "exploding_activation"]
    assert exploding[0].value == pytest.approx(growth.ratio)
    assert not found[("act_rms_decay", "encoder")].alerting  # nothing shrank


def test_depth_ratios_need_the_rules_minimum_of_layers():
    frame = vanishing_frame(depth=2)
    assert depth_ratios(frame, Thresholds()) == []
    assert depth_ratios(frame, Thresholds(min_layers=2)) != []


def test_sink_writes_depth_ratios_in_log10_with_their_thresholds(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer)
    th = Thresholds(grad_depth_ratio=1e-3)  # the sink draws the rules' own thresholds
    sink.bind(th, RunContext())
    for step in range(3):
        sink.write_frame(vanishing_frame(step))
        sink.write_alerts([], step, 0)
    sink.close(vanishing_frame(3), [])
    writer.close()
    ea = load(tmp_path)
    ratio = ea.Scalars("initwatch/log10_depth_ratio/grad_norm/encoder")
    assert [e.step for e in ratio] == [0, 1, 2]
    assert ratio[0].value == pytest.approx(-11.0, abs=1e-5)  # 1e-11 of the top blocks
    line = ea.Scalars("initwatch/threshold/log10_depth_ratio/grad_norm")
    assert [e.value for e in line] == pytest.approx([-3.0] * 3)
    band = {
        name: ea.Scalars(f"initwatch/threshold/log10_update_ratio/{name}")[0].value
        for name in ("target", "high", "low")
    }
    assert band == pytest.approx({"target": -3.0, "high": -1.0, "low": -5.0})
    assert ea.Scalars("initwatch/log10_update_ratio/encoder.05")[0].value == pytest.approx(-3.0)
    # log10 block lines, zero-padded so that TensorBoard lists them in depth order
    tags = ea.Tags()["scalars"]
    lines = sorted(t for t in tags if t.startswith("initwatch/log10_grad_norm/"))
    assert lines == [f"initwatch/log10_grad_norm/encoder.{i:02d}" for i in range(12)]
    first = ea.Scalars("initwatch/log10_grad_norm/encoder.00")[0].value
    assert first == pytest.approx(-11.0, abs=1e-5)


def test_sink_leaves_zero_out_of_log10_lines(tmp_path):
    frame = vanishing_frame()
    frame.values["grad_norm"]["layers.3.w"] = 0.0
    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer)
    sink.write_frame(frame)
    sink.close(frame, [])
    writer.close()
    tags = load(tmp_path).Tags()["scalars"]
    assert "initwatch/grad_norm/encoder.03" in tags  # the linear value is there: 0
    assert "initwatch/log10_grad_norm/encoder.03" not in tags
    assert "initwatch/log10_grad_norm/encoder.04" in tags


def test_tag_names_pad_to_the_deepest_block_of_each_stack():
    enc = [LayerInfo(f"encoder.{i}", "block", i, f"e.{i}", "encoder", i) for i in range(120)]
    dec = [LayerInfo(f"decoder.{i}", "block", i, f"d.{i}", "decoder", i) for i in range(6)]
    names = TagNames(enc + dec)
    assert names("encoder.7") == "encoder.007" and names("encoder.119.ffn.act") == (
        "encoder.119.ffn.act"
    )
    assert names("decoder.5.cross") == "decoder.05.cross"
    assert names("transformer.wte") == "transformer.wte"
    assert names("encoder.7x") == "encoder.7x"  # not a block index
    assert sorted(names(f"encoder.{i}") for i in range(120)) == [
        names(f"encoder.{i}") for i in range(120)
    ]


def _pixels(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_heatmap_colours_are_fixed_so_runs_compare_and_small_changes_stay_small():
    import numpy as np

    from initwatch.sinks.heatmap import _levels, heatmap_image

    rows, steps = [f"encoder.{i}" for i in range(4)], list(range(8))
    wobble = np.log10(1 + 0.02 * np.sin(np.arange(32.0))).reshape(4, 8)  # +-2 %
    a = heatmap_image(wobble - 3.0, rows, steps, "t", scale=(-7.0, 1.0))
    b = heatmap_image(np.full((4, 8), -3.0), rows, steps, "t", scale=(-7.0, 1.0))
    assert a.shape == b.shape
    # +-2 % over an 8-decade scale is at most one palette level apart: the same picture
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 8 and np.median(diff) == 0
    # the data's own range (the old picture) paints the same +-2 % as the whole colour map
    assert np.ptp(_levels(wobble - 3.0, (-7.0, 1.0))[0]) <= 1
    assert np.ptp(_levels(wobble - 3.0)[0]) == 249


def test_heatmap_fits_a_tensorboard_card_with_a_label_per_row():
    import numpy as np

    from initwatch.sinks.heatmap import _ticks, heatmap_png

    rows = [f"encoder.{i}" for i in range(24)]
    png, h, w = heatmap_png(np.zeros((24, 256)), rows, list(range(256)), "t", scale=(-7, 1))
    assert w <= 400 and h <= 360  # shown unscaled in a TensorBoard image card
    assert [t for _, t in _ticks(-7.0, 1.0, 288)] == [
        "10", "1", "1e-1", "1e-2", "1e-3", "1e-4", "1e-5", "1e-6", "1e-7"
    ]  # fmt: skip


def test_vs_top_heatmap_is_the_ratio_vanishing_gradient_tests(tmp_path):
    import numpy as np

    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer, heatmap_every=1000)
    frame = vanishing_frame()
    sink.write_frame(frame)
    m = np.array([[frame.values["out_grad_rms"][f"encoder.{i}"]] for i in range(12)])
    ratio = sink._vs_top(m, [f"encoder.{i}" for i in range(12)])[:, 0]
    found = {d.stat: d for d in depth_ratios(frame)}["out_grad_rms"]
    assert ratio.min() == pytest.approx(found.ratio) and ratio.argmin() == 0
    assert ratio[-3:].max() == pytest.approx(1.0)  # the top quarter's largest is the reference
    writer.close()


def test_an_alert_writes_its_heatmaps_at_the_step_it_is_raised(tmp_path):
    from initwatch.alerts import Alert

    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer, heatmap_every=1000)  # no turn comes during the run
    for step in range(3):
        sink.write_frame(vanishing_frame(step))
        alerts = []
        if step == 2:
            alerts = [Alert(2, "vanishing_gradient", "encoder.0", 1e-11, 1e-2, "warning", "m", "r")]
        sink.write_alerts(alerts, step, len(alerts))
    writer.close()
    ea = load(tmp_path)
    images = {t: [e.step for e in ea.Images(t)] for t in ea.Tags()["images"]}
    assert images == {
        f"initwatch/heatmap/{h}": [2]
        for h in ("grad_norm", "grad_norm_vs_top", "out_grad_rms", "out_grad_rms_vs_top")
    }


def test_report_plot_draws_the_update_ratio_against_the_band_the_run_was_judged_by(tmp_path):
    from PIL import Image

    from initwatch.commands.report import heatmap, load, update_ratio_band

    writer = SummaryWriter(str(tmp_path / "tuned"))
    sink = TensorBoardSink(writer)
    sink.bind(Thresholds(), RunContext(pretrained=True))  # a fine-tune's band: 1e-6..1e-2
    for step in range(4):
        sink.write_frame(vanishing_frame(step))
        sink.write_alerts([], step, 0)
    sink.close(vanishing_frame(4), [])
    writer.close()
    (run,) = load(str(tmp_path))
    band = update_ratio_band(run)
    assert band == pytest.approx({"target": 1e-3, "high": 1e-2, "low": 1e-6})
    with_ratio = heatmap([run], "grad_norm", str(tmp_path / "a.png"))
    run.scalars = {t: v for t, v in run.scalars.items() if "update_ratio" not in t}
    without = heatmap([run], "grad_norm", str(tmp_path / "b.png"))
    # one more panel: the ratio of every block over steps
    assert Image.open(with_ratio).height > Image.open(without).height + 150
