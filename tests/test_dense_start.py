"""The start of every run measured densely, whatever the framework's cadence (issue 8 item 2),
and the shocks of issue 8 alerted within 10 optimizer steps at the frameworks' default cadence
while their healthy twins stay silent."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from builders import HFSpy as Spy
from builders import Tiny, gpt2, loader, scalars
from builders import hf_trainer as make
from builders import lightning_trainer as trainer
from torch import nn
from transformers import GPT2LMHeadModel

from initwatch import Watch, zoo
from initwatch.integrations.lightning import InitWatch
from initwatch.integrations.transformers import InitWatchCallback
from initwatch.schedule import peak_lr_of, warmup_steps_of
from initwatch.watch import DENSE_START, MAX_INTERVAL

pytestmark = pytest.mark.filterwarnings("ignore")
QUIET = lambda alert: None  # noqa: E731


def first_alert(alerts) -> int | None:
    return min((a.step for a in alerts), default=None)


# ---- the Watch: dense window, lr jump, own interval ------------------------------------------


def run_watch(watch: Watch, model: nn.Module, opt, lrs: list[float]) -> list[int]:
    measured = []
    for step, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        if watch.begin_step(step):
            measured.append(step)
        model(torch.randn(4, 8)).pow(2).mean().backward()
        watch.before_optimizer_step(opt)
        opt.step()
        opt.zero_grad()
        watch.end_step()
    return measured


def test_watch_dense_start_lr_jump_and_max_interval() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    watch = Watch(model, every=50, rules=False, dense_start=3, max_interval=10)
    lrs = [1e-3] * 20 + [1e-2] * 20 + [1.5e-2] * 10  # a 10x jump at step 20, a 1.5x one at 40
    measured = run_watch(watch, model, opt, lrs)
    # 0-2 dense, 12 (10 after 2), 20-22 dense again after the jump, 32, 42 (1.5x: no jump)
    assert measured == [0, 1, 2, 12, 20, 21, 22, 32, 42]
    # a plain loop gets the adapters' dense start by default: every step up to 19, then at
    # least every MAX_INTERVAL steps (an early shock of a fine-tune is seen in its step)
    plain = Watch(model, every=50, rules=False)
    assert (plain.dense_start, plain.max_interval) == (DENSE_START, MAX_INTERVAL) == (20, 10)
    assert run_watch(plain, model, opt, [1e-3] * 60) == [*range(20), 29, 39, 49, 50]
    exact = Watch(model, every=50, rules=False, dense_start=0, max_interval=None)
    assert run_watch(exact, model, opt, [1e-3] * 60) == [0, 50]


def test_peak_and_warmup_of_a_schedule_that_is_still_rising_when_the_run_ends() -> None:
    opt = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 21))
    assert warmup_steps_of(sched, max_steps=100) == 20 and peak_lr_of(sched, opt, 100) == 0.1
    # a 20-step warmup in an 8-step run: warmup the whole run, peak = the highest lr it reaches
    assert warmup_steps_of(sched, max_steps=8) == 8
    assert peak_lr_of(sched, opt, 8) == pytest.approx(0.1 * 9 / 21)
    assert warmup_steps_of(sched) == 20  # max_steps unknown: probed up to 100k steps


def test_bad_dense_settings_are_refused() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="dense_start"):
        Watch(model, dense_start=-1)
    with pytest.raises(ValueError, match="max_interval"):
        Watch(model, max_interval=0)
    with pytest.raises(ValueError, match="max_interval"):
        InitWatchCallback(max_interval=0)
    with pytest.raises(ValueError, match="dense_start"):
        InitWatch(dense_start=-2)


# ---- Hugging Face --------------------------------------------------------------------------


def pretrained(tmp_path) -> GPT2LMHeadModel:
    """Trained stand-in weights (zoo.pretrain), saved and loaded back as a checkpoint is."""
    zoo.pretrain("gpt2", gpt2(), steps=60).save_pretrained(tmp_path / "gpt2")
    return GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")


def test_hf_logging_steps_500_still_measures_the_start_and_its_own_interval(tmp_path):
    cb = InitWatchCallback(None, on_alert=QUIET)
    spy = Spy(cb)
    make(tmp_path, gpt2(), [cb, spy], max_steps=45, logging_steps=500, learning_rate=1e-4).train()
    steps = [f.step for f in spy.frames]
    dense = list(range(1, DENSE_START + 1))
    assert steps == dense + list(range(DENSE_START + MAX_INTERVAL, 46, MAX_INTERVAL))


def test_hf_measured_steps_include_the_trainers_own(tmp_path):
    cb = InitWatchCallback(None, on_alert=QUIET)
    make(tmp_path, gpt2(), [cb], max_steps=36, logging_steps=12, report_to="tensorboard").train()
    (run,) = list((tmp_path / "out" / "runs").iterdir())
    tags = scalars(run)
    ours = {s for s, _ in tags["initwatch/global/grad_norm_global"]}
    theirs = {s for s, _ in tags["train/loss"]}
    assert theirs == {12, 24, 36} and theirs <= ours, "the same step axis where the Trainer logs"


def test_hf_fine_tune_at_lr_1_with_logging_steps_500_alerts_in_its_first_steps(tmp_path):
    # issue 8: logging_steps=500 and lr 1.0 on a fine-tune ended 1000 steps without an alert
    cb = InitWatchCallback(None, on_alert=QUIET)
    model = pretrained(tmp_path)
    make(tmp_path, model, [cb], max_steps=12, logging_steps=500, learning_rate=1.0).train()
    assert cb.context.pretrained
    assert first_alert(cb.alerts) is not None and first_alert(cb.alerts) <= 10


def test_hf_gpt2_lr_1_logging_steps_10_alerts_within_10_steps(tmp_path):
    cb = InitWatchCallback(None, on_alert=QUIET)
    make(tmp_path, gpt2(), [cb], max_steps=12, logging_steps=10, learning_rate=1.0).train()
    assert first_alert(cb.alerts) is not None and first_alert(cb.alerts) <= 10


@pytest.mark.parametrize("warmup", [0, 20])
def test_hf_destructive_peak_lr_is_flagged_early_with_or_without_warmup(tmp_path, warmup):
    # issue 8: peak lr 0.1 with 20 warmup steps alerted at step 23, against 3 without warmup
    cb = InitWatchCallback(None, on_alert=QUIET)
    make(tmp_path, gpt2(), [cb], max_steps=24, learning_rate=0.1, warmup_steps=warmup).train()
    highs = [a for a in cb.alerts if a.kind == "update_ratio_high"]
    assert highs and highs[0].step <= 5, [str(a) for a in cb.alerts]
    if warmup:
        assert "peak lr 0.1" in highs[0].message


@pytest.mark.parametrize(("lr", "warmup"), [(2e-5, 0), (2e-5, 5), (3e-4, 0), (3e-4, 5)])
def test_hf_healthy_fine_tunes_stay_silent(tmp_path, lr, warmup):
    cb = InitWatchCallback(None, on_alert=QUIET)
    make(
        tmp_path, pretrained(tmp_path), [cb], max_steps=25, learning_rate=lr, warmup_steps=warmup
    ).train()
    assert cb.context.pretrained
    assert cb.alerts == [], [str(a) for a in cb.alerts]


# ---- Lightning -------------------------------------------------------------------------------


def test_lightning_adam_lr_10_at_the_default_cadence_alerts_within_10_steps(tmp_path):
    # issue 8: first alert at step 149 at the default log_every_n_steps=50
    cb = InitWatch(None, on_alert=QUIET)
    trainer(tmp_path, [cb], max_steps=12).fit(Tiny(lr=10.0), loader(64))
    assert first_alert(cb.alerts) is not None and first_alert(cb.alerts) <= 10


class Warm(Tiny):
    def __init__(self, lr: float, warmup: int) -> None:
        super().__init__(lr=lr)
        self.warmup = warmup

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr)
        w = self.warmup
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (w + 1)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@pytest.mark.parametrize(("lr", "warmup"), [(1e-4, 0), (1e-4, 5), (1e-3, 0), (1e-3, 5)])
def test_lightning_healthy_twins_stay_silent(tmp_path, lr, warmup):
    cb = InitWatch(None, on_alert=QUIET)
    trainer(tmp_path, [cb], max_steps=25).fit(Warm(lr, warmup), loader(128))
    assert cb.alerts == [], [str(a) for a in cb.alerts]


def test_lightning_warmup_towards_a_destructive_peak_is_judged_at_the_peak(tmp_path):
    cb = InitWatch(None, on_alert=QUIET)
    trainer(tmp_path, [cb], max_steps=8).fit(Warm(10.0, 5), loader(64))
    assert cb.context.base_lr == pytest.approx(10.0) and cb.context.warmup_steps == 5
    highs = [a for a in cb.alerts if a.kind == "update_ratio_high"]
    assert highs and highs[0].step <= 3 and "peak lr 10" in highs[0].message


def test_lightning_clipping_is_known_and_never_suggested(tmp_path):
    cb = InitWatch(None, on_alert=QUIET)
    t = trainer(tmp_path, [cb], max_steps=6, gradient_clip_val=0.5)
    t.fit(Tiny(lr=10.0), loader(64))
    assert cb.context.grad_clip == 0.5 and cb.context.grad_clip_algorithm == "norm"
    assert cb.alerts
    for a in cb.alerts:
        assert "gradient_clip_val" not in a.remedy and "clip_grad_norm_" not in a.remedy


class GAN(L.LightningModule):
    """Two optimizers under manual optimization: global_step moves by 2 per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.g = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))
        self.d = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        fake = self.g(torch.randn(x.shape[0], 4))
        real = x[:, 0, :4]
        d_loss = F.softplus(self.d(fake.detach())).mean() + F.softplus(-self.d(real)).mean()
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = F.softplus(-self.d(fake)).mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log("g_loss", g_loss)

    def configure_optimizers(self):
        return (
            torch.optim.Adam(self.g.parameters(), lr=1e-3),
            torch.optim.Adam(self.d.parameters(), lr=1e-3),
        )


def test_lightning_two_optimizers_are_measured_per_batch_that_stepped(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    tb = TensorBoardLogger(tmp_path / "tb")
    cb = InitWatch(None, on_alert=QUIET, dense_start=0, max_interval=None)
    spy_frames = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            frame = cb.watch.last_frame if cb.watch else None
            if frame is not None and (not spy_frames or spy_frames[-1] is not frame):
                spy_frames.append(frame)

    t = trainer(tmp_path, [cb, Record()], max_steps=16, log_every_n_steps=2, logger=tb)
    t.fit(GAN(), loader(64))
    assert t.global_step == 16  # 8 batches, 2 optimizer steps each
    # step 0 and the batches Lightning logs at ((b + 1) % 2 == 0), numbered like its scalars
    assert [f.step for f in spy_frames] == [0, 1, 3, 5, 7]
    for f in spy_frames:
        ratios = f.values["update_ratio"]
        for net in ("g", "d"):  # both optimizers' updates, measured over the batch
            mine = [v for k, v in ratios.items() if k.split(".")[0] == net]
            assert mine and all(v > 0 for v in mine), (net, ratios)
    from builders import scalar_steps as tb_scalars

    tags = tb_scalars(tb.log_dir)
    assert set(tags["g_loss"]) <= set(tags["initwatch/global/grad_norm_global"])


def test_hf_clipped_shock_is_seen_through_the_clipping(tmp_path):
    # issue 8: under the default max_grad_norm=1.0 the rules saw the clipped norm (always 1.0)
    cb = InitWatchCallback(None, on_alert=QUIET)
    spy = Spy(cb)
    make(tmp_path, gpt2(), [cb, spy], max_steps=12, learning_rate=1.0, max_grad_norm=1.0).train()
    assert cb.context.grad_clip == 1.0
    assert max(f.globals["grad_norm_global"] for f in spy.frames) > 1.0, "pre-clip norms"
    assert all(f.globals["grad_norm_clipped"] <= 1.0 + 1e-4 for f in spy.frames)
    assert first_alert(cb.alerts) is not None and first_alert(cb.alerts) <= 10
    for a in cb.alerts:  # the run clips already: never advised to clip
        assert "max_grad_norm" not in a.remedy and "clip_grad_norm_" not in a.remedy, str(a)


def test_hf_resumed_train_is_measured_densely_from_where_it_resumes(tmp_path):
    cb = InitWatchCallback(None, on_alert=QUIET)
    kw = dict(max_steps=4, logging_steps=500, save_strategy="steps", save_steps=4)
    make(tmp_path, gpt2(), [cb], **kw).train()
    cb2 = InitWatchCallback(None, on_alert=QUIET, dense_start=3)
    spy = Spy(cb2)
    trainer = make(tmp_path, gpt2(), [cb2, spy], max_steps=12, logging_steps=500)
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))
    # dense again at the resumed start (5, 6, 7), then every max_interval=10 steps: none by 12
    assert [f.step for f in spy.frames] == [5, 6, 7]


def test_lightning_measured_steps_include_its_own_at_the_default_settings(tmp_path):
    from builders import scalar_steps as tb_scalars
    from lightning.pytorch.loggers import TensorBoardLogger

    tb = TensorBoardLogger(tmp_path / "tb")
    cb = InitWatch(None, on_alert=QUIET)
    trainer(tmp_path, [cb], max_steps=40, log_every_n_steps=15, logger=tb).fit(Tiny(), loader(256))
    tags = tb_scalars(tb.log_dir)
    ours = set(tags["initwatch/global/grad_norm_global"])
    assert set(tags["train_loss"]) == {14, 29} and set(tags["train_loss"]) <= ours
    assert ours == set(range(20)) | {29, 39}, sorted(ours)


class Jump(Tiny):
    """AdamW at lr 1e-4 whose schedule jumps to lr 10 at step 30 (a mid-run shock)."""

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < 30 else 1e5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_lightning_lr_jump_mid_run_is_measured_and_alerted_at_once(tmp_path):
    cb = InitWatch(None, on_alert=QUIET)
    spy_steps = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            frame = cb.watch.last_frame
            if frame is not None and (not spy_steps or spy_steps[-1] != frame.step):
                spy_steps.append(frame.step)

    trainer(tmp_path, [cb, Record()], max_steps=34).fit(Jump(), loader(256))
    # the dense start, the 10-step cap (29), then every step again after the jump at 30
    assert spy_steps == list(range(20)) + [29, 30, 31, 32, 33]
    assert first_alert(cb.alerts) == 30, [str(a) for a in cb.alerts]
