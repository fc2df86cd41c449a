"""The Lightning adapter: scheme at setup("fit") once, steps, loggers, state, resume, precision."""

from __future__ import annotations

import gc
import math
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from builders import HIDDEN, QUIET_LIGHTNING, Tiny, loader
from builders import LightningSpy as Spy
from builders import lightning_trainer as trainer
from builders import scalar_steps as scalars
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

import initwatch
from initwatch import zoo
from initwatch.errors import InitWatchError, PretrainedWeightsError
from initwatch.integrations import UnsupportedStrategyError
from initwatch.integrations import lightning as iw_lightning
from initwatch.integrations.lightning import InitWatch, InitWatchStoppingReason, SchemeOutcome

pytestmark = pytest.mark.filterwarnings("ignore")


def hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


# ---- construction ------------------------------------------------------------------------


def test_constructor_validates_and_state_key_is_per_scheme():
    with pytest.raises(ValueError, match="unknown scheme"):
        InitWatch(scheme="fixup-ish")
    with pytest.raises(ValueError, match="on_alert"):
        InitWatch(on_alert="explode")
    with pytest.raises(ValueError, match="log_every_n_steps"):
        InitWatch(log_every_n_steps=0)
    assert InitWatch("T-Fixup").scheme == "t-fixup"
    assert InitWatch("deepnet").state_key == InitWatch("deepnet").state_key
    assert InitWatch("deepnet").state_key != InitWatch("rezero").state_key
    # a resume with another cadence finds the alert history (issue 15)
    assert InitWatch(log_every_n_steps=5).state_key == InitWatch(log_every_n_steps=10).state_key


# ---- setup: once, fit only; hooks removed ------------------------------------------------


def test_scheme_once_at_fit_setup_new_params_trained_and_hooks_removed(tmp_path):
    module, data = Tiny(), loader()
    cb = InitWatch("rezero", log_every_n_steps=2)
    before_hooks = hook_count(module)
    t1 = trainer(tmp_path, [cb])
    t1.fit(module, data)
    assert cb.scheme_outcome is SchemeOutcome.APPLIED and cb.report.scheme == "rezero"
    gates = {n: p for n, p in module.named_parameters() if "rezero_alpha" in n}
    assert gates, "ReZero gates were registered"
    optimized = {id(p) for g in t1.optimizers[0].param_groups for p in g["params"]}
    assert all(id(p) in optimized for p in gates.values()), "new parameters are in the optimizer"
    assert all(float(p) != 0.0 for p in gates.values()), "and they were trained"
    scheme_hooks = hook_count(module)
    assert scheme_hooks > before_hooks  # the ReZero gates are forward hooks
    assert cb.watch is None  # closed and released at teardown
    assert cb.last_frame is not None and cb.last_frame.step == t1.global_step - 1  # its frames stay
    assert [f.step for f in cb.frames] == sorted({f.step for f in cb.frames})
    trained = {k: v.clone() for k, v in module.state_dict().items()}

    t1.validate(module, loader(8))  # setup("validate"): nothing applied
    spy = Spy(cb)
    t2 = trainer(tmp_path, [cb, spy])
    t2.fit(module, data)  # the same callback, the trained module: nothing re-initialized
    assert cb.scheme_outcome is SchemeOutcome.ALREADY_PRESENT
    for k, v in trained.items():
        assert torch.equal(spy.weights_at_fit_start[k], v), k
    assert hook_count(module) == scheme_hooks, "fitting twice leaves no extra hooks"
    gc.collect()
    from initwatch.watch import Watch

    assert not [o for o in gc.get_objects() if isinstance(o, Watch)], "no Watch kept alive"


def test_configure_model_layers_are_refused_with_the_way_out(tmp_path):
    class Lazy(Tiny):
        def __init__(self):
            L.LightningModule.__init__(self)
            self.lr = 1e-3
            self.net = None

        def configure_model(self):
            if self.net is None:
                self.net = zoo.build("torch_encoder", layers=2, hidden=HIDDEN, heads=2)
                self.head = nn.Linear(HIDDEN, 1)

    with pytest.raises(InitWatchError, match="configure_model"):
        trainer(tmp_path, [InitWatch("deepnet")]).fit(Lazy(), loader())


def test_unreadable_strategies_and_fused_fp16_are_refused():
    from lightning.pytorch.strategies import FSDPStrategy

    class DeepSpeedStrategy:
        pass

    with pytest.raises(UnsupportedStrategyError, match="DeepSpeedStrategy.*CUDA.*plain loop"):
        iw_lightning._refuse_strategy(SimpleNamespace(strategy=DeepSpeedStrategy()))
    flat = FSDPStrategy(use_orig_params=False)
    with pytest.raises(UnsupportedStrategyError, match="use_orig_params=True"):
        iw_lightning._refuse_strategy(SimpleNamespace(strategy=flat))
    hybrid = FSDPStrategy(sharding_strategy="HYBRID_SHARD", auto_wrap_policy={nn.Linear})
    with pytest.raises(UnsupportedStrategyError, match="HYBRID_SHARD"):
        iw_lightning._refuse_strategy(SimpleNamespace(strategy=hybrid))
    iw_lightning._refuse_strategy(SimpleNamespace(strategy=FSDPStrategy()))  # supported
    fused = SimpleNamespace(_step_supports_amp_scaling=True)
    fake = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=object()), optimizers=[fused])
    with pytest.raises(UnsupportedStrategyError, match="fused=False"):
        iw_lightning._refuse_fused_scaling(fake)


# ---- steps, accumulation, cadence, clipping ------------------------------------------------


def test_steps_accumulation_cadence_and_unclipped_grads(tmp_path):
    # cadence: the Trainer's log_every_n_steps alone (no dense start, no own interval)
    cb = InitWatch(None, dense_start=0, max_interval=None)
    spy = Spy(cb)
    t = trainer(
        tmp_path,
        [cb, spy],
        max_steps=7,
        log_every_n_steps=3,
        accumulate_grad_batches=2,
        gradient_clip_val=1e-4,
    )
    t.fit(Tiny(), loader(64))
    begins = [s for n, s in spy.calls if n == "begin_step"]
    assert begins == list(range(7)), "one begin per optimizer step, numbered like Lightning"
    # called every step (the Watch follows the lr); it reads gradients on measured steps only
    assert [n for n, _ in spy.calls].count("before_optimizer_step") == 7
    assert [n for n, _ in spy.calls].count("end_step") == 7
    # the steps Lightning logs ((s + 1) % 3 == 0) and step 0, the model as initialized
    assert [f.step for f in spy.frames] == [0, 2, 5]
    # Activation hooks are on for every micro-batch of a logging step, and off otherwise.
    per_step = {}
    for step, on in spy.gate:
        per_step.setdefault(step, []).append(on)
    assert per_step[0] == [True, True] and per_step[2] == [True, True]
    assert per_step[1] == [False, False] and per_step[3] == [False, False]
    # Gradients are read before Lightning clips them.
    assert all(f.globals["grad_norm_global"] > 1e-3 for f in spy.frames)
    assert all(math.isfinite(f.globals["loss"]) for f in spy.frames)


# ---- TensorBoard --------------------------------------------------------------------------


def test_writes_into_the_tensorboard_logger_among_several(tmp_path):
    csv, tb = CSVLogger(tmp_path / "csv"), TensorBoardLogger(tmp_path / "tb")
    cb = InitWatch("deepnet", dense_start=0, max_interval=None)
    trainer(tmp_path, [cb], logger=[csv, tb], log_every_n_steps=2).fit(Tiny(), loader())
    tags = scalars(tb.log_dir)
    assert "train_loss" in tags, "Lightning's own scalars"
    ours = [t for t in tags if t.startswith("initwatch/")]
    # the same x-axis points as Lightning's own scalars, plus step 0
    assert ours and tags["initwatch/global/grad_norm_global"] == [0, 1, 3]
    assert set(tags["train_loss"]) <= set(tags["initwatch/global/grad_norm_global"])
    assert not list((tmp_path / "csv").rglob("events.out.tfevents*")), "no own run besides"


def test_writes_an_own_run_without_a_tensorboard_logger(tmp_path):
    watch = InitWatch(None, log_every_n_steps=2, dense_start=0, max_interval=None)
    trainer(tmp_path, [watch]).fit(Tiny(), loader())
    tags = scalars(tmp_path / "initwatch_logs" / "version_0")
    assert tags["initwatch/global/grad_norm_global"] == [0, 1, 3]


# ---- alerts: stop, state, resume -------------------------------------------------------------

ALWAYS = {"persistence": 1, "grad_norm_ceiling": 1e-9}  # an exploding_gradient alert each frame


def test_on_alert_stop_sets_trainer_should_stop(tmp_path):
    cb = InitWatch(None, log_every_n_steps=1, on_alert="stop", rules=ALWAYS)
    t = trainer(tmp_path, [cb], max_steps=10)
    t.fit(Tiny(), loader())
    assert t.global_step == 1 and t.should_stop
    assert cb.stopping_reason is InitWatchStoppingReason.ALERT
    assert [a.kind for a in cb.alerts] == ["exploding_gradient"]


def test_resume_restores_checkpoint_weights_structure_and_alert_history(tmp_path):
    quiet = lambda alert: None  # noqa: E731
    L.seed_everything(1, verbose=False)
    cb = InitWatch("rezero", log_every_n_steps=1, on_alert=quiet, rules=ALWAYS)
    t = trainer(tmp_path, [cb], max_steps=3)
    t.fit(Tiny(), loader())
    ckpt = tmp_path / "run.ckpt"
    t.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)  # the callback state is weights-only-safe
    assert saved["callbacks"][cb.state_key]["watch"]["alerts"]
    history = [a.to_dict() for a in cb.alerts]
    assert [(a["step"], a["kind"]) for a in history] == [(0, "exploding_gradient")]

    L.seed_everything(2, verbose=False)  # another seed: another re-init, overwritten by the load
    cb2 = InitWatch("rezero", log_every_n_steps=1, on_alert=quiet, rules=ALWAYS)
    spy = Spy(cb2)
    module = Tiny()
    t2 = trainer(tmp_path, [cb2, spy], max_steps=5)
    t2.fit(module, loader(), ckpt_path=ckpt)  # strict load: ReZero gates exist again
    assert cb2.scheme_outcome is SchemeOutcome.APPLIED
    restored = spy.weights_at_fit_start
    assert set(restored) == set(saved["state_dict"])
    for k, v in saved["state_dict"].items():
        assert torch.equal(restored[k], v), k
    # The rules' state came back too: the cause is still ongoing, not a new alert at step 3.
    assert [a.to_dict() for a in cb2.alerts] == history
    assert t2.global_step == 5


# ---- fine-tuning ------------------------------------------------------------------------


class Wrapped(L.LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch, labels=batch).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


def test_pretrained_model_is_guarded_and_monitored_as_a_fine_tune(tmp_path, trained_state):
    from transformers import GPT2LMHeadModel

    base = zoo.build("gpt2", layers=2, hidden=32)
    base.load_state_dict(trained_state("gpt2"))
    base.save_pretrained(tmp_path / "gpt2")
    ids = torch.utils.data.DataLoader(torch.randint(0, 96, (8, 8)), batch_size=2)

    pretrained = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")
    with pytest.raises(PretrainedWeightsError, match="scheme=None"):
        trainer(tmp_path, [InitWatch("t-fixup")]).fit(Wrapped(pretrained), ids)
    assert initwatch.is_pretrained(pretrained), "the refused call left the weights alone"

    cb = InitWatch(None, log_every_n_steps=1)
    trainer(tmp_path, [cb], max_steps=2).fit(Wrapped(pretrained), ids)
    assert cb.context.pretrained and cb.context.scheme is None
    assert cb.context.family == "gpt2" and cb.context.optimizer == "AdamW"


# ---- import styles and precision --------------------------------------------------------------


def test_works_with_the_pytorch_lightning_package(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")

    class Old(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.inner = Tiny()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.inner.head(self.inner.net(x)).squeeze(-1).mean(-1), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    cb = InitWatch("deepnet", log_every_n_steps=1)
    assert isinstance(cb, pl.Callback) and isinstance(cb, L.Callback)
    t = pl.Trainer(max_steps=2, default_root_dir=tmp_path, callbacks=[cb], **QUIET_LIGHTNING)
    t.fit(Old(), loader())
    assert cb.scheme_outcome is SchemeOutcome.APPLIED and t.global_step == 2


def test_bf16_mixed(tmp_path):
    cb = InitWatch("t-fixup", log_every_n_steps=1)
    spy = Spy(cb)
    trainer(tmp_path, [cb, spy], precision="bf16-mixed", max_steps=2).fit(Tiny(), loader())
    assert cb.context.precision == "bf16-mixed"
    assert len(spy.frames) == 2
    assert all(math.isfinite(f.globals["grad_norm_global"]) for f in spy.frames)


def _fp16_run(tmp_path, init_scale):
    L.seed_everything(0, verbose=False)
    cb = InitWatch(None, log_every_n_steps=1)
    spy = Spy(cb)
    plugins = None
    if init_scale is not None:
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        plugins = [MixedPrecision("16-mixed", "cpu", scaler=scaler)]
    trainer(tmp_path, [cb, spy], plugins=plugins, max_steps=3).fit(Tiny(), loader())
    return cb, spy


@pytest.mark.slow
def test_fp16_grad_scaler_unscaled_grads_and_skipped_steps_are_not_explosions(tmp_path):
    # A scale of 2**40 overflows fp16: the scaler skips every step and halves its scale.
    cb, spy = _fp16_run(tmp_path, 2.0**40)
    assert [f.globals["skipped_step"] for f in spy.frames] == [1.0, 1.0, 1.0]
    assert [s for n, s in spy.calls if n == "end_step"] == [True, True, True]
    assert not cb.alerts, [str(a) for a in cb.alerts]
    # A sane scale: the logged gradient norm is the unscaled one (as in fp32), not x256.
    _, fp16 = _fp16_run(tmp_path, 2.0**8)
    _, fp32 = _fp16_run(tmp_path, None)
    g16 = fp16.frames[0].globals["grad_norm_global"]
    g32 = fp32.frames[0].globals["grad_norm_global"]
    assert fp16.frames[0].globals["skipped_step"] == 0.0
    assert g16 == pytest.approx(g32, rel=0.1)


def test_warn_goes_through_the_alert_policy_once_per_cause(tmp_path):
    cb = InitWatch(None, log_every_n_steps=1, rules=ALWAYS)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer(tmp_path, [cb], max_steps=3).fit(Tiny(), loader())
    from initwatch.policy import AlertWarning

    ours = [w for w in seen if issubclass(w.category, AlertWarning)]
    assert len(ours) == 1 and len(cb.alerts) >= 1
    assert ours[0].filename == __file__  # the user's trainer.fit line, not Lightning's loop
    remedy = cb.alerts[0].remedy  # in Lightning's own words
    assert "configure_optimizers" in remedy or "Trainer(" in remedy
    assert "TrainingArguments" not in remedy and "max_grad_norm" not in remedy


@pytest.mark.slow
def test_torch_compiled_module_is_watched(tmp_path):
    cb = InitWatch("deepnet", log_every_n_steps=1)
    spy = Spy(cb)
    module = Tiny()
    module.net = torch.compile(module.net, backend="eager")  # Dynamo's hook semantics, no inductor
    trainer(tmp_path, [cb, spy], max_steps=2).fit(module, loader())
    assert cb.scheme_outcome is SchemeOutcome.APPLIED
    assert len(spy.frames) == 2
    for f in spy.frames:  # the activation hooks fired inside the compiled forward
        assert "encoder.1" in f.values["act_rms"]


def test_warmup_is_read_from_common_schedulers():
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    from initwatch.schedule import warmup_steps_of

    def opt():
        return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)

    sched = torch.optim.lr_scheduler
    assert warmup_steps_of(get_linear_schedule_with_warmup(opt(), 10, 100), 100) == 10
    assert warmup_steps_of(get_cosine_schedule_with_warmup(opt(), 7, 100), 100) == 7
    assert warmup_steps_of(get_linear_schedule_with_warmup(opt(), 0, 100), 100) == 0
    assert warmup_steps_of(sched.LinearLR(opt(), start_factor=0.1, total_iters=5)) == 5
    assert warmup_steps_of(sched.OneCycleLR(opt(), max_lr=1.0, total_steps=100)) in (29, 30)
    o = opt()
    seq = sched.SequentialLR(
        o, [sched.LinearLR(o, 0.1, total_iters=4), sched.ConstantLR(o, 1.0)], milestones=[4]
    )
    assert warmup_steps_of(seq) == 4
    assert warmup_steps_of(sched.StepLR(opt(), 10)) == 0
    assert warmup_steps_of(None) is None


class _EpochScheduled(Tiny):
    def configure_optimizers(self):  # noqa: ANN201
        opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1)}


def test_without_a_scheduler_the_optimizers_lr_is_the_peak_with_no_warmup(tmp_path):
    cb = InitWatch(log_every_n_steps=1)
    trainer(tmp_path, [cb], max_steps=2).fit(Tiny(lr=3e-3), loader())
    assert cb.context.base_lr == pytest.approx(3e-3) and cb.context.warmup_steps == 0
    # a scheduler the Watch does not read per step: the peak stays unknown, not guessed
    scheduled = InitWatch(log_every_n_steps=1)
    trainer(tmp_path / "s", [scheduled], max_steps=2).fit(_EpochScheduled(lr=3e-3), loader())
    assert scheduled.context.base_lr is None and scheduled.context.warmup_steps is None
