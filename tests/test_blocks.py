"""The one per-block aggregation: TensorBoard's block values are the ones the alerts quote."""

from __future__ import annotations

import math

import pytest
import torch
from builders import events
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from initwatch.blocks import aggregate, param_group
from initwatch.frame import Frame, LayerInfo
from initwatch.rules.view import param_units
from initwatch.sinks import aggregate_params
from initwatch.sinks.layout import TagNames
from initwatch.watch import Watch


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def test_tensorboard_block_update_ratio_equals_the_alerts_with_a_frozen_parameter(tmp_path):
    model = _encoder()
    alerts = []
    writer = SummaryWriter(str(tmp_path))
    watch = Watch(model, writer=writer, every=1, on_alert=alerts.append)
    for block in model.layers:  # frozen after the Watch was made: measured, but never updated
        block.self_attn.in_proj_weight.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=30.0)
    with watch.step(0, opt) as scope:
        scope.loss = model(torch.randn(5, 3, 16)).pow(2).mean()
        scope.loss.backward()
        opt.step()
    frame = watch.last_frame
    watch.close()
    writer.close()
    (alert,) = [a for a in alerts if a.kind == "update_ratio_high"]
    frozen = f"layers.{alert.layer.rsplit('.', 1)[-1]}.self_attn.in_proj_weight"
    # the frozen tensor was measured (its weight counts in the block's weight norm) ...
    assert frozen in frame.values["weight_norm"] and frozen not in frame.values["update_ratio"]
    ea = events(tmp_path)
    tag = TagNames(frame.layers)(alert.layer)  # block indices zero-padded in tags
    (point,) = ea.Scalars(f"initwatch/update_ratio/{tag}")
    # ... and TensorBoard's value for the block is the alert's (float32 on disk)
    assert point.step == alert.step == 0
    assert point.value == pytest.approx(alert.value, rel=1e-6)
    # which is the ratio of the tensors that train: the frozen weight does not dilute it
    names = [p.name for p in frame.layers if p.kind == "param" and param_group(p) == alert.layer]
    ur, wn = frame.values["update_ratio"], frame.values["weight_norm"]
    moving = [n for n in names if math.isfinite(ur.get(n, math.nan)) and wn[n] > 0]
    expect = math.sqrt(sum((ur[n] * wn[n]) ** 2 for n in moving) / sum(wn[n] ** 2 for n in moving))
    diluted = math.sqrt(sum((ur[n] * wn[n]) ** 2 for n in moving) / sum(wn[n] ** 2 for n in names))
    assert alert.value == pytest.approx(expect, rel=1e-9)
    assert diluted < 0.9 * expect  # what a second aggregation counting the frozen weight showed


def _frame() -> Frame:
    ps = [
        LayerInfo("h.0.w", "param", 0, "h.0.w", "decoder", 0),
        LayerInfo("h.0.key_bias", "param", 1, "h.0.key_bias", "decoder", 0),
        LayerInfo("h.0.frozen", "param", 2, "h.0.frozen", "decoder", 0, trainable=False),
        LayerInfo("wte.weight", "param", 3, "wte.weight"),
    ]
    ps[1].zero_by_construction = True
    values = {
        "grad_norm": {"h.0.w": 3.0, "h.0.key_bias": 0.0, "wte.weight": math.inf},
        "weight_norm": {"h.0.w": 4.0, "h.0.key_bias": 0.0, "h.0.frozen": 3.0, "wte.weight": 1.0},
        "update_ratio": {"h.0.w": 1e-3, "h.0.key_bias": math.nan, "wte.weight": 2e-3},
        "grad_nonfinite": {"h.0.w": 0.0, "h.0.key_bias": 0.0, "wte.weight": 1.0},
    }
    return Frame(0, ps, values)


def test_sinks_and_rules_read_the_same_aggregation():
    f = _frame()
    tables = aggregate_params(f)
    units = {u.name: u for us in param_units(f, blocks_only=False).values() for u in us}
    assert list(tables["update_ratio"]) == ["decoder.0", "wte"] == list(units)
    for name, u in units.items():
        assert u.update_ratio(f) == tables["update_ratio"][name]
        g = u.grad_norm(f)
        assert (g == tables["grad_norm"][name]) or (
            math.isinf(g) and math.isinf(tables["grad_norm"][name])
        )
    assert tables["update_ratio"]["decoder.0"] == pytest.approx(1e-3)  # frozen: not diluted
    assert tables["weight_norm"]["decoder.0"] == pytest.approx(5.0)  # every measured weight
    assert tables["grad_weight_ratio"]["decoder.0"] == pytest.approx(3.0 / 4.0)
    assert tables["grad_norm"]["wte"] == math.inf  # a non-finite gradient is not hidden
    assert tables["grad_nonfinite"] == {"decoder.0": 0.0, "wte": 1.0}
    assert aggregate(f) is aggregate(f)  # computed once per frame


def test_a_unit_of_frozen_parameters_only_is_not_judged():
    ps = [LayerInfo("emb.weight", "param", 0, "emb.weight", trainable=False)]
    f = Frame(0, ps, {"weight_norm": {"emb.weight": 2.0}, "grad_norm": {"emb.weight": 0.0}})
    assert aggregate_params(f)["weight_norm"] == {"emb": 2.0}
    assert param_units(f, blocks_only=False) == {}
