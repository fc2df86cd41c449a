"""Histograms of block outputs and dL/d(block output): bins counted on the device into the stats
buffer (one host copy), at their cadence, written as TensorBoard histograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from builders import events as load
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from initwatch import histograms, stats
from initwatch.watch import Watch


def encoder(layers: int = 3) -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=nn.GELU())
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)


def reference_counts(t: torch.Tensor) -> np.ndarray:
    """The bins by their definition, in float64 numpy: a reference for the device count."""
    x = t.detach().double().flatten().numpy()
    h = histograms
    out = np.zeros(h.BINS)
    for v in x:
        if np.isnan(v):
            out[h.NAN_BIN] += 1
        elif np.isinf(v):
            out[h.CENTRE + int(np.sign(v)) * h.MAG] += 1
        elif abs(v) < 10.0**h.LO:
            out[h.CENTRE] += 1
        else:
            k = min(h.MAG, int(np.floor((np.log10(abs(v)) - h.LO) * h.PER_DECADE)) + 1)
            out[h.CENTRE + int(np.sign(v)) * k] += 1
    return out


def test_bin_edges_hold_the_values_counted_in_each_bin():
    torch.manual_seed(1)
    t = torch.randn(2000, dtype=torch.float64) * 10.0 ** torch.randint(-13, 6, (2000,))
    left, right = histograms.limits(absmax=float(t.abs().max()))
    for v in t.tolist():
        i = int(torch.nonzero(histograms.counts(torch.tensor([v]))).item())
        slack = 1e-6 * max(abs(left[i]), abs(right[i]))
        assert left[i] - slack <= v <= right[i] + slack, (v, i, left[i], right[i])


def test_device_counts_match_the_bin_edges():
    torch.manual_seed(0)
    t = torch.cat(
        [
            torch.randn(4000) * 10.0 ** torch.randint(-14, 6, (4000,)).float(),
            torch.tensor([0.0, -0.0, float("nan"), float("inf"), float("-inf")]),
        ]
    )
    got = histograms.counts(t).numpy()
    want = reference_counts(t)
    assert got.sum() == t.numel()
    # float32 log10 may put a value within ~1e-7 of an edge in the neighbouring bin
    assert np.abs(got - want).sum() <= 4, np.nonzero(got - want)
    assert got[histograms.NAN_BIN] == 1 and got[0] >= 1 and got[-2] >= 1  # +-inf: outer bins


def test_counts_of_low_precision_tensors_are_counted_in_float32():
    t = torch.tensor([1e-3, -2.0, 0.5], dtype=torch.bfloat16)
    assert histograms.counts(t).dtype == torch.float32
    assert histograms.counts(t).sum() == 3


def train(model, watch, steps, micro=1, outputs=None, grads=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(steps):
        watch.begin_step(step)
        for _ in range(micro):
            x = torch.randn(5, 3, 16)
            out = model(x)
            if outputs is not None:
                outputs.append((step, out.detach().clone()))
            out.pow(2).mean().backward()
        watch.before_optimizer_step(opt)
        opt.step()
        opt.zero_grad()
        watch.end_step()


def test_histograms_are_in_the_event_file_at_their_cadence_and_count_every_element(tmp_path):
    torch.manual_seed(0)
    model = encoder()
    last = []
    model.layers[2].register_forward_hook(lambda m, a, o: last.append(o.detach().clone()))
    writer = SummaryWriter(str(tmp_path))
    watch = Watch(model, writer=writer, every=1, rules=False, histogram_every=2)
    train(model, watch, 5, micro=2)  # two micro-batches: their counts add up
    watch.close()
    writer.close()
    ea = load(tmp_path)
    tags = sorted(ea.Tags()["histograms"])
    assert tags == sorted(
        f"initwatch/{s}/encoder.{i:02d}" for s in ("act_hist", "out_grad_hist") for i in range(3)
    )
    for tag in tags:
        events = ea.Histograms(tag)
        assert [e.step for e in events] == [0, 2, 4]  # every 2nd measured step, the first one in
        for e in events:
            h = e.histogram_value
            assert sum(h.bucket) == h.num == 2 * 5 * 3 * 16  # every element of both micro-batches
            assert h.min < h.max
    # the counts are those of the outputs themselves (step 4's two micro-batches)
    frame = watch.frames[-1]
    got = np.array(frame.histograms["act_hist"]["encoder.2"])
    want = reference_counts(last[-2]) + reference_counts(last[-1])
    assert np.abs(got - want).sum() <= 2
    assert frame.step == 4
    assert watch.frames[-2].histograms == {}  # step 3: not a histogram step


def test_one_host_copy_per_logging_step_with_histograms(monkeypatch):
    torch.manual_seed(0)
    model = encoder()
    watch = Watch(model, every=1, rules=False, histogram_every=1)
    calls = {"to_host": 0, "item": 0}
    real_to_host, real_item = stats.to_host, torch.Tensor.item

    def to_host(t):
        calls["to_host"] += 1
        return real_to_host(t)

    def item(self):
        calls["item"] += 1
        return real_item(self)

    monkeypatch.setattr(stats, "to_host", to_host)
    monkeypatch.setattr(torch.Tensor, "item", item)
    train(model, watch, 3)
    assert calls == {"to_host": 3, "item": 0}
    assert all(f.histograms["out_grad_hist"] for f in watch.frames)
    watch.close()


def test_histogram_every_zero_declares_no_histogram_fields():
    model = encoder()
    with_h = Watch(model, rules=False)
    sizes = with_h._buffer.data.numel()
    with_h.close()
    without = Watch(model, rules=False, histogram_every=0)
    assert sizes - without._buffer.data.numel() == 2 * 3 * histograms.BINS
    without.close()
    with pytest.raises((TypeError, ValueError), match="histogram_every"):
        Watch(model, histogram_every=-1)
