"""The Hugging Face adapter: scheme at on_init_end, steps, TensorBoard, stop, resume, precision."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from accelerate.optimizer import AcceleratedOptimizer
from builders import HFSpy as Spy
from builders import gpt2, scalars
from builders import hf_dataset as dataset
from builders import hf_trainer as make
from safetensors.torch import load_file
from transformers import (
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
)

import initwatch
from initwatch.errors import InitWatchError, PretrainedWeightsError
from initwatch.integrations import UnsupportedStrategyError
from initwatch.integrations import transformers as iw_hf
from initwatch.integrations.transformers import InitWatchCallback

pytestmark = pytest.mark.filterwarnings("ignore")
ALWAYS = {"persistence": 1, "grad_norm_ceiling": 1e-9}  # an exploding_gradient alert each frame


# ---- construction and the scheme -------------------------------------------------------------


def test_constructor_validates():
    with pytest.raises(ValueError, match="unknown scheme"):
        InitWatchCallback(scheme="fixup-ish")
    with pytest.raises(ValueError, match="on_alert"):
        InitWatchCallback(on_alert="explode")
    with pytest.raises(ValueError, match="logging_steps"):
        InitWatchCallback(logging_steps=0)


def test_scheme_at_init_end_new_params_trained(tmp_path):
    model, cb = gpt2(), InitWatchCallback("rezero")
    trainer = make(tmp_path, model, [cb])
    gates = {n: p for n, p in model.named_parameters() if "rezero_alpha" in n}
    assert gates and cb.report.scheme == "rezero", "applied when the Trainer was built"
    trainer.train()
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in optimized for p in gates.values())
    assert all(float(p) != 0.0 for p in gates.values()), "the new parameters were trained"
    assert cb.context.scheme == "rezero" and not cb.context.pretrained
    trainer.train()  # a second train(): on_train_begin again, nothing re-applied
    assert {n for n, _ in model.named_parameters() if "rezero_alpha" in n} == set(gates)


def test_missed_init_end_and_model_init_are_errors_with_the_right_way(tmp_path):
    trainer = make(tmp_path, gpt2(), [])
    trainer.add_callback(InitWatchCallback("t-fixup"))
    with pytest.raises(InitWatchError, match=r"Trainer\(\.\.\., callbacks="):
        trainer.train()

    monitor = InitWatchCallback(None, logging_steps=1)  # add_callback is fine to only monitor
    trainer = make(tmp_path, gpt2(), [], max_steps=1)
    trainer.add_callback(monitor)
    trainer.train()
    assert monitor.context is not None and monitor.context.step == 1

    args = TrainingArguments(str(tmp_path / "mi"), max_steps=1, report_to="none", use_cpu=True)
    with pytest.raises(InitWatchError, match="inside model_init"):
        Trainer(
            model_init=gpt2,
            args=args,
            train_dataset=dataset(),
            callbacks=[InitWatchCallback("rezero")],
        )

    model = gpt2()
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.ConstantLR(opt)
    with pytest.raises(InitWatchError, match="optimizers="):
        Trainer(
            model=model,
            args=args,
            train_dataset=dataset(),
            optimizers=(opt, sched),
            callbacks=[InitWatchCallback("rezero")],
        )
    assert initwatch.schemes.base.MARKER not in vars(model), "refused before touching it"


def test_unreadable_strategies_are_refused():
    fsdp1 = SimpleNamespace(fsdp="full_shard", fsdp_config={"version": 1}, deepspeed=None)
    with pytest.raises(UnsupportedStrategyError, match="FSDP1.*version': 2"):
        iw_hf._refuse_strategy(fsdp1, None)
    fsdp2 = SimpleNamespace(fsdp="full_shard", fsdp_config={"version": 2}, deepspeed=None)
    iw_hf._refuse_strategy(fsdp2, None)  # supported (tests/test_sharded.py)
    # DeepSpeed: ZeRO in fp32/bf16 is supported (tests/test_deepspeed.py), fp16 refused
    iw_hf._refuse_strategy(SimpleNamespace(fsdp="", deepspeed="ds.json", fp16=False), None)
    fp16 = {"zero_optimization": {"stage": 2}, "fp16": {"enabled": True}}
    for args in (
        SimpleNamespace(fsdp="", deepspeed="ds.json", fp16=True),
        SimpleNamespace(fsdp="", deepspeed=fp16, fp16=False),
    ):
        with pytest.raises(UnsupportedStrategyError, match="DeepSpeed with fp16.*bf16"):
            iw_hf._refuse_strategy(args, None)


# ---- steps ------------------------------------------------------------------------------


def test_logging_steps_accumulation_and_clipped_grads(tmp_path):
    # cadence: args.logging_steps alone (no dense start, no own interval)
    cb = InitWatchCallback("t-fixup", dense_start=0, max_interval=None)
    spy = Spy(cb)
    t = make(tmp_path, gpt2(), [cb, spy], gradient_accumulation_steps=2, max_grad_norm=1e-3)
    t.train()
    assert [s for n, s in spy.calls if n == "begin_step"] == [1, 2, 3, 4]
    # called every step (the Watch follows the lr); it reads gradients on measured steps only
    assert [n for n, _ in spy.calls].count("before_optimizer_step") == 4
    assert [f.step for f in spy.frames] == [2, 4], "the Trainer's logging steps and numbering"
    per_step = {}
    for step, on in spy.gate:
        per_step.setdefault(step, []).append(on)
    assert per_step[1] == [True, True] and per_step[0] == [False, False]  # steps 2 and 1
    # The Trainer clips before on_pre_optimizer_step; the rules see the pre-clip norm it
    # computed (the one it logs as grad_norm), and the clipped one is kept beside it.
    logged = [h["grad_norm"] for h in t.state.log_history if "grad_norm" in h]
    assert [f.globals["grad_norm_global"] for f in spy.frames] == pytest.approx(logged)
    for f in spy.frames:
        assert f.globals["grad_norm_global"] > 10 * 1e-3
        assert f.globals["grad_norm_clipped"] == pytest.approx(1e-3, rel=1e-3)
        assert math.isfinite(f.globals["loss"])
    assert cb.context.grad_clip == 1e-3 and cb.context.grad_clip_algorithm == "norm"
    assert cb.context.warmup_steps == 0 and cb.context.max_steps == 4


def test_report_to_tensorboard_shares_the_run_and_logs_the_preclip_norm(tmp_path):
    cb = InitWatchCallback(None, dense_start=0, max_interval=None)
    make(tmp_path, gpt2(), [cb], report_to="tensorboard", max_grad_norm=1e-3).train()
    runs = list((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 1
    tags = scalars(runs[0])
    assert [s for s, _ in tags["train/loss"]] == [2, 4]
    assert [s for s, _ in tags["initwatch/global/grad_norm_global"]] == [2, 4]
    pre = tags["initwatch/global/grad_norm_preclip"]
    assert [s for s, _ in pre] == [s for s, _ in tags["train/grad_norm"]] == [2, 4]
    assert [v for _, v in pre] == pytest.approx([v for _, v in tags["train/grad_norm"]])
    assert all(v > 1e-3 for _, v in pre), "pre-clip norms above max_grad_norm"
    ours = [v for _, v in tags["initwatch/global/grad_norm_global"]]
    assert ours == pytest.approx([v for _, v in pre], rel=1e-5), "the rules saw the pre-clip norm"
    assert not (tmp_path / "out" / "initwatch_logs").exists()


def test_own_run_under_output_dir_without_tensorboard(tmp_path):
    make(tmp_path, gpt2(), [InitWatchCallback(None, dense_start=0, max_interval=None)]).train()
    tags = scalars(tmp_path / "out" / "initwatch_logs" / "version_0")
    assert [s for s, _ in tags["initwatch/global/grad_norm_global"]] == [2, 4]


def test_on_alert_stop_sets_should_training_stop(tmp_path):
    cb = InitWatchCallback(None, logging_steps=1, on_alert="stop", rules=ALWAYS)
    trainer = make(tmp_path, gpt2(), [cb], max_steps=10)
    trainer.train()
    assert trainer.state.global_step == 1
    assert [a.kind for a in cb.alerts] == ["exploding_gradient"]


def test_alert_warning_is_printed_once_and_names_the_users_train_line(tmp_path):
    from initwatch.policy import AlertWarning

    cb = InitWatchCallback(None, logging_steps=1, rules=ALWAYS)
    trainer = make(tmp_path, gpt2(), [cb], max_steps=3)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.train()
    ours = [w for w in seen if issubclass(w.category, AlertWarning)]
    assert len(ours) == 1 and len(cb.alerts) >= 1
    assert ours[0].filename == __file__  # trainer.train() here, not transformers' loop
    remedy = cb.alerts[0].remedy  # in the HF Trainer's own words
    assert "TrainingArguments(" in remedy and "configure_optimizers" not in remedy
    assert "gradient_clip_val" not in remedy


def test_skipped_amp_steps_are_reported_as_skipped_not_explosions(tmp_path, monkeypatch):
    # CPU has no fp16 GradScaler in the Trainer; make accelerate report every step skipped.
    monkeypatch.setattr(AcceleratedOptimizer, "step_was_skipped", property(lambda self: True))
    cb = InitWatchCallback(None, logging_steps=1, rules=ALWAYS)
    spy = Spy(cb)
    make(tmp_path, gpt2(), [cb, spy], max_steps=2).train()
    assert [s for n, s in spy.calls if n == "end_step"] == [True, True]
    assert [f.globals["skipped_step"] for f in spy.frames] == [1.0, 1.0]
    assert not cb.alerts


# ---- resume and fine-tuning ------------------------------------------------------------------


def test_resume_restores_checkpoint_weights_structure_and_alerts(tmp_path):
    quiet = lambda alert: None  # noqa: E731
    torch.manual_seed(1)
    cb = InitWatchCallback("rezero", logging_steps=1, on_alert=quiet, rules=ALWAYS)
    make(tmp_path, gpt2(), [cb], max_steps=2, save_strategy="steps", save_steps=2).train()
    ckpt = tmp_path / "out" / "checkpoint-2"
    saved = load_file(str(ckpt / "model.safetensors"))
    assert any("rezero_alpha" in k for k in saved)
    history = [a.to_dict() for a in cb.alerts]
    assert history

    torch.manual_seed(2)  # another model draw and another re-init: both overwritten by the load
    cb2 = InitWatchCallback("rezero", logging_steps=1, on_alert=quiet, rules=ALWAYS)
    spy = Spy(cb2)
    trainer = make(tmp_path, gpt2(), [cb2, spy], max_steps=4, seed=7)
    trainer.train(resume_from_checkpoint=str(ckpt))
    restored = spy.weights_at_train_begin
    for k, v in saved.items():
        assert torch.equal(restored[k], v), k
    assert [a.to_dict() for a in cb2.alerts[: len(history)]] == history
    assert [f.step for f in spy.frames] == [3, 4]


def test_pretrained_model_is_guarded_and_monitored_as_a_fine_tune(tmp_path, trained_state):
    base = gpt2()
    base.load_state_dict(trained_state("gpt2"))
    base.save_pretrained(tmp_path / "gpt2")
    model = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2")
    with pytest.raises(PretrainedWeightsError, match="scheme=None"):
        make(tmp_path, model, [InitWatchCallback("t-fixup")])
    cb = InitWatchCallback(None)
    make(tmp_path, model, [cb], max_steps=2).train()
    assert cb.context.pretrained and cb.context.scheme is None
    assert cb.context.optimizer == "AdamW" and cb.context.base_lr == 5e-5


# ---- precision and compile ---------------------------------------------------------------------


@pytest.mark.slow
def test_bf16_and_torch_compile(tmp_path):
    cb = InitWatchCallback("t-fixup", logging_steps=1)
    spy = Spy(cb)
    make(
        tmp_path,
        gpt2(),
        [cb, spy],
        max_steps=2,
        bf16=True,
        torch_compile=True,
        torch_compile_backend="eager",
    ).train()
    assert cb.context.precision == "bf16-mixed"
    assert len(spy.frames) == 2
    for f in spy.frames:  # hooks attached before the first compiled forward fired
        assert f.values.get("act_rms") and math.isfinite(f.globals["grad_norm_global"])


# ---- finding the Trainer -------------------------------------------------------------------------


def _from(trainer, fn):
    """Call ``fn`` from a frame whose ``self`` is ``trainer`` (as a Trainer method would)."""
    self = trainer  # noqa: F841  (read through the frame)
    return fn()


def test_the_calling_trainer_is_the_one_that_holds_the_callback(tmp_path):
    cb, stranger = InitWatchCallback(), InitWatchCallback()
    trainer = make(tmp_path, gpt2(), [cb])
    other = make(tmp_path / "other", gpt2(), [])
    assert _from(trainer, lambda: iw_hf._calling_trainer(cb)) is trainer
    assert _from(trainer, lambda: iw_hf._calling_trainer(stranger)) is None
    # a Trainer nearer in the stack that does not hold the callback is passed over
    nested = _from(trainer, lambda: _from(other, lambda: iw_hf._calling_trainer(cb)))
    assert nested is trainer
    assert iw_hf._calling_trainer(cb) is None  # no Trainer in the calling frames


def test_events_called_without_a_trainer_fall_back_and_say_so(tmp_path, caplog):
    from transformers import TrainerControl, TrainerState

    model, cb = gpt2(), InitWatchCallback(logging_steps=1, dense_start=0, max_interval=None)
    args = TrainingArguments(str(tmp_path), report_to="none", use_cpu=True, max_steps=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state, control = TrainerState(max_steps=1, logging_steps=1), TrainerControl()
    cb.on_init_end(args, state, control, model=model)
    with caplog.at_level("WARNING", logger="initwatch"):
        cb.on_train_begin(args, state, control, model=model, optimizer=optimizer)
    assert "found no Trainer calling it" in caplog.text
    assert "model's own loss" in caplog.text and "after the Trainer's clipping" in caplog.text
    batch = hf_dataset_batch()
    cb.on_step_begin(args, state, control, model=model)
    loss = model(**batch).loss  # the fallback records the model's own loss
    loss.backward()
    cb.on_pre_optimizer_step(args, state, control, model=model, optimizer=optimizer)
    optimizer.step()
    cb.on_optimizer_step(args, state, control, model=model, optimizer=optimizer)
    state.global_step = 1
    cb.on_step_end(args, state, control, model=model)
    cb.close()
    assert cb.watch is None and len(cb.frames) == 1  # released; its frames stay
    frame = cb.last_frame
    assert frame.step == 1
    assert frame.globals["loss"] == pytest.approx(float(loss), rel=1e-6)


def hf_dataset_batch() -> dict[str, torch.Tensor]:
    rows = dataset(4)
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
