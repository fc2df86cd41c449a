"""The cost of monitoring, counted (never timed): device ops and host reads of a logging step,
hooks between logging steps, exact update ratios, and what is computed only where it means
something (zeros on ReLU-family outputs, non-finite counts once flagged)."""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch
from builders import gpt2_without_dropout as gpt2
from builders import param_probe, probed_step
from paths import ROOT, load_script
from torch import nn

from initwatch.probes import EXACT_UPDATE_NUMEL, reduce_activation
from initwatch.watch import Watch


def _profile():
    return load_script(ROOT / "bench" / "_profile.py", "bench_profile")


def _step(model, opt, x, watch=None, step=0):
    if watch is not None:
        watch.begin_step(step)
    loss = model(x, labels=x).loss
    loss.backward()
    if watch is not None:
        watch.before_optimizer_step(opt)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if watch is not None:
        watch.end_step(loss=loss)


def _logging_step_counts(layers: int):
    prof = _profile()
    torch.manual_seed(0)
    model = gpt2(layers=layers, positions=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 100, (2, 16))
    _step(model, opt, x)  # the optimizer's state exists before counting
    plain = prof.count(lambda: _step(model, opt, x))
    watch = Watch(model, every=1, rules=False)
    # the first logging steps build plans and index tensors once (step 0 also histograms)
    _step(model, opt, x, watch, 0)
    _step(model, opt, x, watch, 1)
    logged = prof.count(lambda: _step(model, opt, x, watch, 2))
    watch.close()
    return logged.ops - plain.ops, logged.host_reads - plain.host_reads, logged.names, watch


def test_a_logging_step_adds_a_few_ops_per_output_and_one_host_read():
    extra2, reads, names, watch = _logging_step_counts(2)
    extra4, _, _, watch4 = _logging_step_counts(4)
    outputs, sampled = len(watch._probes.probes), len(watch._params.sparse)
    assert len(watch._attention) == 2 and len(watch4._attention) == 4
    assert len(watch4._probes.probes) - outputs == 8  # 4 monitored outputs per block
    # per block: three reductions per monitored output (sum, norm, aminmax), one norm of the
    # block-output gradient, and its attention probe's q/k sample (6 ops: the rows are
    # reduced with every other sublayer's at the flush); the old per-tensor path took ~27 per
    # output, the per-sublayer attention reduction ~35
    per_block = (extra4 - extra2) / 2
    assert per_block <= 4 * 3 + 1 + 6, (extra2, extra4)
    # and a fixed number for every parameter tensor together (two per sampled tensor), the
    # batched attention reduction and the flush
    assert extra2 - 2 * per_block <= 2 * sampled + 65, (extra2, names)
    assert reads == 1  # the one buffer copy


def test_hooks_are_detached_between_logging_steps_of_an_eager_model():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    watch = Watch(model, every=3, rules=False, dense_start=0, max_interval=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def hooks():
        return sum(len(m._forward_hooks) for m in model.modules())

    seen = []
    for step in range(7):
        watch.begin_step(step)
        seen.append(hooks())
        model(torch.randn(5, 4)).pow(2).mean().backward()
        watch.before_optimizer_step(opt)
        opt.step()
        opt.zero_grad()
        watch.end_step()
    assert seen == [3, 0, 0, 3, 0, 0, 3]  # attached for logging steps only
    assert hooks() == 0
    assert [f.step for f in watch.frames] == [0, 3, 6]
    assert watch.last_frame.get("act_rms", "0") > 0
    watch.close()
    assert watch.begin_step(9) is False and hooks() == 0


def test_zero_fraction_only_on_relu_family_outputs():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 1))
    watch = Watch(model, every=1, rules=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watch.begin_step(0)
    x = torch.randn(16, 4)
    model(x).sum().backward()
    watch.before_optimizer_step(opt)
    opt.step()
    watch.end_step()
    zero = watch.last_frame.values["act_zero_frac"]
    assert set(zero) == {"1"}  # the ReLU; not the GELU, not the linear outputs
    relu_out = model[1](model[0](x))
    assert zero["1"] == pytest.approx((relu_out == 0).float().mean().item())
    watch.close()


def test_non_finite_values_are_flagged_then_counted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    watch = Watch(model, every=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the NaN where it is
    with torch.no_grad():
        model[0].weight[2, :] = float("nan")  # unit 2 of the first layer: 16 NaN per batch
    counts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(3):
            watch.begin_step(step)
            model(torch.randn(16, 4)).sum().backward()
            watch.before_optimizer_step(opt)
            opt.step()
            opt.zero_grad()
            watch.end_step()
            counts.append(watch.last_frame.get("act_nonfinite", "0"))
    # step 0: the sum says "present" (not counted: no extra pass); then counted exactly
    assert counts[0] == math.inf and counts[1:] == [16.0, 16.0]
    assert any(a.kind == "nonfinite" and a.step == 0 for a in watch.alerts)
    assert watch.last_frame.get("act_nonfinite", "1") == 16.0  # tanh(NaN) is NaN
    watch.close()


def test_staged_statistics_equal_the_reference_reduction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh())
    watch = Watch(model, every=1, rules=False)
    outs = {}
    model[1].register_forward_hook(lambda m, a, o: outs.setdefault("relu", []).append(o.detach()))
    model[3].register_forward_hook(lambda m, a, o: outs.setdefault("tanh", []).append(o.detach()))
    watch.begin_step(0)
    for _ in range(3):  # micro-batches accumulate
        model(torch.randn(5, 4) * 3).sum().backward()
    watch.end_step()
    f = watch.last_frame
    for name, key, band in (("1", "relu", None), ("3", "tanh", (0.0, 0.99, False))):
        sums, maxs = reduce_activation(torch.cat(outs[key]), band)
        n, s, sq, zeros, sat, _ = sums.tolist()
        assert f.get("act_rms", name) == pytest.approx(math.sqrt(sq / n), rel=1e-5)
        assert f.get("act_mean", name) == pytest.approx(s / n, rel=1e-5, abs=1e-7)
        assert f.get("act_absmax", name) == pytest.approx(maxs.item())
        assert f.get("act_nonfinite", name) == 0.0
    assert f.get("act_zero_frac", "1") == pytest.approx(
        (torch.cat(outs["relu"]) == 0).float().mean().item()
    )
    assert f.get("act_sat_frac", "3") == pytest.approx(
        (torch.cat(outs["tanh"]).abs() > 0.99).float().mean().item()
    )
    watch.close()


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_update_ratio_is_exact_up_to_the_size_limit_and_sampled_above(opt_cls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 160), nn.GELU(), nn.Linear(160, 128))  # 15k, 20k
    opt = opt_cls(model.parameters(), lr=0.01)
    probe, buf = param_probe(model, sample=256)
    before, host = probed_step(model, opt, probe, buf, torch.randn(32, 96))
    for i, (p, p0) in enumerate(zip(model.parameters(), before, strict=True)):
        exact = (p.detach() - p0).pow(2).sum().item()
        got = host.column(probe.group, "update_sumsq")[i]
        if p.numel() <= EXACT_UPDATE_NUMEL:
            assert probe.sampled[i] == p.numel()
            assert got == pytest.approx(exact, rel=1e-5), i
        else:  # sampled: 256 coordinates of the 20480
            assert probe.sampled[i] == 256 and p.numel() > EXACT_UPDATE_NUMEL
    assert probe.sampled[0] == 96 * 160  # old code: sampled above 1024 elements


def test_nothing_is_imported_on_the_training_thread_after_setup(tmp_path):
    # lazy imports in the first logging step (the remedies, Pillow for the first heatmap) were
    # most of its stall (~40 ms): they happen when the Watch is created
    import subprocess
    import textwrap

    code = textwrap.dedent(
        f"""
        import sys
        import torch
        from torch import nn
        from initwatch.watch import Watch
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        watch = Watch(model, logdir={str(tmp_path)!r}, every=1, on_alert=lambda a: None)
        watch._sink.heatmap_every = 1
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        before = set(sys.modules)
        for step in range(4):
            with watch.step(step, opt) as scope:
                scope.loss = model(torch.randn(8, 4)).pow(2).mean() * 1e6  # alerts: remedies
                scope.loss.backward()
                opt.step()
                opt.zero_grad()
        watch.close()
        new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("initwatch", "PIL"))
        print(len(watch.alerts) > 0, new)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True []", out.stdout + out.stderr


def test_attention_probes_batched_at_the_flush_equal_the_per_sublayer_reduction():
    from initwatch.attention import attention_rows, derive_attention

    torch.manual_seed(0)
    model = gpt2(layers=3, d=32, positions=16)
    watch = Watch(model, every=1, rules=False)
    assert len(watch._attention) == 3
    seen = {i: [] for i in range(3)}
    for i, block in enumerate(model.transformer.h):
        block.attn.c_attn.register_forward_hook(
            lambda m, a, o, i=i: seen[i].append(o[0].detach().clone())
        )
    watch.begin_step(0)
    for _ in range(2):  # micro-batches accumulate (the batch is reduced when a probe fires again)
        x = torch.randint(0, 100, (2, 16))
        model(x, labels=x).loss.backward()
    watch.end_step()
    for i in range(3):
        sums, absmax = torch.zeros(4), torch.tensor(0.0)
        for out in seen[i]:
            s, m = attention_rows(out[:, :32], out[:, 32:64], heads=4, causal=True)
            sums, absmax = sums + s, torch.maximum(absmax, m[0])
        ref = derive_attention(
            dict(zip(("rows", "onehot", "pmax", "entropy"), sums.tolist(), strict=True))
            | {"logit_absmax": absmax.item()}
        )
        for stat, value in ref.items():
            assert watch.last_frame.get(stat, f"decoder.{i}.attn") == pytest.approx(value, rel=1e-5)
    watch.close()
