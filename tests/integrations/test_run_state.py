"""Right numbers and clean state in both adapters: the recorded loss is the trainer's own under
gradient accumulation, each fit starts with a fresh alert history, and a resume restores it from
the checkpoint wherever it lives."""

from __future__ import annotations

import json
import shutil

import builders
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from builders import QUIET_CPU, LightningSpy, gpt2, hf_args, hf_dataset, lightning_trainer
from torch import nn
from transformers import PrinterCallback, Trainer, TrainerCallback

from initwatch import zoo
from initwatch.integrations.lightning import InitWatch
from initwatch.integrations.transformers import InitWatchCallback

pytestmark = pytest.mark.filterwarnings("ignore")
ALWAYS = {"persistence": 1, "grad_norm_ceiling": 1e-9}  # an exploding_gradient alert each frame
HIDDEN = 16


def quiet(alert) -> None:
    """An alert policy that says nothing."""


# ---------------------------------------------------------------------------- Hugging Face
def hf_trainer(tmp_path, callbacks, model=None, **kw) -> Trainer:
    """:func:`builders.hf_trainer` over 32 sequences: 3 steps, logging every step, writing
    under ``tmp_path / "out"``; a fresh :func:`gpt2` unless ``model`` is given."""
    model = model if model is not None else gpt2()
    kw = {"max_steps": 3, "logging_steps": 1, **kw}
    return builders.hf_trainer(tmp_path, model, callbacks, hf_dataset(32), **kw)


class LossSpy(TrainerCallback):
    """Runs after InitWatchCallback: (step, the Trainer's logged loss, the frame's loss)."""

    def __init__(self, cb: InitWatchCallback) -> None:
        self.cb = cb
        self.pairs: list[tuple[int, float, int, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.cb.watch is not None:
            frame = self.cb.watch.last_frame
            self.pairs.append((state.global_step, logs["loss"], frame.step, frame.globals["loss"]))


def test_hf_loss_under_gradient_accumulation_is_the_trainers_own(tmp_path):
    # GPT-2 accepts loss kwargs: the Trainer passes num_items_in_batch, so each micro-batch's
    # forward loss is a quarter of the step's loss; the recorded loss is the logged one.
    cb = InitWatchCallback(on_alert=quiet)
    spy = LossSpy(cb)
    t = hf_trainer(tmp_path, [cb, spy], gradient_accumulation_steps=4)
    t.train()
    assert [p[0] for p in spy.pairs] == [1, 2, 3]
    for step, logged, frame_step, recorded in spy.pairs:
        assert frame_step == step
        assert recorded == pytest.approx(logged, abs=1e-3)  # the Trainer rounds to 4 digits
        assert logged > 3.0  # ~4 for a fresh model, not a quarter of it


def test_trl_sft_trainer_loss_is_the_trainers_own(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(96)}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
        unk_token="t0",
        pad_token="t1",
        eos_token="t2",
    )
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(3, 96, (16, 12), generator=g)
    data = Dataset.from_list([{"input_ids": r.tolist()} for r in rows])
    model = zoo.build("gpt2", layers=2, hidden=32)
    cb = InitWatchCallback(on_alert=quiet)
    spy = LossSpy(cb)
    config = trl.SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=3,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        logging_steps=1,
        seed=0,
        **QUIET_CPU,
    )
    t = trl.SFTTrainer(
        model=model, args=config, train_dataset=data, processing_class=tok, callbacks=[cb, spy]
    )
    t.remove_callback(PrinterCallback)
    t.train()
    assert [p[0] for p in spy.pairs] == [1, 2, 3]
    for _, logged, _, recorded in spy.pairs:
        assert recorded == pytest.approx(logged, abs=1e-3)


def test_hf_each_train_starts_with_a_fresh_alert_history(tmp_path):
    # model_init builds a new model per train() (as hyperparameter_search does per trial).
    raised = []
    cb = InitWatchCallback(on_alert=raised.append, rules=ALWAYS)
    t = Trainer(
        model_init=gpt2,
        args=hf_args(tmp_path / "out", max_steps=2, logging_steps=1),
        train_dataset=hf_dataset(32),
        callbacks=[cb],
    )
    t.remove_callback(PrinterCallback)
    t.train()
    first = [(a.step, a.kind, a.repeat) for a in cb.alerts]
    assert first == [(1, "exploding_gradient", 0)]
    t.train()  # trial 2: its alert is new, not a repeat of trial 1's
    assert [(a.step, a.kind, a.repeat) for a in cb.alerts] == first
    assert [(a.step, a.repeat) for a in raised] == [(1, 0), (1, 0)]


def test_hf_resume_from_a_checkpoint_in_another_folder_restores_the_alert_state(tmp_path):
    cb = InitWatchCallback(on_alert=quiet, rules=ALWAYS)
    t = hf_trainer(tmp_path / "a", [cb], max_steps=2, save_strategy="steps", save_steps=2)
    t.train()
    history = [a.to_dict() for a in cb.alerts]
    assert [(a["step"], a["repeat"]) for a in history] == [(1, 0)]
    moved = tmp_path / "elsewhere" / "ckpt"
    shutil.copytree(tmp_path / "a" / "out" / "checkpoint-2", moved)
    # the Trainer's own trainer_state.json carries it (ExportableState), no file of ours
    assert sorted(p.name for p in moved.iterdir() if "initwatch" in p.name) == []
    assert (
        "InitWatchCallback"
        in json.loads((moved / "trainer_state.json").read_text())["stateful_callbacks"]
    )

    cb2 = InitWatchCallback(on_alert=quiet, rules=ALWAYS)
    t2 = hf_trainer(tmp_path / "b", [cb2], max_steps=4)
    t2.train(resume_from_checkpoint=str(moved))
    # the cause is ongoing: no new alert at steps 3 and 4, the history is the checkpoint's
    assert [a.to_dict() for a in cb2.alerts] == history
    assert t2.state.global_step == 4


def test_hf_restore_callback_states_from_checkpoint_rebuilds_a_monitoring_callback(tmp_path):
    cb = InitWatchCallback("rezero", on_alert=quiet, rules=ALWAYS)
    t = hf_trainer(tmp_path / "a", [cb], max_steps=2, save_strategy="steps", save_steps=2)
    t.train()
    history = [a.to_dict() for a in cb.alerts]
    model = t.model  # carries ReZero: the resumed run monitors it, it does not re-apply
    mine = InitWatchCallback(on_alert=quiet, rules=ALWAYS)
    t2 = hf_trainer(
        tmp_path / "b",
        [mine],
        model=model,
        max_steps=4,
        restore_callback_states_from_checkpoint=True,
    )
    t2.train(resume_from_checkpoint=str(tmp_path / "a" / "out" / "checkpoint-2"))
    (rebuilt,) = [c for c in t2.callback_handler.callbacks if isinstance(c, InitWatchCallback)]
    # the Trainer replaced the instance (keep this option off to keep yours), and the new one
    # monitors with the checkpoint's alert state
    assert rebuilt is not mine and rebuilt.scheme is None
    assert [a.to_dict() for a in rebuilt.alerts][: len(history)] == history


# ---------------------------------------------------------------------------- Lightning
class Tiny(L.LightningModule):
    """A small Post-LN encoder with a regression head; records the losses it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.net = zoo.build("torch_encoder", layers=2, hidden=HIDDEN, heads=2)
        self.head = nn.Linear(HIDDEN, 1)
        self.returned: list[tuple[int, float]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.head(self.net(x)).squeeze(-1).mean(-1), y)
        self.returned.append((self.trainer.global_step, float(loss)))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def loader(n: int = 64, batch: int = 4) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(n, 6, HIDDEN, generator=g), 3 + torch.randn(n, generator=g)
    )
    return torch.utils.data.DataLoader(data, batch_size=batch)


def pl_trainer(tmp_path, callbacks, **kw) -> L.Trainer:
    return lightning_trainer(tmp_path, callbacks, **{"max_steps": 3, "log_every_n_steps": 1, **kw})


def test_lightning_loss_under_accumulation_is_what_training_step_returned(tmp_path):
    cb = InitWatch(on_alert=quiet)
    spy = LightningSpy(cb)  # its frames: each new frame of the fit
    module = Tiny()
    pl_trainer(tmp_path, [cb, spy], accumulate_grad_batches=4).fit(module, loader())
    assert [f.step for f in spy.frames] == [0, 1, 2]
    for frame in spy.frames:
        micro = [v for s, v in module.returned if s == frame.step]
        assert len(micro) == 4
        assert frame.globals["loss"] == pytest.approx(sum(micro) / 4, rel=1e-5)


def test_lightning_each_fit_starts_with_a_fresh_alert_history(tmp_path):
    raised = []
    cb = InitWatch(on_alert=raised.append, rules=ALWAYS)
    pl_trainer(tmp_path, [cb], max_steps=2).fit(Tiny(), loader())
    first = [(a.step, a.kind, a.repeat) for a in cb.alerts]
    assert first == [(0, "exploding_gradient", 0)]
    pl_trainer(tmp_path, [cb], max_steps=2).fit(Tiny(), loader())
    assert [(a.step, a.kind, a.repeat) for a in cb.alerts] == first
    assert [(a.step, a.repeat) for a in raised] == [(0, 0), (0, 0)]


def test_lightning_resume_restores_the_alert_state_of_the_checkpoint(tmp_path):
    cb = InitWatch(on_alert=quiet, rules=ALWAYS)
    t = pl_trainer(tmp_path, [cb], max_steps=2)
    t.fit(Tiny(), loader())
    ckpt = tmp_path / "elsewhere" / "run.ckpt"
    t.save_checkpoint(ckpt)
    history = [a.to_dict() for a in cb.alerts]
    # the same callback fits another model in between: a fresh history of its own
    pl_trainer(tmp_path, [cb], max_steps=1).fit(Tiny(), loader())
    assert [a.step for a in cb.alerts] == [0]
    t3 = pl_trainer(tmp_path, [cb], max_steps=4)
    t3.fit(Tiny(), loader(), ckpt_path=ckpt)
    assert [a.to_dict() for a in cb.alerts] == history  # ongoing cause: no new alert
