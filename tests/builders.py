"""Builders shared by the tests: the quiet CPU settings, the tiny models, data and Trainers of
both frameworks, a plain training loop under a Watch, and the Spy callbacks that record what the
callback's Watch did."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from initwatch import zoo
from initwatch.probes import ParamProbe
from initwatch.selection import select_parameters
from initwatch.stats import HostValues, StatBuffer

# What every test Trainer runs with: CPU, no reporting, no checkpoints, no progress bar.
QUIET_CPU = dict(report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)
# What every test Lightning Trainer runs with: one CPU, no logger, checkpoints, bars or summary.
QUIET_LIGHTNING = dict(
    accelerator="cpu",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)
HIDDEN = 16  # width of the Lightning tests' encoder


def training_args(out: str | Path, **settings: Any) -> TrainingArguments:
    """``TrainingArguments`` writing to ``out`` with :data:`QUIET_CPU`, plus the test's settings.

    Example::

        >>> training_args("/tmp/x", max_steps=2).max_steps
        2
    """
    return TrainingArguments(**{"output_dir": str(out), **QUIET_CPU, **settings})


def plain_loop(
    watch: Any, opt: torch.optim.Optimizer, steps: int, loss: Callable[[int], torch.Tensor]
) -> None:
    """``steps`` steps of a plain loop under ``watch.step``: ``loss(step)`` (a scalar tensor)
    backward, ``opt.step()``, then ``opt.zero_grad()``; the Watch stays open."""
    for step in range(steps):
        with watch.step(step, opt) as scope:
            scope.loss = loss(step)
            scope.loss.backward()
            opt.step()
        opt.zero_grad()


def manual_step(
    watch: Any, opt: torch.optim.Optimizer, step: int, loss: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """One step through the Watch's explicit calls: ``begin_step(step)``, ``loss()`` backward,
    ``before_optimizer_step(opt)``, ``opt.step()``, ``opt.zero_grad()``, ``end_step`` with the
    loss; the loss."""
    watch.begin_step(step)
    value = loss()
    value.backward()
    watch.before_optimizer_step(opt)
    opt.step()
    opt.zero_grad()
    watch.end_step(loss=value)
    return value


def param_probe(model: nn.Module, **kw: Any) -> tuple[ParamProbe, StatBuffer]:
    """A ``ParamProbe`` of every parameter of ``model`` (``kw``: its options) on an allocated
    buffer of its own."""
    buf = StatBuffer()
    probe = ParamProbe(select_parameters(model), buf, **kw)
    buf.allocate()
    return probe, buf


def probed_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    probe: ParamProbe,
    buf: StatBuffer,
    x: torch.Tensor,
) -> tuple[list[torch.Tensor], HostValues]:
    """One step on ``model(x).pow(2).mean()`` that ``probe`` reads: the gradients, a snapshot,
    ``opt.step()``, the update. The parameters before the step and the buffer read back."""
    model(x).pow(2).mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    probe.read_grads()
    probe.snapshot()
    opt.step()
    probe.measure_update()
    return before, buf.read()


def events(logdir: str | Path) -> EventAccumulator:
    """A TensorBoard run (a folder or one event file) read back, every event of every kind
    kept (the accumulator's default keeps a sample of long runs)."""
    kinds = ("scalars", "tensors", "images", "histograms")
    acc = EventAccumulator(str(logdir), size_guidance=dict.fromkeys(kinds, 0))
    acc.Reload()
    return acc


def scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run: ``{tag: [(step, value), ...]}``."""
    acc = events(logdir)
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def initwatch_tags(logdir: str | Path) -> list[str]:
    """The scalar tags initwatch wrote to a TensorBoard run."""
    return [t for t in events(logdir).Tags()["scalars"] if t.startswith("initwatch/")]


def scalar_steps(logdir: str | Path) -> dict[str, list[int]]:
    """The steps of every scalar of a TensorBoard run: ``{tag: [step, ...]}``."""
    return {tag: [s for s, _ in points] for tag, points in scalars(logdir).items()}


# ---- Hugging Face ------------------------------------------------------------------------------


def gpt2() -> GPT2LMHeadModel:
    """A 2-layer, 32-wide GPT-2 with random weights."""
    return zoo.build("gpt2", layers=2, hidden=32)


def gpt2_without_dropout(layers: int = 2, d: int = 32, positions: int = 64) -> GPT2LMHeadModel:
    """A GPT-2 of ``layers`` blocks of width ``d`` (4 heads, vocabulary 100) without dropout:
    its forward passes are deterministic."""
    cfg = GPT2Config(
        n_layer=layers,
        n_embd=d,
        n_head=4,
        vocab_size=100,
        n_positions=positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg)


def hf_dataset(n: int = 16) -> list[dict[str, torch.Tensor]]:
    """``n`` fixed random token sequences of length 8 (their own labels)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 96, (n, 8), generator=g)
    return [{"input_ids": row, "labels": row} for row in ids]


def hf_args(out: str | Path, **kw: Any) -> TrainingArguments:
    """:func:`training_args` of the test Trainers: 4 steps of batch 2, logging every 2nd,
    seed 0; ``kw`` overrides them."""
    args: dict[str, Any] = dict(max_steps=4, per_device_train_batch_size=2, logging_steps=2, seed=0)
    args.update(kw)
    return training_args(out, **args)


def hf_trainer(
    tmp_path: Path,
    model: nn.Module,
    callbacks: list[Any],
    data: Any = None,
    optimizers: tuple[Any, Any] = (None, None),
    **kw: Any,
) -> Trainer:
    """A quiet CPU Trainer of :func:`hf_args` over ``data`` (default :func:`hf_dataset`),
    writing under ``tmp_path / "out"``; ``kw`` overrides the arguments."""
    trainer = Trainer(
        model=model,
        args=hf_args(tmp_path / "out", **kw),
        train_dataset=hf_dataset() if data is None else data,
        callbacks=callbacks,
        optimizers=optimizers,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


# ---- Lightning ---------------------------------------------------------------------------------


class Tiny(L.LightningModule):
    """A small Post-LN encoder (DeepNet, T-Fixup and ReZero all apply) with a regression head."""

    def __init__(self, layers: int = 2, lr: float = 1e-3) -> None:
        super().__init__()
        self.net = zoo.build("torch_encoder", layers=layers, hidden=HIDDEN, heads=2)
        self.head = nn.Linear(HIDDEN, 1)
        self.lr = lr

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        loss = F.mse_loss(self.head(self.net(x)).squeeze(-1).mean(-1), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        self.log("val_loss", F.mse_loss(self.head(self.net(x)).squeeze(-1).mean(-1), y))

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def loader(n: int = 32, batch: int = 4) -> torch.utils.data.DataLoader:
    """``n`` fixed random (sequence, target) pairs for :class:`Tiny`."""
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(n, 6, HIDDEN, generator=g), torch.randn(n, generator=g)
    )
    return torch.utils.data.DataLoader(data, batch_size=batch)


def lightning_trainer(tmp_path: Path, callbacks: list[Any], **kw: Any) -> L.Trainer:
    """A :data:`QUIET_LIGHTNING` Trainer of 4 steps under ``tmp_path``; ``kw`` overrides the
    arguments."""
    args: dict[str, Any] = {**QUIET_LIGHTNING, "max_steps": 4, "default_root_dir": tmp_path}
    args.update(kw)
    return L.Trainer(callbacks=callbacks, **args)


# ---- Spies -------------------------------------------------------------------------------------


class _Recorder:
    """What both Spy callbacks record about the watching callback ``cb``'s Watch: its step
    calls, the gate per forward of ``part`` and each new frame."""

    def __init__(self, cb: Any) -> None:
        self.cb = cb
        self.calls: list[tuple[str, Any]] = []  # (method, step or skipped)
        self.frames: list[Any] = []
        self.gate: list[tuple[int, bool]] = []  # (global step, is_logging) per forward
        self._handle: Any = None

    def _attach(self, part: nn.Module, step: Any) -> None:
        watch = self.cb.watch
        for name in ("begin_step", "before_optimizer_step", "end_step"):
            self._wrap(watch, name)

        def record(module: nn.Module, args: Any, output: Any) -> None:
            self.gate.append((step(), watch.is_logging))

        self._handle = part.register_forward_hook(record)

    def _wrap(self, watch: Any, name: str) -> None:
        original = getattr(watch, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args[0] if name == "begin_step" else kwargs.get("skipped")))
            return original(*args, **kwargs)

        setattr(watch, name, wrapped)

    def _collect(self) -> None:
        watch = self.cb.watch
        frame = watch.last_frame if watch is not None else None
        if frame is not None and (not self.frames or self.frames[-1] is not frame):
            self.frames.append(frame)

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class LightningSpy(_Recorder, L.Callback):
    """Runs after ``InitWatch``: records frames, Watch calls, the gate per forward of
    ``pl_module.net`` and the weights at ``on_fit_start``."""

    def __init__(self, cb: Any) -> None:
        super().__init__(cb)
        self.weights_at_fit_start: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights_at_fit_start = {k: v.clone() for k, v in pl_module.state_dict().items()}
        self._attach(pl_module.net, lambda: trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001, ANN201
        self._collect()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._detach()


class HFSpy(_Recorder, TrainerCallback):
    """Runs after ``InitWatchCallback``: records frames, Watch calls, the gate per forward of
    ``model.transformer`` and the weights at ``on_train_begin``."""

    def __init__(self, cb: Any) -> None:
        super().__init__(cb)
        self.weights_at_train_begin: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN201
        self.weights_at_train_begin = {k: v.clone() for k, v in model.state_dict().items()}
        self._attach(model.transformer, lambda: state.global_step)

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self._collect()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self._detach()
