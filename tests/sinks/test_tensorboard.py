"""TensorBoard round trip: tags, values, the custom-scalars layout, heatmaps, alert text."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from builders import events as load
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from initwatch.sinks import heatmap_image
from initwatch.sinks.tensorboard import HEATMAPS, TensorBoardSink
from initwatch.watch import Watch


def encoder(layers: int = 2) -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=nn.GELU())
    return nn.TransformerEncoder(layer, num_layers=layers)


def run(model, watch, steps, grads_at_step0=None, outputs=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(steps):
        watch.begin_step(step)
        loss = model(torch.randn(5, 3, 16)).pow(2).mean()
        loss.backward()
        if step == 0 and grads_at_step0 is not None:
            grads_at_step0.update({n: p.grad.clone() for n, p in model.named_parameters()})
        watch.before_optimizer_step(opt)
        opt.step()
        opt.zero_grad()
        watch.end_step(loss=loss)


def write_run(model, logdir, steps, sink=None, grads=None, **watch_kw):
    """:func:`run` for ``steps`` steps under a Watch (``every=1`` unless ``watch_kw`` says
    otherwise) writing to ``logdir``, through ``sink(writer)`` when given; closed. The Watch
    and the run as read back."""
    writer = SummaryWriter(str(logdir))
    watch = Watch(
        model, writer=writer if sink is None else sink(writer), **{"every": 1, **watch_kw}
    )
    run(model, watch, steps, grads)
    watch.close()
    writer.close()
    return watch, load(logdir)


def nan_encoder() -> nn.Module:
    """An :func:`encoder` with one NaN weight: a nonfinite alert at the first step."""
    model = encoder()
    with torch.no_grad():
        model.layers[0].linear2.weight[0, 0] = float("nan")
    return model


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("logged")
    torch.manual_seed(0)
    model = encoder(3)  # the depth rules need 3 blocks
    outputs = []
    model.layers[1].register_forward_hook(lambda m, a, out: outputs.append(out.detach().clone()))
    grads: dict[str, torch.Tensor] = {}
    cadence = dict(every=2, dense_start=0, max_interval=None)
    _, ea = write_run(model, tmp_path, 5, grads=grads, rules=False, **cadence)
    return ea, outputs, grads


def test_scalars_have_the_documented_tags_and_the_right_values(logged):
    ea, outputs, grads = logged
    tags = set(ea.Tags()["scalars"])
    for tag in (
        "initwatch/act_rms/encoder.01",  # block indices zero-padded: TensorBoard sorts by name
        "initwatch/act_absmax/encoder.00",
        "initwatch/out_grad_rms/encoder.00",
        "initwatch/act_rms/encoder.00.attn",
        "initwatch/grad_norm/encoder.01",
        "initwatch/update_ratio/encoder.00",
        "initwatch/log10_out_grad_rms/encoder.00",
        "initwatch/log10_grad_norm/encoder.01",
        "initwatch/global/grad_norm_global",
        "initwatch/global/loss",
        "initwatch/global/lr",
        "initwatch/alerts/count",
    ):
        assert tag in tags, tag
    # GELU outputs are exactly zero at one point only: no zero fraction is measured for them
    assert not any(t.startswith("initwatch/act_zero_frac/") for t in tags)
    assert not any(t.endswith("/encoder.1") for t in tags)  # one name per layer
    rms = ea.Scalars("initwatch/act_rms/encoder.01")
    assert [e.step for e in rms] == [0, 2, 4]
    assert rms[0].value == pytest.approx(outputs[0].double().pow(2).mean().sqrt().item(), rel=1e-5)
    block1 = [g for n, g in grads.items() if n.startswith("layers.1.")]
    norm = math.sqrt(sum(g.double().pow(2).sum().item() for g in block1))
    assert ea.Scalars("initwatch/grad_norm/encoder.01")[0].value == pytest.approx(norm, rel=1e-5)
    log_norm = ea.Scalars("initwatch/log10_grad_norm/encoder.01")[0].value
    assert log_norm == pytest.approx(math.log10(norm), abs=1e-5)
    assert [e.value for e in ea.Scalars("initwatch/alerts/count")] == [0, 0, 0]


def test_default_tag_budget_is_thirteen_per_gelu_block(tmp_path):
    layers = 4
    _, ea = write_run(encoder(layers), tmp_path, 1, rules=False)
    tags = ea.Tags()["scalars"]
    run_wide = ("global/", "alerts/", "log10_depth_ratio/", "threshold/")
    per_layer = [t for t in tags if not t.startswith(tuple(f"initwatch/{p}" for p in run_wide))]
    log10 = [t for t in per_layer if t.startswith("initwatch/log10_")]
    # 9 linear (10 with a ReLU: + act_zero_frac) and 4 log10 (act_rms, out_grad_rms,
    # grad_norm, update_ratio of the block)
    assert len(per_layer) - len(log10) == 9 * layers and len(log10) == 4 * layers
    depth = sorted(t for t in tags if t.startswith("initwatch/log10_depth_ratio/"))
    assert depth == [
        f"initwatch/log10_depth_ratio/{s}/encoder"
        for s in ("act_rms_decay", "act_rms_growth", "grad_norm", "out_grad_rms")
    ]
    thresholds = [t for t in tags if t.startswith("initwatch/threshold/")]
    assert len(thresholds) == 4 + 3  # one per depth ratio, the update-ratio target and band
    assert len([t for t in tags if t.startswith(("initwatch/global/", "initwatch/alerts/"))]) <= 8


def test_detail_all_writes_every_statistic_and_parameter(tmp_path):
    sink = lambda writer: TensorBoardSink(writer, detail="all")  # noqa: E731
    _, ea = write_run(encoder(), tmp_path, 1, sink=sink, rules=False)
    tags = set(ea.Tags()["scalars"])
    assert "initwatch/grad_norm/layers.0.linear1.weight" in tags
    assert "initwatch/act_std/encoder.00.attn" in tags
    with pytest.raises(ValueError, match="detail"):  # checked before the writer is used
        TensorBoardSink(object(), detail="everything")


def _layout(ea) -> dict[str, dict[str, list[str]]]:
    events = ea.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(events[-1].tensor_proto.string_val[0])  # the last one counts
    return {c.title: {ch.title: list(ch.multiline.tag) for ch in c.chart} for c in layout.category}


def _matching(regexes: list[str], tags: set[str]) -> set[str]:
    return {t for t in tags if any(re.match(r, t) for r in regexes)}  # as TensorBoard matches


def test_custom_scalars_layout_round_trip(logged):
    ea = logged[0]
    cats = _layout(ea)
    assert list(cats) == [
        "initwatch",
        "initwatch: blocks, log10",
        "initwatch: branches and activation functions",
        "initwatch: every statistic, linear",
    ]
    tags = set(ea.Tags()["scalars"])
    over = {title: _matching(regexes, tags) for title, regexes in cats["initwatch"].items()}
    charts = list(over.values())
    # run-wide signals in charts of their own
    assert {"initwatch/alerts/count"} in charts and {"initwatch/global/loss"} in charts
    assert {"initwatch/global/lr"} in charts
    assert {"initwatch/global/grad_norm_global"} in charts
    assert {"initwatch/global/skipped_step", "initwatch/global/act_nonfinite",
            "initwatch/global/grad_nonfinite"} in charts  # fmt: skip
    # a depth ratio with its threshold line; titles say what the statistic is
    depth = next(t for t in over if t.startswith("Depth ratio of the gradient norm"))
    assert over[depth] == {
        "initwatch/log10_depth_ratio/grad_norm/encoder",
        "initwatch/threshold/log10_depth_ratio/grad_norm",
    }
    ratio = next(t for t in over if t.startswith("Update/weight ratio"))
    assert "initwatch/threshold/log10_update_ratio/target" in over[ratio]
    assert "initwatch/log10_update_ratio/encoder.00" in over[ratio]
    # blocks apart from branches
    blocks = cats["initwatch: blocks, log10"]
    rms = _matching(blocks["Block output RMS, log10, one line per block"], tags)
    assert rms == {f"initwatch/log10_act_rms/encoder.0{i}" for i in range(3)}
    branches = {
        t: _matching(r, tags)
        for t, r in cats["initwatch: branches and activation functions"].items()
    }
    assert any(m and all(t.endswith((".attn", ".ffn")) for t in m) for m in branches.values())
    linear = {t: _matching(r, tags) for t, r in cats["initwatch: every statistic, linear"].items()}
    block_rms = next(m for t, m in linear.items() if t.startswith("output RMS per block"))
    assert block_rms == {f"initwatch/act_rms/encoder.0{i}" for i in range(3)}
    # every per-layer tag is drawn somewhere, and no chart is empty
    drawn = set().union(*(m for c in (over, branches, linear) for m in c.values()))
    drawn |= rms
    assert all(m for c in (branches, linear) for m in c.values())
    layer_tags = {t for t in tags if not t.startswith("initwatch/log10_")}
    assert layer_tags <= drawn | {"initwatch/alerts/count"}


def test_layout_collapses_the_linear_category(logged):
    events = logged[0].Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(events[-1].tensor_proto.string_val[0])
    assert [c.closed for c in layout.category] == [False, False, False, True]


def test_heatmaps_and_summary_are_written(logged):
    ea = logged[0]
    images = ea.Tags()["images"]
    for stat in ("grad_norm", "act_rms", "out_grad_rms"):
        assert f"initwatch/heatmap/{stat}" in images
        img = ea.Images(f"initwatch/heatmap/{stat}")[-1]
        assert img.width > 100 and img.height > 100
    summary = ea.Tensors("initwatch/summary/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert summary.startswith("## initwatch summary")
    assert "**Verdict: healthy: no alerts**" in summary
    assert "smallest backward-signal RMS" in summary


def test_alerts_are_written_as_text_with_the_remedy(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the alert's own warning
        watch, ea = write_run(nan_encoder(), tmp_path, 2)
    text = ea.Tensors("initwatch/alerts/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "nonfinite" in text and "**What to do:**" in text
    assert watch.alerts[0].remedy[:20] in text
    assert ea.Scalars("initwatch/alerts/count")[-1].value >= 1
    summary = ea.Tensors("initwatch/summary/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "**Verdict: UNHEALTHY: 1 alert, 1 error (nonfinite at" in summary
    assert "1. **nonfinite** at `" in summary
    assert ea.Scalars("initwatch/global/act_nonfinite")[0].value > 0


def test_heatmap_without_labels_is_a_plain_colour_map():
    values = np.array([[0.0, 1.0], [np.nan, -1.0]])
    img = heatmap_image(values, ["a", "b"], [0, 1], "t", labels=False)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert (img[8, 0] == 128).all()  # NaN cell is grey
    assert not (img[0, 0] == img[0, 8]).all()  # different values, different colours


def _frame(step: int):
    from initwatch.frame import Frame, LayerInfo

    layers = [LayerInfo(f"encoder.{i}", "block", i, f"layers.{i}", "encoder", i) for i in range(3)]
    values = {
        "act_rms": {f"encoder.{i}": 1.0 + i + step for i in range(3)},
        "out_grad_rms": {f"encoder.{i}": 1e-3 * (1.0 + i) for i in range(3)},
    }
    return Frame(step, layers, values, {"loss": 1.0})


@pytest.mark.parametrize(("budget", "during_run"), [(1e9, 6), (1e-9, 1)])
def test_heatmaps_during_the_run_respect_the_time_budget(tmp_path, budget, during_run):
    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer, heatmap_every=2, heatmap_budget=budget)
    for step in range(6):
        sink.write_frame(_frame(step))
    sink.close(_frame(6), [])
    writer.close()
    ea = load(tmp_path)
    tags = [f"initwatch/heatmap/{t}" for t in ("act_rms", "out_grad_rms", "out_grad_rms_vs_top")]
    assert sorted(ea.Tags()["images"]) == tags  # no parameters: no grad_norm images
    events = [e for t in tags for e in ea.Images(t)]
    # the images take turns, one a logging step when the budget allows (out_grad_rms and
    # out_grad_rms_vs_top due at frames 1, 3, 5, act_rms at 2, 4, 6, queued); each once more
    # at close (step 6)
    assert sum(e.step < 6 for e in events) == during_run
    assert sum(e.step == 6 for e in events) == 3
    if budget > 1:
        assert [e.step for e in ea.Images(tags[0])] == [2, 5, 6]


def test_a_logging_step_renders_at_most_one_heatmap(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer, heatmap_every=1, heatmap_budget=1e9)
    rendered = []
    real = sink.write_heatmaps

    def spy(step, stats=HEATMAPS):
        rendered.append(list(stats))
        real(step, stats)

    sink.write_heatmaps = spy
    for step in range(6):
        sink.write_frame(_frame(step))
    writer.close()
    # heatmap_every=1 makes every image (no parameters: no grad_norm rows) due at every frame:
    # they take turns, one render per logging step (the stall of a step is one image)
    assert rendered == [["act_rms"], ["out_grad_rms"], ["out_grad_rms_vs_top"]] * 2


def test_the_renderer_is_ready_before_the_first_image():
    import initwatch.sinks.heatmap as sinks

    sinks._FONT.clear()
    TensorBoardSink(object())
    assert sinks._FONT  # Pillow imported and the font loaded at setup, not at the first image


def test_heatmaps_render_without_matplotlib_and_memory_stays_flat(tmp_path):
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import sys, tracemalloc
        import torch
        from torch import nn
        from torch.utils.tensorboard import SummaryWriter
        from initwatch.sinks.tensorboard import HEATMAPS, TensorBoardSink
        from initwatch.watch import Watch
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        writer = SummaryWriter({str(tmp_path)!r})
        sink = TensorBoardSink(writer, heatmap_every=1, heatmap_budget=1e9)
        watch = Watch(model, writer=sink, every=1, rules=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        def run(n):
            for _ in range(n):
                step = (watch.step_index or 0) + 1
                with watch.step(step, opt) as scope:
                    scope.loss = model(torch.randn(8, 4)).pow(2).mean()
                    scope.loss.backward()
                    opt.step()
                    opt.zero_grad()
        run(5)
        tracemalloc.start()
        for _ in range(3):
            sink.write_heatmaps(0)
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(30):
            sink.write_heatmaps(0)
        grown = tracemalloc.get_traced_memory()[0] - base
        watch.close(); writer.close()
        print("matplotlib" in sys.modules, grown)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, grown = out.stdout.split()
    assert imported == "False"  # the old sink rendered with matplotlib on the training thread
    assert int(grown) < 200_000  # 30 more renders (90 images) hold no more memory
    ea = load(tmp_path)
    assert len(ea.Tags()["images"]) == 5  # 3 statistics, 2 of them also relative to the top
    ev = ea.Images("initwatch/heatmap/act_rms")[-1]
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(ev.encoded_image_string)).convert("RGB")
    assert img.size == (ev.width, ev.height) and ev.width > 100  # labels and colour bar


def test_text_tab_puts_the_original_alert_first_and_updates_in_one_line_each(tmp_path):
    from initwatch.alerts import Alert

    def alert(step, repeat, value):
        return Alert(
            step,
            "vanishing_gradient",
            "encoder.3",
            value,
            0.01,
            "warning",
            "backward signal of encoder.3 is small",
            "Use DeepNet; or switch to Pre-LN",
            first_step=8,
            repeat=repeat,
            extra={
                "cause": "vanishing_gradient/encoder",
                "layers": ["encoder.3", "encoder.2"],
                "evidence": {"source": "depth"},
            },
        )

    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer)
    sink.write_alerts([alert(8, 0, 5.3e-4)], 8, 1)
    sink.write_alerts([alert(18, 1, 4e-4)], 18, 1)
    sink.write_alerts([alert(28, 2, 3e-4)], 28, 1)
    sink.close(None, [alert(8, 0, 5.3e-4), alert(18, 1, 4e-4), alert(28, 2, 3e-4)])
    writer.close()
    ea = load(tmp_path)

    def texts(tag):
        return [(e.step, e.tensor_proto.string_val[0].decode()) for e in ea.Tensors(tag)]

    (original,) = texts("initwatch/alerts/text_summary")  # only the alert itself
    assert original[0] == 8
    assert "ratio 5.3e-04 (encoder.3 / top blocks; alert below 0.01)" in original[1]
    assert "value 0.00053" not in original[1] and "- Use DeepNet\n- switch to Pre-LN" in original[1]
    updates = texts("initwatch/alerts/updates/text_summary")
    assert [s for s, _ in updates] == [18, 28]
    for _, text in updates:  # one short line, never the remedy again
        assert "\n" not in text and "DeepNet" not in text and "still since step 8" in text
    (summary,) = texts("initwatch/summary/text_summary")
    body = summary[1]
    assert "**Verdict: UNHEALTHY: 1 alert (vanishing_gradient at encoder.3 since step 8)**" in body
    assert "1. **vanishing_gradient** at `encoder.3`, step 8: ratio 5.3e-04" in body
    assert '2 "still" updates, the last at step 28: ratio 3.0e-04' in body


def test_each_alert_is_also_written_as_plain_data(tmp_path):
    """Next to the Markdown, every alert's fields (``Alert.to_dict()``) as one JSON object."""
    import json

    from initwatch.alerts import Alert
    from initwatch.sinks.tensorboard import ALERT_DATA_PLUGIN, ALERT_DATA_TAG

    watch, ea = write_run(nan_encoder(), tmp_path, 3, on_alert="ignore")
    events = ea.Tensors(ALERT_DATA_TAG)
    assert ea.SummaryMetadata(ALERT_DATA_TAG).plugin_data.plugin_name == ALERT_DATA_PLUGIN
    records = [(e.step, json.loads(raw)) for e in events for raw in e.tensor_proto.string_val]
    assert len(records) == len(watch.alerts) >= 1
    for (step, record), alert in zip(records, watch.alerts, strict=True):
        assert step == alert.step
        assert set(record) == set(alert.to_dict())
        back = Alert.from_dict(record)
        assert (back.kind, back.layer, back.step, back.repeat) == (
            alert.kind,
            alert.layer,
            alert.step,
            alert.repeat,
        )
        assert back.message == alert.message and back.remedy == alert.remedy
