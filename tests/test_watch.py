"""Watch end to end on tiny models: names, values, accumulation, cost, safety, state."""

from __future__ import annotations

import copy
import gc
import json
import math
import warnings

import pytest
import torch
from builders import gpt2_without_dropout, manual_step
from torch import nn

import initwatch
from initwatch import stats
from initwatch import watch as watch_mod
from initwatch.errors import AlertError
from initwatch.watch import Watch


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
    )


def encoder(layers: int = 2) -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=nn.GELU())
    return nn.TransformerEncoder(layer, num_layers=layers)


def train(model, watch, steps, make_loss, opt=None, lr=0.01):
    opt = opt or torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        manual_step(watch, opt, step, lambda: make_loss(model))
    return opt


def mlp_loss(model):
    return model(torch.randn(8, 6)).pow(2).mean()


def enc_loss(model):
    return model(torch.randn(5, 3, 16)).pow(2).mean()


def capture(module):
    """Record the module's output and dL/d(output) of its last call."""
    seen = {}

    def hook(m, args, out):
        out = out[0] if isinstance(out, tuple) else out
        seen["out"] = out.detach().clone()
        if out.requires_grad:
            out.register_hook(lambda g: seen.__setitem__("grad", g.detach().clone()))

    module.register_forward_hook(hook)
    return seen


def rms(t: torch.Tensor) -> float:
    return t.double().pow(2).mean().sqrt().item()


def test_encoder_names_and_values_equal_independent_computation():
    model = encoder()
    seen = capture(model.layers[1])
    seen_attn = capture(model.layers[0].self_attn)
    watch = Watch(model, every=1, rules=False)
    train(model, watch, 1, enc_loss)
    frame = watch.last_frame
    names = [i.name for i in frame.layers if i.kind != "param"]
    assert names == [
        "encoder.0.attn",
        "encoder.0.ffn.act",
        "encoder.0.ffn",
        "encoder.0",
        "encoder.1.attn",
        "encoder.1.ffn.act",
        "encoder.1.ffn",
        "encoder.1",
    ]
    out, grad = seen["out"], seen["grad"]
    assert frame.get("act_rms", "encoder.1") == pytest.approx(rms(out), rel=1e-5)
    assert frame.get("act_mean", "encoder.1") == pytest.approx(out.double().mean().item(), abs=1e-6)
    assert frame.get("act_std", "encoder.1") == pytest.approx(
        out.double().std(unbiased=False).item(), rel=1e-4
    )
    assert frame.get("act_absmax", "encoder.1") == pytest.approx(out.abs().max().item())
    assert frame.get("out_grad_rms", "encoder.1") == pytest.approx(rms(grad), rel=1e-5)
    assert frame.get("act_rms", "encoder.0.attn") == pytest.approx(rms(seen_attn["out"]), rel=1e-5)
    assert "out_grad_rms" not in frame.values.get("encoder.0.attn", {})
    info = {i.name: i for i in frame.layers}
    assert (info["encoder.1"].kind, info["encoder.1"].depth, info["encoder.1"].block) == (
        "block",
        1,
        1,
    )
    assert info["encoder.0.ffn.act"].kind == "act"
    watch.close()


def test_gpt2_roles_context_globals_and_update_ratio():
    model = gpt2_without_dropout()
    watch = Watch(model, every=1, rules=False)
    assert watch.context.family == "gpt2" and watch.context.layout == "pre"
    assert watch.context.depth == {"decoder": 2}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 100, (2, 8))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    watch.begin_step(0)
    loss = model(x, labels=x).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    watch.before_optimizer_step(opt)
    opt.step()
    watch.end_step(loss=loss)
    f = watch.last_frame
    assert watch.context.optimizer == "AdamW" and watch.context.lr == 1e-3
    assert f.globals["lr"] == 1e-3 and f.globals["loss"] == pytest.approx(loss.item())
    total = math.sqrt(sum(g.double().pow(2).sum().item() for g in grads.values()))
    assert f.globals["grad_norm_global"] == pytest.approx(total, rel=1e-5)
    roles = {i.name: i.role for i in f.layers if i.kind == "param"}
    assert roles["transformer.h.0.attn.c_attn.weight"] == "q+k+v"
    assert roles["transformer.h.1.mlp.c_proj.weight"] == "ffn_out"
    assert roles["transformer.ln_f.weight"] == "norm"
    assert roles["transformer.wte.weight"] == "embedding"
    name = "transformer.h.1.attn.c_proj.weight"  # 1024 elements: measured exactly
    p = dict(model.named_parameters())[name]
    exact = (p.detach() - before[name]).norm().item() / before[name].norm().item()
    assert f.get("update_ratio", name) == pytest.approx(exact, rel=1e-4)
    assert f.get("grad_norm", name) == pytest.approx(grads[name].norm().item(), rel=1e-5)
    names = [i.name for i in f.layers if i.kind in ("block", "attn", "ffn", "act")]
    assert names[:4] == ["decoder.0.attn", "decoder.0.ffn.act", "decoder.0.ffn", "decoder.0"]
    watch.close()


def test_key_bias_frozen_and_unused_parameters_are_marked():
    from initwatch import zoo

    model = zoo.build("bert", layers=2)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    watch = Watch(model, every=1, rules=False)
    x = torch.randint(0, 96, (2, 6))

    def loss_fn(m):  # the MLM head is not used: its parameters get no gradient
        return m.bert(x).last_hidden_state.pow(2).mean()

    train(model, watch, 1, loss_fn)
    info = {i.name: i for i in watch.last_frame.layers if i.kind == "param"}
    key = info["bert.encoder.layer.0.attention.self.key.bias"]
    assert key.zero_by_construction and key.role == "k"
    assert not info["bert.encoder.layer.0.attention.self.query.bias"].zero_by_construction
    frozen = info["bert.embeddings.word_embeddings.weight"]
    assert not frozen.trainable
    assert frozen.name not in watch.last_frame.values["grad_norm"]
    pooler = info["cls.predictions.transform.dense.weight"]
    assert pooler.zero_by_construction and pooler.trainable
    assert pooler.name not in watch.last_frame.values["grad_norm"]
    assert pooler.name not in watch.last_frame.values["update_ratio"]


def test_micro_batches_accumulate_like_one_concatenated_batch():
    torch.manual_seed(0)
    a = mlp()
    b = copy.deepcopy(a)
    xs = [torch.randn(4, 6) for _ in range(3)]
    wa, wb = Watch(a, every=1, rules=False), Watch(b, every=1, rules=False)
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    wa.begin_step(0)
    for x in xs:  # accumulation: three forward/backward passes in one optimizer step
        a(x).pow(2).sum().backward()
    wa.before_optimizer_step(opt_a)
    opt_a.step()
    wa.end_step()
    wb.begin_step(0)
    b(torch.cat(xs)).pow(2).sum().backward()
    wb.before_optimizer_step(opt_b)
    opt_b.step()
    wb.end_step()
    fa, fb = wa.last_frame, wb.last_frame
    assert set(fa.values) == set(fb.values)
    for stat, table in fb.values.items():
        for layer, value in table.items():
            assert fa.get(stat, layer) == pytest.approx(value, rel=2e-5, abs=1e-6), (stat, layer)
    assert fa.get("act_zero_frac", "3") > 0  # the ReLU


def test_one_host_copy_per_logging_step_and_none_on_other_steps(monkeypatch):
    model = mlp()
    watch = Watch(model, every=3, rules=False, dense_start=0, max_interval=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    counts = {"to_host": 0, "item": 0, "tolist": 0, "cpu": 0, "numpy": 0}
    real_to_host = stats.to_host

    def to_host(t):
        counts["to_host"] += 1
        return real_to_host(t)

    monkeypatch.setattr(stats, "to_host", to_host)
    for name in ("item", "tolist", "cpu", "numpy"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            counts[_name] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    per_step = []
    for step in range(7):
        before = dict(counts)
        # the loss, a tensor, stays on the device until the one copy
        manual_step(watch, opt, step, lambda: mlp_loss(model))
        per_step.append({k: counts[k] - before[k] for k in counts})
    for step, c in enumerate(per_step):
        logging = step % 3 == 0
        assert c["to_host"] == (1 if logging else 0), (step, c)
        assert c["tolist"] == c["to_host"] and c["item"] == 0 and c["numpy"] == 0, (step, c)
    assert [f.step for f in watch.frames] == [0, 3, 6]


def test_no_memory_growth_and_bounded_frames():
    model = mlp()
    watch = Watch(model, every=1, rules=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def live_tensors():
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    train(model, watch, 5, mlp_loss, opt)
    first = live_tensors()
    train(model, watch, 20, mlp_loss, opt)
    assert live_tensors() == first
    assert watch.frames.maxlen == watch_mod.FRAME_HISTORY
    assert all(isinstance(v, float) for t in watch.last_frame.values.values() for v in t.values())


def test_hooks_are_removed_at_close_and_close_is_idempotent():
    model = encoder()

    def hooks():
        return sum(len(m._forward_hooks) for m in model.modules())

    before = hooks()
    watch = Watch(model, every=1, rules=False)
    # 2 blocks x (attn, ffn.act, ffn, block) + the q/k hook of each self-attention (one
    # nn.MultiheadAttention holds both)
    assert hooks() == before + 10
    watch.close()
    watch.close()
    assert hooks() == before
    assert watch.begin_step(0) is False


def test_only_every_nth_step_is_measured():
    model = mlp()
    watch = Watch(model, every=5, rules=False, dense_start=0, max_interval=None)
    train(model, watch, 11, mlp_loss)
    assert [f.step for f in watch.frames] == [0, 5, 10]
    assert watch.begin_step(11) is False and watch.end_step() == []


def test_injected_nan_is_data_not_an_exception():
    model = encoder()
    watch = Watch(model, every=1)
    with torch.no_grad():
        model.layers[1].linear1.weight[0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(model, watch, 2, enc_loss)
    f = watch.frames[0]  # after the first update everything is NaN
    assert f.get("act_nonfinite", "encoder.1.ffn.act") > 0
    assert f.get("act_nonfinite", "encoder.0") == 0
    assert math.isnan(f.globals["loss"])
    assert f.get("grad_nonfinite", "layers.1.linear1.weight") == 1.0
    assert any(a.kind == "nonfinite" for a in watch.alerts)


def test_on_alert_raise_propagates_alert_error():
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    watch = Watch(model, every=1, on_alert="raise")
    with pytest.raises(AlertError) as err:
        train(model, watch, 1, mlp_loss)
    assert err.value.alert.kind == "nonfinite"
    assert watch.alerts and watch.alerts[0].kind == "nonfinite"


def test_an_internal_error_becomes_a_warning_and_training_continues(monkeypatch):
    model = mlp()
    watch = Watch(model, every=1, rules=False)

    def boom():
        raise RuntimeError("kaputt")

    monkeypatch.setattr(watch._params, "read_grads", boom)
    with pytest.warns(RuntimeWarning, match="initwatch: before_optimizer_step failed.*kaputt"):
        train(model, watch, 1, mlp_loss)
    monkeypatch.undo()
    train(model, watch, 2, mlp_loss)
    assert watch.last_frame.step == 1 and "grad_norm" in watch.last_frame.values


def test_skipped_step_has_no_update_ratio():
    model = mlp()
    watch = Watch(model, every=1, rules=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch.begin_step(0)
    mlp_loss(model).backward()
    watch.before_optimizer_step(opt)
    watch.end_step(skipped=True)  # as if a GradScaler found inf and skipped opt.step()
    f = watch.last_frame
    assert f.globals["skipped_step"] == 1.0
    assert "update_ratio" not in f.values and "grad_norm" in f.values


def test_step_context_manager():
    model = mlp()
    watch = Watch(model, every=1, rules=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch.step(0, opt) as scope:
        scope.loss = mlp_loss(model)
        scope.loss.backward()
        opt.step()
    assert scope.alerts == []
    f = watch.last_frame
    assert f.globals["skipped_step"] == 0.0 and "update_ratio" in f.values
    assert f.globals["loss"] == pytest.approx(scope.loss.item())
    with watch.step(1, opt) as scope:  # optimizer.step() never ran: a skipped step
        mlp_loss(model).backward()
    assert watch.last_frame.globals["skipped_step"] == 1.0
    with pytest.raises(ValueError, match="user error"), watch.step(2, opt):
        raise ValueError("user error")
    assert not watch.is_logging
    # the optimizer hooks were registered once (not per step), and close() removes them
    assert len(opt._optimizer_step_pre_hooks) == len(opt._optimizer_step_post_hooks) == 1
    opt.step()  # outside a watch.step() block the hooks do nothing
    assert not watch.is_logging and len(watch.frames) == 2  # step 2 raised: no frame
    watch.close()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_state_dict_is_plain_data_and_round_trips():
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    watch = Watch(model, every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(model, watch, 2, mlp_loss)
    state = watch.state_dict()
    assert json.loads(json.dumps(state, allow_nan=True))["step"] == 1
    other = Watch(mlp(), every=1)
    other.load_state_dict(state)
    assert [a.to_dict() for a in other.alerts] == [a.to_dict() for a in watch.alerts]
    assert other.step_index == 1


def test_layer_selection_presets_and_patterns():
    model = encoder()
    kinds = {p.target.info.kind for p in Watch(model, layers="blocks")._probes.probes}
    assert kinds == {"block"}
    linear = Watch(model, layers="linear")._probes.probes
    assert "encoder.0.linear1" in [p.target.info.name for p in linear]
    picked = Watch(model, layers=["encoder.1", "encoder.1.*attn", "layers.0.norm1"])
    names = [p.target.info.name for p in picked._probes.probes]
    assert names == ["encoder.0.norm1", "encoder.1.attn", "encoder.1"]
    everything = Watch(model, layers=["encoder.1*"])._probes.probes
    assert len(everything) == len(list(model.layers[1].modules()))  # every module of block 1
    with pytest.raises(ValueError, match=r"'decoder\.\*' matches no module.*layers=\["):
        Watch(model, layers=["decoder.*"])
    with pytest.raises(ValueError, match="every"):
        Watch(model, every=0)


def test_models_the_anatomy_cannot_read_are_watched_by_path():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    )
    watch = Watch(model, every=1, rules=False)
    assert watch.anatomy is None
    train(model, watch, 1, lambda m: m(torch.randn(3, 1, 8, 8)).pow(2).mean())
    f = watch.last_frame
    kinds = [(i.name, i.kind) for i in f.layers if i.kind != "param"]
    assert kinds == [("0", "module"), ("1", "module"), ("2", "act"), ("4", "module")]
    assert f.get("act_zero_frac", "2") > 0.2
    assert f.get("out_grad_rms", "0") > 0


def test_logdir_writer_and_rank_zero_only(tmp_path, monkeypatch):
    model = mlp()
    watch = Watch(model, every=1, rules=False, logdir=str(tmp_path / "own"))
    train(model, watch, 2, mlp_loss)
    watch.close()
    assert list((tmp_path / "own").glob("events.out.tfevents.*"))
    monkeypatch.setattr(watch_mod, "_rank", lambda: 1)
    other = Watch(mlp(), every=1, rules=False, logdir=str(tmp_path / "rank1"))
    train(other.model, other, 2, mlp_loss)
    other.close()
    assert not (tmp_path / "rank1").exists()
    assert other.last_frame is not None  # every rank still measures and judges


def test_public_name():
    assert initwatch.Watch is Watch


def test_context_knows_the_scheme_and_a_fine_tune_from_the_model(tmp_path, trained_state):
    from transformers import GPT2LMHeadModel

    from initwatch import zoo

    model = zoo.build("gpt2")
    initwatch.reinit(model, "rezero")
    watch = Watch(model, every=1, rules=False)
    assert watch.context.scheme == "rezero" and not watch.context.pretrained
    watch.close()
    trained = zoo.build("gpt2")
    trained.load_state_dict(trained_state("gpt2"))
    trained.save_pretrained(tmp_path)
    tuned = Watch(GPT2LMHeadModel.from_pretrained(tmp_path), every=1, rules=False)
    assert tuned.context.pretrained and tuned.context.scheme is None
    assert tuned.context.extra["pretrained_source"] == "weights"
    tuned.close()


def _warming_run(with_scheduler: bool) -> Watch:
    """Three Adam steps of a 200-step linear warmup towards a destructive peak lr 0.5."""
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 201))
    watch = Watch(model, every=1, on_alert="ignore")
    for step in range(3):
        with watch.step(step, opt, scheduler=sched if with_scheduler else None) as scope:
            scope.loss = model(torch.randn(8, 6)).pow(2).mean()
            scope.loss.backward()
            opt.step()
        opt.zero_grad()
        sched.step()
    watch.close()
    return watch


def test_plain_loop_gets_the_warmup_and_peak_lr_from_its_scheduler():
    watch = _warming_run(with_scheduler=True)
    ctx = watch.context
    assert ctx.base_lr == pytest.approx(0.5) and ctx.warmup_steps == 200 and ctx.in_warmup
    assert ctx.lr == pytest.approx(0.5 * 3 / 201)  # the lr of the last measured step
    highs = [a for a in watch.alerts if a.kind == "update_ratio_high"]
    # Adam's first update is lr per element: ratio lr / rms(W) ~ 0.0025 / 0.14 now, but at the
    # peak 0.5 / 0.14 ~ 3.5 >> 0.1: judged at the peak from step 0
    assert highs and highs[0].step == 0 and "peak lr 0.5" in highs[0].message
    # without the scheduler the same loop is judged at today's lr: no alert in these 3 steps
    blind = _warming_run(with_scheduler=False)
    assert blind.context.base_lr is None and not blind.context.in_warmup
    assert not [a for a in blind.alerts if a.kind == "update_ratio_high"]


@pytest.mark.filterwarnings("ignore:initwatch. no forward hook ran")
def test_micro_batch_losses_are_averaged_or_summed():
    # (no forward: the losses alone)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for reduction, expected in (("mean", 2.0), ("sum", 4.0)):
        watch = Watch(model, every=1, rules=False, micro_batch_loss=reduction)
        watch.begin_step(0)
        for loss in (1.0, 3.0):
            watch.add_loss(torch.tensor(loss))
        watch.before_optimizer_step(opt)
        watch.end_step()
        assert watch.last_frame.globals["loss"] == pytest.approx(expected)
        watch.close()
    with pytest.raises(ValueError, match="micro_batch_loss"):
        Watch(model, micro_batch_loss="max")


def test_a_preclip_norm_that_did_not_clip_leaves_one_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = initwatch.Watch(model, every=1, rules=False, dense_start=0, max_interval=None)
    for step, factor in enumerate((1 + 3e-7, 2.0)):  # rounding only; then a real clip
        watch.begin_step(step)
        model(torch.randn(4, 8)).pow(2).mean().backward()
        norm = float(
            torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        )
        watch.before_optimizer_step(opt, grad_norm_preclip=norm * factor)
        opt.step()
        opt.zero_grad()
        watch.end_step()
    same, clipped = (f.globals for f in watch.frames)
    assert same["grad_norm_global"] == same["grad_norm_clipped"]  # not two values for one norm
    assert clipped["grad_norm_global"] == pytest.approx(2 * clipped["grad_norm_clipped"], rel=1e-5)
    watch.close()
