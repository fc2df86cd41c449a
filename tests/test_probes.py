"""Probes: reductions on known tensors, gating, kept references, hook removal, parameter stats."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
from builders import param_probe, probed_step
from torch import nn

from initwatch import probes as probes_mod
from initwatch.probes import (
    ActivationProbe,
    Gate,
    ProbeSet,
    first_tensor,
    foreach_norm,
    reduce_activation,
    reduce_grad_signal,
)
from initwatch.selection import Target, saturation_band, select_layers
from initwatch.stats import StatBuffer

NAN, INF = float("nan"), float("inf")


def test_reduce_activation_on_a_known_tensor():
    x = torch.tensor([[0.0, 3.0, -4.0], [1.0, 0.0, -0.5]])
    sums, maxs = reduce_activation(x)
    n, s, sq, zeros, sat, bad = sums.tolist()
    assert (n, zeros, sat, bad) == (6, 2, 0, 0)
    assert s == pytest.approx(-0.5)
    assert sq == pytest.approx(9 + 16 + 1 + 0.25)
    assert maxs.tolist() == [4.0]


@pytest.mark.parametrize(
    ("module", "values", "saturated"),
    [
        (nn.Tanh(), [0.999, -0.995, 0.98, 0.0, 0.99], 2),  # |y| > 0.99
        (nn.Sigmoid(), [0.005, 0.995, 0.5, 0.02, 0.98], 2),  # y < 0.01 or y > 0.99
        (nn.Hardtanh(-2.0, 2.0), [-2.0, 2.0, 1.99, 0.0], 2),  # at the clamp values
        (nn.ReLU6(), [0.0, 6.0, 3.0], 2),
    ],
)
def test_saturation_bands(module, values, saturated):
    sums, _ = reduce_activation(torch.tensor(values), saturation_band(module))
    assert sums[4].item() == saturated
    assert saturation_band(nn.GELU()) is None


def test_non_finite_values_are_counted_and_never_raise():
    x = torch.tensor([1.0, NAN, INF, -INF, 0.0, 2.0])
    sums, maxs = reduce_activation(x)
    n, s, sq, zeros, _, bad = sums.tolist()
    assert (n, zeros, bad) == (6, 1, 3)
    assert not math.isfinite(s) and not math.isfinite(sq) and not math.isfinite(maxs.item())


def test_low_precision_inputs_are_reduced_in_float32():
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    sums, maxs = reduce_activation(x.bfloat16())
    ref, _ = reduce_activation(x.bfloat16().float())
    assert sums.dtype == torch.float32
    assert torch.allclose(sums, ref, rtol=1e-5, atol=1e-3)
    assert maxs.item() == x.bfloat16().float().abs().max().item()


def test_reduce_grad_signal():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert reduce_grad_signal(g).tolist() == [25.0, 4.0]


def test_first_tensor_handles_tuples_and_other_outputs():
    t = torch.ones(2)
    assert first_tensor(t) is t
    assert first_tensor((t, None)) is t
    assert first_tensor([t]) is t
    assert first_tensor((None, t)) is None
    assert first_tensor({"x": t}) is None


def _probe(module: nn.Module, grad_signal: bool = False):
    buf, gate = StatBuffer(), Gate()
    target = select_layers(nn.Sequential(module))[0]
    target.grad_signal = grad_signal
    probe = ActivationProbe(target, buf, gate)
    buf.allocate()
    module.register_forward_hook(probe)
    return probe, buf, gate


def test_gate_off_measures_nothing_and_gate_on_measures():
    torch.manual_seed(0)
    lin = nn.Linear(3, 4)
    probe, buf, gate = _probe(lin, grad_signal=True)
    x = torch.randn(5, 3)
    lin(x).sum().backward()
    assert buf.read().row(probe.group)["count"] == 0
    assert buf.read().row(probe.grad_group)["count"] == 0
    gate.on = True
    y = lin(x)
    y.pow(2).sum().backward()
    act, grad = buf.read().row(probe.group), buf.read().row(probe.grad_group)
    assert act["count"] == 20
    assert act["sumsq"] == pytest.approx(y.pow(2).sum().item(), rel=1e-6)
    assert grad["sumsq"] == pytest.approx((2 * y).pow(2).sum().item(), rel=1e-6)


def test_tuple_outputs_are_measured_by_element_zero():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    probe, buf, gate = _probe(mha)
    gate.on = True
    x = torch.randn(2, 3, 8)
    out, _ = mha(x, x, x)
    assert buf.read().row(probe.group)["sumsq"] == pytest.approx(out.pow(2).sum().item(), 1e-5)


def test_a_failing_probe_does_not_break_the_forward(monkeypatch):
    lin = nn.Linear(2, 2)
    probe, buf, gate = _probe(lin)
    gate.on = True

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(probes_mod, "activation_partials", boom)  # the eager reduction
    y = lin(torch.ones(1, 2))
    assert y.shape == (1, 2)
    assert "boom" in probe.error


@pytest.mark.parametrize("x", [torch.ones(3), torch.zeros(0, 4)])
def test_integer_and_empty_outputs_are_skipped(x):
    class Ints(nn.Module):
        def forward(self, x):
            return x.long() if x.numel() else x

    m = Ints()
    buf, gate = StatBuffer(), Gate()
    probe = ActivationProbe(Target(select_layers(nn.Linear(1, 1))[0].info, m), buf, gate)
    buf.allocate()
    m.register_forward_hook(probe)
    gate.on = True
    m(x)
    assert buf.read().row(probe.group)["count"] == 0 and probe.error is None


def test_no_activation_or_gradient_is_kept_after_the_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    buf = StatBuffer()
    probes = ProbeSet(select_layers(model), buf)
    buf.allocate()
    probes.gate.on = True
    refs = []
    model[1].register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))
    model[2].register_full_backward_hook(lambda m, gi, go: refs.append(weakref.ref(go[0])))
    model(torch.randn(16, 4, requires_grad=True)).sum().backward()
    gc.collect()
    assert len(refs) == 2 and all(r() is None for r in refs)
    assert buf.read().row(probes.probes[0].grad_group)["count"] == 16 * 8


def test_probeset_remove_removes_every_hook_and_is_idempotent():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def hooks():
        return sum(len(m._forward_hooks) for m in model.modules())

    before = hooks()
    buf = StatBuffer()
    probes = ProbeSet(select_layers(model), buf)
    buf.allocate()
    assert hooks() == before + 3
    probes.remove()
    probes.remove()
    assert hooks() == before


def test_foreach_norm_matches_a_loop_and_falls_back_for_sparse():
    torch.manual_seed(0)
    ts = [torch.randn(3, 4), torch.randn(7), torch.randn(2, 2).bfloat16()]
    for n, t in zip(foreach_norm(ts), ts, strict=True):
        assert n.item() == pytest.approx(t.float().norm().item(), rel=1e-3)
    sparse = torch.tensor([0.0, 3.0, 0.0, 4.0]).to_sparse()
    assert foreach_norm([sparse])[0].item() == pytest.approx(5.0)
    assert foreach_norm([]) == []


def _param_probe(model: nn.Module, sample: int = 1024, exact_numel: int = 0):
    """exact_numel=0: every tensor larger than the sample is sampled (the estimator tests)."""
    return param_probe(model, sample=sample, exact_numel=exact_numel)


def test_grad_and_weight_norms_and_non_finite_flags():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(2, 2))
    model[2].weight.requires_grad_(False)  # frozen: not measured
    probe, buf = _param_probe(model)
    names = [t.info.name for t in probe.targets]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "2.bias"]
    model[:2](torch.randn(5, 4)).sum().backward()  # model[2] unused: no grad
    model[0].weight.grad[0, 0] = NAN
    probe.read_grads()
    host = buf.read()
    g = host.column(probe.group, "grad_sumsq")
    w = host.column(probe.group, "weight_sumsq")
    bad = host.column(probe.group, "grad_nonfinite")
    assert probe.has_grad == [True, True, True, True, False]
    assert math.isnan(g[0]) and bad == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert g[2] == pytest.approx(model[1].weight.grad.pow(2).sum().item(), rel=1e-5)
    assert w[3] == pytest.approx(model[1].bias.pow(2).sum().item(), rel=1e-5)


def _exact_and_estimate(opt_cls, lr, seed, sample):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(96, 160), nn.GELU(), nn.Linear(160, 8))
    opt = opt_cls(model.parameters(), lr=lr)
    probe, buf = _param_probe(model, sample=sample)
    before, host = probed_step(model, opt, probe, buf, torch.randn(32, 96))
    rows = []
    for i, (p, p0) in enumerate(zip(model.parameters(), before, strict=True)):
        delta = (p.detach() - p0).flatten().double()
        exact = delta.norm().item() / p0.norm().item()
        row = host.row(probe.group, i)
        est = math.sqrt(row["update_sumsq"] * p.numel() / probe.sampled[i]) / math.sqrt(
            row["weight_sumsq"]
        )
        # relative sd of the sampled sum of squares: sqrt((m4 / m2^2 - 1) / k); the norm: half
        m2, m4 = delta.pow(2).mean().item(), delta.pow(4).mean().item()
        sd = 0.5 * math.sqrt(max(m4 / m2**2 - 1, 0.0) / probe.sampled[i])
        rows.append((p.numel(), probe.sampled[i], exact, est, sd))
    return rows


@pytest.mark.parametrize(("opt_cls", "lr"), [(torch.optim.SGD, 0.1), (torch.optim.Adam, 1e-3)])
def test_update_ratio_estimator_against_the_exact_ratio(opt_cls, lr):
    rows = _exact_and_estimate(opt_cls, lr, seed=0, sample=512)
    big = [r for r in rows if r[0] > r[1]]
    small = [r for r in rows if r[0] <= r[1]]
    assert big and small
    for _, _, exact, est, _ in small:  # tensors no larger than k are measured exactly
        assert est == pytest.approx(exact, rel=1e-4)
    for _, k, exact, est, sd in big:
        assert k == 512
        # five standard deviations of the sampling error, plus 1/k: one atypical coordinate in
        # or out of the sample (Adam's first step is nearly constant with rare small entries)
        assert abs(est / exact - 1) < 5 * sd + 1 / k, (exact, est, sd)
        assert sd < 0.05  # ~1/sqrt(2k) for i.i.d.-like updates


def test_update_ratio_estimator_is_unbiased_over_seeds():
    errors = []
    for seed in range(8):
        rows = _exact_and_estimate(torch.optim.SGD, 0.1, seed=seed, sample=256)
        errors += [est / exact - 1 for n, k, exact, est, _ in rows if n > k]
    mean = sum(errors) / len(errors)
    sd = math.sqrt(sum((e - mean) ** 2 for e in errors) / (len(errors) - 1))
    assert abs(mean) < 4 * sd / math.sqrt(len(errors)) + 1e-3
    assert sd < 3 / math.sqrt(2 * 256)  # the documented ~1/sqrt(2k) scale


def test_sample_indices_are_fixed_and_bounded():
    torch.manual_seed(0)
    model = nn.Linear(300, 300)
    a, _ = _param_probe(model, sample=128)
    b, _ = _param_probe(model, sample=128)
    assert torch.equal(a.index[0], b.index[0])  # seeded: the same on every rank
    assert a.index[0].numel() == 128 and a.index[1].numel() == 128
    assert a.sampled == [128, 128]
    assert a.index[0].unique().numel() == 128  # without replacement below 4M elements
