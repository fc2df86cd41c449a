"""Two more pathologies: attention collapse (one-hot attention rows, measured from the q and k
projections, so also under SDPA) and an lr schedule that reaches ~0 long before max_steps."""

from __future__ import annotations

import math

import builders
import pytest
import torch
from builders import hf_dataset, lightning_trainer, loader, plain_loop
from torch import nn
from transformers import Trainer, get_linear_schedule_with_warmup

import initwatch
from initwatch import zoo
from initwatch.attention import attention_probes, derive_attention
from initwatch.context import RunContext
from initwatch.frame import Frame
from initwatch.integrations.lightning import InitWatch
from initwatch.integrations.transformers import InitWatchCallback
from initwatch.probes import Gate
from initwatch.rules import Rules
from initwatch.stats import StatBuffer

pytestmark = pytest.mark.filterwarnings("ignore")


def quiet(alert) -> None:
    """An alert policy that says nothing."""


def scale_qk(model: nn.Module, factor: float) -> nn.Module:
    """Multiply every q and k projection weight by ``factor`` (the attention logits by
    ``factor ** 2``): the state attention entropy collapse ends in."""
    anatomy = initwatch.inspect(model)
    with torch.no_grad():
        for stack in anatomy.stacks:
            for block in stack.blocks:
                for slot in block.slots:
                    if slot.role in ("q", "k"):
                        slot.weight_view(model).mul_(factor)
    return model


def kinds(alerts) -> list[str]:
    return [a.kind for a in alerts]


# ---------------------------------------------------------------------------- measurement
@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("factor", [1.0, 20.0])
def test_attention_statistics_equal_those_of_the_eager_attention_probabilities(family, factor):
    torch.manual_seed(0)
    model = scale_qk(zoo.build(family, layers=2, hidden=32, attn_implementation="eager"), factor)
    model.eval()  # the returned probabilities are the ones after dropout in training
    buf, gate = StatBuffer(), Gate()
    probes = attention_probes(model, initwatch.inspect(model), buf, gate)
    buf.allocate()
    gate.on = True
    out = model(input_ids=torch.randint(0, 96, (2, 12)), output_attentions=True)
    host = buf.read()
    assert len(probes) == len(out.attentions) == 2
    for probe, probs in zip(probes, out.attentions, strict=True):
        p = probs[0]  # heads x queries x keys of the first sequence
        keys = torch.full(p.shape[1:2], float(p.shape[-1]))
        if probe.causal:  # the probe samples the second half of a causal sequence
            p, keys = p[:, 6:], torch.arange(7, 13, dtype=torch.float)
        pmax = p.amax(-1)
        entropy = -torch.special.xlogy(p, p).sum(-1) / keys.log()
        got = derive_attention(host.row(probe.group))
        assert got["attn_pmax"] == pytest.approx(pmax.mean().item(), rel=1e-5)
        assert got["attn_entropy"] == pytest.approx(entropy.mean().item(), rel=1e-4)
        assert got["attn_onehot_frac"] == pytest.approx((pmax > 0.99).float().mean().item())
    if factor > 1:  # scaled logits make some rows one-hot: the comparison is not trivial
        assert any(derive_attention(host.row(p.group))["attn_onehot_frac"] > 0 for p in probes)


def watch_run(model, steps: int = 3, lr: float = 1e-4) -> list:
    watch = initwatch.Watch(model, every=1, on_alert=quiet, pretrained=False)  # from scratch
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)

    def loss(step: int) -> torch.Tensor:
        ids = torch.randint(0, 96, (2, 16), generator=g)
        return model(input_ids=ids, labels=ids).loss

    plain_loop(watch, opt, steps, loss)
    watch.close()
    return watch.alerts


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_one_hot_attention_rows_raise_attention_collapse_and_healthy_ones_do_not(family):
    torch.manual_seed(0)
    healthy = watch_run(zoo.build(family, layers=2, hidden=32))
    assert "attention_collapse" not in kinds(healthy)
    torch.manual_seed(0)
    collapsed = watch_run(scale_qk(zoo.build(family, layers=2, hidden=32), 300.0))
    (alert,) = [a for a in collapsed if a.kind == "attention_collapse"]
    assert alert.step == 2 and alert.value > 0.9 and alert.layer.endswith(".attn")
    assert "one-hot" in alert.message and "QK-norm" in alert.remedy


def test_hf_trainer_under_sdpa_sees_attention_collapse(tmp_path):
    def run(factor):
        torch.manual_seed(0)
        model = scale_qk(zoo.build("gpt2", layers=2, hidden=32), factor)
        assert model.config._attn_implementation == "sdpa"
        cb = InitWatchCallback(on_alert=quiet)
        t = hf_trainer(tmp_path / str(factor), model, [cb], max_steps=3, learning_rate=1e-4)
        t.train()
        return cb.alerts

    assert "attention_collapse" not in kinds(run(1.0))
    assert "attention_collapse" in kinds(run(300.0))


class Tiny(builders.Tiny):
    """:class:`builders.Tiny` (q and k inside nn.MultiheadAttention's in_proj) with q and k
    scaled by ``factor``, trained by AdamW, with ``scheduler`` stepped per step if given."""

    def __init__(self, factor: float = 1.0, scheduler=None) -> None:
        super().__init__()
        scale_qk(self.net, factor)
        self.scheduler = scheduler

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
        if self.scheduler is None:
            return opt
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": self.scheduler(opt), "interval": "step"},
        }


def pl_fit(tmp_path, module, **kw) -> InitWatch:
    cb = InitWatch(on_alert=quiet, log_every_n_steps=1)
    lightning_trainer(tmp_path, [cb], **{"max_steps": 3, **kw}).fit(module, loader(64))
    return cb


def test_lightning_sees_attention_collapse_inside_multihead_attention(tmp_path):
    torch.manual_seed(0)
    assert "attention_collapse" not in kinds(pl_fit(tmp_path, Tiny()).alerts)
    torch.manual_seed(0)
    assert "attention_collapse" in kinds(pl_fit(tmp_path, Tiny(factor=100.0)).alerts)


# ---------------------------------------------------------------------------- lr schedule
def lr_frames(lrs):
    return [Frame(s, [], {}, {"lr": lr, "skipped_step": 0.0}) for s, lr in enumerate(lrs)]


def test_lr_collapse_rule_tells_an_early_collapse_from_a_schedule_that_ends_at_max_steps():
    n = 100
    ctx = RunContext(max_steps=n)
    cosine = [1e-3 * 0.5 * (1 + math.cos(math.pi * s / n)) for s in range(n)]
    linear = [1e-3 * (n - s) / n for s in range(n)]
    warmup_then_linear = [1e-3 * min(1.0, (s + 1) / 10) * min(1.0, (n - s) / 90) for s in range(n)]
    for healthy in (cosine, linear, warmup_then_linear, [1e-3] * n):
        rules = Rules()
        assert not [a for f in lr_frames(healthy) for a in rules.update(f, ctx)]
    # a cosine sized for 10 steps (epochs) stepped every step: ~0 at step 10, then periodic
    early = [1e-3 * 0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(n)]
    rules = Rules()
    alerts = [a for f in lr_frames(early) for a in rules.update(f, ctx)]
    first = alerts[0]
    # step 9 is at 2.4% of the peak, step 10 at 0: the first frame under 1% alerts
    assert (first.kind, first.step, first.repeat) == ("lr_schedule_collapse", 10, 0)
    assert first.value == pytest.approx(early[10] / 1e-3, abs=1e-12)
    assert "stepped every optimizer step" in first.remedy
    # unknown planned length: no judgement
    rules = Rules()
    assert not [a for f in lr_frames(early) for a in rules.update(f, RunContext())]


def test_lightning_per_epoch_scheduler_stepped_every_step_is_alerted(tmp_path):
    def cosine(epochs):
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)

    # max_epochs=3 of 16 batches: 48 steps planned (estimated_stepping_batches)
    healthy = pl_fit(tmp_path, Tiny(scheduler=cosine(48)), max_steps=-1, max_epochs=3)
    assert "lr_schedule_collapse" not in kinds(healthy.alerts)
    misused = pl_fit(tmp_path, Tiny(scheduler=cosine(3)), max_steps=-1, max_epochs=3)
    alert = next(a for a in misused.alerts if a.kind == "lr_schedule_collapse")
    assert alert.step == 3 and "interval" in alert.remedy and '"epoch"' in alert.remedy


def hf_trainer(out, model, callbacks, optimizers=(None, None), **kw) -> Trainer:
    """:func:`builders.hf_trainer` over 32 sequences: 12 steps, logging every step."""
    kw = {"max_steps": 12, "logging_steps": 1, **kw}
    return builders.hf_trainer(out, model, callbacks, hf_dataset(32), optimizers, **kw)


def test_hf_schedule_sized_in_epochs_is_alerted_and_the_default_is_not(tmp_path):
    cb = InitWatchCallback(on_alert=quiet)
    hf_trainer(tmp_path / "a", zoo.build("gpt2", layers=2, hidden=32), [cb]).train()
    assert "lr_schedule_collapse" not in kinds(cb.alerts)  # linear decay to 0 at step 12
    model = zoo.build("gpt2", layers=2, hidden=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = get_linear_schedule_with_warmup(opt, 0, num_training_steps=3)  # "3 epochs"
    cb = InitWatchCallback(on_alert=quiet)
    hf_trainer(tmp_path / "b", model, [cb], optimizers=(opt, sched)).train()
    alert = next(a for a in cb.alerts if a.kind == "lr_schedule_collapse")
    assert alert.step == 4 and "num_training_steps" in alert.remedy


def test_warm_restarts_on_purpose_are_not_a_collapse(tmp_path):
    # SGDR reaches ~0 at the end of each cycle on purpose; the adapters mark such schedulers
    cb = InitWatchCallback(on_alert=quiet)
    hf_trainer(
        tmp_path / "sgdr",
        zoo.build("gpt2", layers=2, hidden=32),
        [cb],
        max_steps=6,
        lr_scheduler_type="cosine_with_restarts",
        lr_scheduler_kwargs={"num_cycles": 2},
    ).train()
    assert cb.context.extra["lr_restarts"] is True
    cb = InitWatchCallback(on_alert=quiet)
    hf_trainer(tmp_path / "cos", zoo.build("gpt2", layers=2, hidden=32), [cb], max_steps=2).train()
    assert cb.context.extra["lr_restarts"] is False
    # the rule: 4 cycles of 10 steps in a 100-step run reach ~0 at steps 9, 19, ...
    sgdr = [1e-3 * 0.5 * (1 + math.cos(math.pi * (s % 10) / 9)) for s in range(40)]
    marked = RunContext(max_steps=100, extra={"lr_restarts": True})
    rules = Rules()
    assert not [a for f in lr_frames(sgdr) for a in rules.update(f, marked)]
    rules = Rules()  # unmarked, the same schedule is a collapse
    first = next(a for f in lr_frames(sgdr) for a in rules.update(f, RunContext(max_steps=100)))
    assert (first.kind, first.step) == ("lr_schedule_collapse", 9)
