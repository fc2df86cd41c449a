"""torch.compile: hooks attached before compiling keep working with no recompiles after warm-up."""

from __future__ import annotations

import copy

import pytest
import torch
from builders import manual_step
from torch import nn
from torch._dynamo.utils import counters

from initwatch.watch import Watch


def encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def step(model, watch, opt, x, i):
    manual_step(watch, opt, i, lambda: model(x).pow(2).mean())


@pytest.mark.slow
def test_compiled_model_measures_every_logging_step_without_recompiles():
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = encoder()
    reference = copy.deepcopy(model)
    watch = Watch(
        model, every=3, rules=False, dense_start=0, max_interval=None
    )  # hooks first, then compile
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(2, 5, 16)
    for i in range(6):  # warm-up: both gate values seen (logging and non-logging graphs)
        step(compiled, watch, opt, x, i)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs <= 2
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(6, 13):  # logging steps 6, 9, 12 and the steps between them
            step(compiled, watch, opt, x, i)
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["graph_break"]
    assert [f.step for f in watch.frames] == [0, 3, 6, 9, 12]
    last = watch.last_frame
    for layer in ("encoder.0", "encoder.1", "encoder.0.attn", "encoder.1.ffn"):
        assert last.get("act_rms", layer) > 0
    assert last.get("out_grad_rms", "encoder.0") > 0
    assert last.get("update_ratio", "layers.1.linear2.weight") > 0
    # the compiled run measured what an eager run measures
    eager_watch = Watch(reference, every=3, rules=False, dense_start=0, max_interval=None)
    step(reference, eager_watch, torch.optim.SGD(reference.parameters(), lr=0.01), x, 0)
    first, eager = watch.frames[0], eager_watch.last_frame
    for stat in ("act_rms", "act_absmax", "out_grad_rms", "grad_norm"):
        for layer, value in eager.values[stat].items():
            assert first.get(stat, layer) == pytest.approx(value, rel=1e-4), (stat, layer)
    watch.close()
    eager_watch.close()
