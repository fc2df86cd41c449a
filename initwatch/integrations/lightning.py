"""Re-initialize a transformer when Lightning sets up ``fit`` and watch its layers while it trains."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Mapping
from enum import Enum
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch.optim import Optimizer
from typing_extensions import override

from initwatch.anatomy import Anatomy
from initwatch.errors import InitWatchError
from initwatch.integrations._common import (
    DENSE_START,
    MAX_INTERVAL,
    AdapterSettings,
    UnsupportedStrategyError,
    apply_scheme,
    base_context,
    check_checkpoint,
    describe_report,
    guard_resume,
    is_summary_writer,
    own_run_dir,
    read_anatomy,
    refuse_second_watcher,
    step_hook,
)
from initwatch.schemes.base import applied_scheme
from initwatch.sharding import broadcast_from_rank0
from initwatch.vocabulary import LayersSpec, OnAlertSpec, RulesSpec

# One class serves both import styles: it is a ``lightning.pytorch`` Callback and, when the
# separate ``pytorch_lightning`` package is installed, a ``pytorch_lightning`` Callback too, so
# either Trainer accepts it (each checks ``isinstance`` against its own class tree).
_BASES: tuple[type, ...] = (pl.Callback,)
if importlib.util.find_spec("pytorch_lightning") is not None:
    import pytorch_lightning as _pl_old

    _BASES = (pl.Callback, _pl_old.Callback)

_REFUSED = ("DeepSpeed", "XLA")  # FSDPStrategy and ModelParallelStrategy are supported


class InitWatchStoppingReason(Enum):
    """Why :class:`InitWatch` stopped training (``callback.stopping_reason``).

    Example::

        >>> InitWatchStoppingReason.NOT_STOPPED.name
        'NOT_STOPPED'
    """

    NOT_STOPPED = 0
    ALERT = 1


class SchemeOutcome(Enum):
    """What :class:`InitWatch` did with its scheme at the last ``setup("fit")``.

    Example::

        >>> SchemeOutcome.APPLIED.value
        'applied'
    """

    NO_SCHEME = "no scheme"
    APPLIED = "applied"
    ALREADY_PRESENT = "already present (a second fit, or a restored model): left alone"
    NOT_LIVE = "not live: the model ran without initwatch's hooks (a stale compiled graph)"


class InitWatch(*_BASES, AdapterSettings):  # type: ignore[misc]
    r"""Apply a re-initialization scheme at ``setup("fit")`` and watch per-layer statistics.

    The scheme (DeepNet, T-Fixup or ReZero) is applied once, in ``setup`` for the stage
    ``"fit"``: before ``configure_optimizers`` (so ReZero's new parameters are trained), before
    the DDP wrap broadcasts rank 0's weights (so all ranks agree) and before a checkpoint is
    restored (so a resume gets the saved weights back, into the same structure). A module that
    already carries the scheme (a second ``fit``, ``validate``/``test`` after ``fit``) is left
    alone.

    While training, the steps at which Lightning logs its own metrics (every
    ``log_every_n_steps``-th: ``(step + 1) % log_every_n_steps == 0``), every step of the first
    ``dense_start`` steps of each fit (and after an lr jump) and at least every
    ``max_interval``-th step are measured: activations of all micro-batches of that step,
    gradients in ``on_before_optimizer_step`` (accumulated, unscaled, after the DDP all-reduce,
    *before* gradient clipping), and the update the optimizer made. Steps are numbered as
    Lightning numbers its own scalars: batches that stepped an optimizer
    (``trainer.global_step`` before the step's increment with one optimizer; with several
    optimizers under manual optimization ``global_step`` counts each optimizer's step, the
    logged step and this one count batches). Rules turn
    them into :class:`~initwatch.Alert`\ s with remedies, and everything is written to the
    TensorBoard run of the first ``TensorBoardLogger`` in ``trainer.loggers`` (only rank 0
    writes), or without one to an own run per fit, ``initwatch_logs/version_<N>`` under
    ``trainer.log_dir`` (``default_root_dir`` when the trainer has none, e.g. ``fast_dev_run``).

    Args:
        scheme: ``"deepnet"``, ``"t-fixup"``, ``"rezero"`` or None (only watch; the right
            choice for a fine-tune). An unknown name raises ``ValueError`` here.
        log_every_n_steps: measure every this many optimizer steps; None: the Trainer's
            ``log_every_n_steps``.
        on_alert: ``"warn"`` (a warning on rank 0 per cause), ``"stop"`` (sets
            ``trainer.should_stop``), ``"raise"`` (:class:`~initwatch.AlertError`) or a callable
            ``f(alert)``.
        scheme_options: keyword arguments for :func:`initwatch.reinit` (``seed``, ``depth``,
            ``stacks``, ``per``, ``norms``, ``allow_pretrained``, ...).
        layers: which modules to watch: ``"default"``, ``"blocks"``, ``"linear"`` or module
            paths / glob patterns relative to the LightningModule.
        logdir: write the statistics to this directory instead (a run of its own).
        rules: thresholds for the rules (a dict), a ``Rules`` object, or False for none.
        update_sample: coordinates sampled per tensor to estimate the update ratio.
        pretrained: whether the weights are trained (a fine-tune). None (default): decided
            from the weights themselves and loading markers
            (:func:`initwatch.decide_pretrained`), so a ``load_state_dict`` /
            ``load_from_checkpoint`` / ``safetensors`` load counts like ``from_pretrained``;
            True / False decide it: a scheme is refused on pretrained weights, and the
            fine-tune thresholds and remedies apply to them.
        anatomy: for custom models, ``initwatch.inspect(module, blocks=..., roles=...)``.
        dense_start: measure every optimizer step for the first this many steps of each fit
            and after an lr jump (default 20; 0: off).
        max_interval: measure at least every this many optimizer steps, however large
            ``log_every_n_steps`` is (default 10; None: ``log_every_n_steps`` only).

    Attributes:
        watch: the :class:`~initwatch.Watch` while a fit runs (None before and after: it is
            closed and released at the fit's end).
        frames, last_frame: the most recent frames of the current (or last) fit; they stay
            after it ends.
        context: the :class:`~initwatch.RunContext` the rules and remedies see (framework,
            family, layout, depth, scheme, optimizer, lr, base lr and warmup, clipping,
            precision, fine-tune) of the current (or last) fit; None before the first.
        alerts: the alerts of the current (or last) fit, oldest first; each ``fit`` starts
            with a fresh history, and ``fit(ckpt_path=...)`` restores the checkpoint's.
        report: the :class:`~initwatch.ReinitReport` of the scheme application, or None.
        scheme_outcome: a :class:`SchemeOutcome`.
        stopping_reason: an :class:`InitWatchStoppingReason`.

    Raises:
        UnsupportedStrategyError: DeepSpeed and XLA strategies, FSDPStrategy with
            ``use_orig_params=False`` or a hybrid sharding strategy, and fp16 with a fused
            optimizer (gradients still scaled in the hook); a scheme with ``ddp_spawn`` /
            ``ddp_fork`` / ``ddp_notebook`` (the parent's module would not carry it after
            ``fit()``). FSDPStrategy and
            ModelParallelStrategy are supported with exact statistics (docs/sharded.md).
        PretrainedWeightsError: a scheme on weights that look trained or were loaded from a
            checkpoint; use ``scheme=None`` to fine-tune with the monitor, or
            ``pretrained=False`` if the weights are an initialization.
        InitWatchError: at the first measured step, when no forward hook ran although the
            model did (a graph compiled before the hooks were attached): the scheme is not
            live; ``scheme_outcome`` is then ``NOT_LIVE``.

    Example::

        >>> import tempfile, torch, lightning as L
        >>> from torch import nn
        >>> from initwatch.integrations.lightning import InitWatch
        >>> class Encoder(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        ...         self.encoder = nn.TransformerEncoder(layer, num_layers=4)
        ...     def training_step(self, batch, batch_idx):
        ...         return nn.functional.mse_loss(self.encoder(batch), batch.flip(1))
        ...     def configure_optimizers(self):
        ...         return torch.optim.Adam(self.parameters(), lr=1e-3)
        >>> watch = InitWatch(scheme="deepnet", log_every_n_steps=2)
        >>> trainer = L.Trainer(max_steps=4, callbacks=[watch], default_root_dir=tempfile.mkdtemp(),
        ...                     enable_checkpointing=False, enable_progress_bar=False,
        ...                     enable_model_summary=False)
        >>> trainer.fit(Encoder(), torch.utils.data.DataLoader(torch.randn(8, 5, 16), batch_size=2))
        >>> watch.report.scheme, watch.scheme_outcome.name, watch.alerts
        ('deepnet', 'APPLIED', [])
    """

    def __init__(
        self,
        scheme: str | None = None,
        log_every_n_steps: int | None = None,
        on_alert: OnAlertSpec = "warn",
        *,
        scheme_options: Mapping[str, Any] | None = None,
        layers: LayersSpec = "default",
        logdir: str | os.PathLike[str] | None = None,
        rules: RulesSpec = None,
        update_sample: int = 1024,
        anatomy: Anatomy | None = None,
        dense_start: int = DENSE_START,
        max_interval: int | None = MAX_INTERVAL,
        pretrained: bool | None = None,
    ) -> None:
        super().__init__()
        self._configure(
            scheme,
            log_every_n_steps,
            "log_every_n_steps",
            on_alert,
            scheme_options,
            layers,
            logdir,
            rules,
            update_sample,
            anatomy,
            dense_start,
            max_interval,
            pretrained=pretrained,
        )
        self.log_every_n_steps = log_every_n_steps
        self.scheme_outcome = SchemeOutcome.NO_SCHEME
        self.stopping_reason = InitWatchStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None
        self._anatomies: dict[int, Anatomy | None] = {}
        self._restored = False  # load_state_dict ran since the last fit (a resume)
        self._resume_guard: Any = None
        self._scale_before: float | None = None
        self._begun: int | None = None  # the step begun at its first micro-batch
        self._global_step_at_begin: int | None = None

    # ---- public state -------------------------------------------------------------------

    @property
    @override
    def state_key(self) -> str:
        # The scheme only: a resume with another log_every_n_steps, layers or logdir keeps the
        # alert history. (Two InitWatch with one scheme are refused by Lightning for sharing a
        # state_key; with different schemes, by setup: one watching callback per Trainer.)
        return self._generate_state_key(scheme=self.scheme)

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        # Checkpoints of initwatch <= 0.1.0 keyed the state by the other settings as well.
        start = self.state_key[:-1]  # "InitWatch{'scheme': 'rezero'" of "...{'scheme': ...}"
        older = [k for k in states if isinstance(k, str) and k.startswith(start + ", ")]
        if older:
            self.load_state_dict(states[older[0]])

    @override
    def state_dict(self) -> dict[str, Any]:
        """Plain data (weights-only-loadable): the alert history and the rules' state."""
        return self._saved_state()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore_state(state_dict)
        self._restored = True

    # ---- setup: the scheme ----------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        _refuse_strategy(trainer)
        _refuse_spawn(trainer, self.scheme)
        refuse_second_watcher(_callbacks(trainer), self)
        if not _is_sharded(trainer):  # (sharded strategies load their own way)
            # Checked before the scheme is applied, so a refused fit leaves the model alone.
            ckpt = _ckpt_path_of_this_fit(trainer)
            keys = _checkpoint_keys(ckpt) if ckpt is not None else None
            if keys is not None:
                will = self.scheme or applied_scheme(pl_module) or "none"
                check_checkpoint(pl_module, keys, will, "InitWatch(scheme={scheme!r})")
            self._guard_resume(pl_module)
        self._apply_scheme(trainer, pl_module)
        self._early = _is_fsdp1(trainer)
        if self._early:  # FSDP1 wraps after setup: attach to the original parameters now
            self._start(trainer, pl_module)

    def _apply_scheme(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.scheme is None:
            self.scheme_outcome = SchemeOutcome.NO_SCHEME
            return
        anatomy = read_anatomy(pl_module, self.anatomy)
        if anatomy is None and _overrides(pl_module, "configure_model"):
            raise InitWatchError(
                f"InitWatch(scheme={self.scheme!r}) found no transformer blocks in "
                f"{type(pl_module).__name__} at setup: layers built in configure_model() do not "
                "exist yet when callbacks run setup, and no callback hook runs between "
                "configure_model() and configure_optimizers(). Apply the scheme yourself in "
                "configure_model(), after building the layers and before any fully_shard, with "
                f"the same seed on every rank, e.g. `initwatch.reinit(self.model, {self.scheme!r}"
                ", seed=0)`, and pass InitWatch(scheme=None) to watch the run."
            )
        report = apply_scheme(
            pl_module,
            self.scheme,
            self.scheme_options,
            anatomy=anatomy,
            framework="InitWatch",
            pretrained=self.pretrained,
        )
        if report is None:
            self.scheme_outcome = SchemeOutcome.ALREADY_PRESENT
            rank_zero_info(f"InitWatch: {self.scheme} {self.scheme_outcome.value}")
            return
        if _is_sharded(trainer):  # FSDP does not broadcast: every rank gets rank 0's draw
            broadcast_from_rank0(pl_module)
        self.report = report
        self.scheme_outcome = SchemeOutcome.APPLIED
        self._anatomies[id(pl_module)] = anatomy
        rank_zero_info(f"InitWatch: {describe_report(report)}")

    def _guard_resume(self, pl_module: pl.LightningModule | None) -> None:
        """Between setup and on_fit_start Lightning restores ``fit(ckpt_path=...)``: a
        checkpoint of another scheme gets an error that names it (see ``guard_resume``)."""
        if self._resume_guard is not None:
            self._resume_guard.remove()
            self._resume_guard = None
        if pl_module is not None:
            self._resume_guard = guard_resume(pl_module, "InitWatch(scheme={scheme!r})")

    # ---- fit: attach the Watch --------------------------------------------------------------

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here (not on_train_start): before the sanity check runs a possibly compiled forward.
        self._guard_resume(None)  # the checkpoint, if any, is loaded
        _refuse_fused_scaling(trainer)
        self.stopping_reason = InitWatchStoppingReason.NOT_STOPPED
        self.stopping_reason_message = None
        if getattr(self, "_early", False):  # attached at setup, before the FSDP1 wrap
            self._early = False
            self._restored = False
            return
        self._start(trainer, pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        watch = self._open
        if watch is None or not trainer.optimizers:
            return
        watch.check_optimizer(trainer.optimizers)  # parameters they miss
        if not trainer.lr_scheduler_configs and watch.context.base_lr is None:
            # No scheduler: Lightning keeps the optimizer's lr, so it is the peak, with no warmup.
            groups = trainer.optimizers[0].param_groups
            if groups and isinstance(groups[0].get("lr"), (int, float)):
                watch.context.base_lr = float(groups[0]["lr"])
                watch.context.warmup_steps = 0

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        anatomy = self._anatomies.get(id(pl_module)) or read_anatomy(pl_module, self.anatomy)
        if not self._restored:  # a new fit, not a resume: a fresh alert history
            self._fresh_state()
        self._restored = False
        writer, logdir = self._output(trainer)
        context = base_context(
            pl_module,
            scheme=self.scheme,
            framework="lightning",
            precision=str(trainer.precision),
            max_steps=_planned_steps(trainer),
            pretrained=self.pretrained,
        )
        clip = trainer.gradient_clip_val
        context.grad_clip = float(clip) if clip is not None and float(clip) > 0 else None
        context.grad_clip_algorithm = _clip_algorithm(trainer) if context.grad_clip else None
        self._begun = None
        self._start_watch(
            pl_module,
            context=context,
            every=self.log_every_n_steps or _log_every_n_steps(trainer),
            writer=writer,
            logdir=logdir,
            anatomy=anatomy,
        )

    def _output(self, trainer: pl.Trainer) -> tuple[Any, str | None]:
        """(writer, logdir): the TensorBoardLogger's writer, or a directory for an own run.

        Decided on every rank alike (``trainer.log_dir`` is a collective); only rank 0 writes.
        """
        if self.logdir is not None:
            return None, self.logdir
        tb = next((lg for lg in trainer.loggers if _is_tensorboard_logger(lg)), None)
        if tb is not None:
            experiment = getattr(tb, "experiment", None) if trainer.is_global_zero else None
            if is_summary_writer(experiment):
                return experiment, None
            return None, own_run_dir(tb.log_dir, trainer.default_root_dir)
        # No TensorBoardLogger: an own run per fit; fast_dev_run's log_dir is None.
        return None, own_run_dir(trainer.log_dir, trainer.default_root_dir)

    # ---- steps --------------------------------------------------------------------------

    @override
    @step_hook
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The first micro-batch of an optimizer step: the step count has moved on since the last.
        watch, step = self._open, _logged_step(trainer)
        if watch is not None and self._begun != step:
            # Lightning writes its own scalars where (step + 1) % log_every_n_steps == 0; measure
            # those steps (same x-axis values), and step 0: the model as initialized.
            watch.begin_step(step, measure=step == 0 or (step + 1) % watch.every == 0)
            self._begun, self._global_step_at_begin = step, trainer.global_step

    @override
    @step_hook
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        watch = self._open
        if watch is None:
            return
        if watch.is_logging and self._scale_before is None:
            scaler = _scaler(trainer)
            self._scale_before = float(scaler.get_scale()) if scaler is not None else None
        watch.before_optimizer_step(optimizer, scheduler=_step_scheduler(trainer))

    @override
    @step_hook
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        watch = self._open
        if watch is None:
            return
        measured = watch.is_logging
        if measured:
            watch.add_loss(_step_loss(trainer, pl_module, outputs))
        if self._begun is None or trainer.global_step == self._global_step_at_begin:
            return  # accumulating: the optimizer has not stepped yet
        watch.end_step(skipped=measured and self._step_was_skipped(trainer))
        if measured and watch.hooks_live is False and self.scheme is not None:
            self.scheme_outcome = SchemeOutcome.NOT_LIVE
            watch.check_scheme_live(self.scheme, "InitWatch")
        # Every rank makes this call on the same steps: one collective per logging step.
        if measured and self.on_alert == "stop":
            stop = trainer.strategy.reduce_boolean_decision(watch.should_stop, all=False)
            if stop and not trainer.should_stop:
                trainer.should_stop = True
                self.stopping_reason = InitWatchStoppingReason.ALERT
                last = self.alerts[-1] if self.alerts else None
                self.stopping_reason_message = f"InitWatch stopped training: {last}"
                rank_zero_warn(self.stopping_reason_message)

    def _step_was_skipped(self, trainer: pl.Trainer) -> bool:
        """True when the AMP GradScaler skipped the step (it lowers its scale when it does)."""
        scaler = _scaler(trainer)
        before, self._scale_before = self._scale_before, None
        return scaler is not None and before is not None and float(scaler.get_scale()) < before

    # ---- teardown -----------------------------------------------------------------------

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._guard_resume(None)
            self._close_watch()

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._guard_resume(None)
        self._close_watch()


def _step_loss(trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> Any:
    """The loss ``training_step`` returned: under automatic optimization Lightning hands
    callbacks the closure loss, divided by ``accumulate_grad_batches``; undo that."""
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    n = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    if loss is None or n == 1 or not pl_module.automatic_optimization:
        return loss
    return loss * n if torch.is_tensor(loss) else float(loss) * n


def _ckpt_path_of_this_fit(trainer: pl.Trainer) -> Any:
    """The ``ckpt_path`` that ``fit`` will restore after ``setup``, or None.

    Lightning calls the setup hooks before it restores the checkpoint, and keeps the path it
    will restore only as a local of ``Trainer._run`` until then (``trainer.ckpt_path`` is
    still None in ``setup`` unless it was set by hand). Reading it here lets a resume of
    another scheme's checkpoint be refused before the scheme touches the model. It is read
    from the frame of this trainer's ``_run`` (a bounded walk, checked by identity); when
    that frame is not found, ``trainer.ckpt_path`` is used, and the load-time check
    (``guard_resume``) still refuses the mismatch, after the scheme was applied.
    """
    frame: FrameType | None = sys._getframe(1)
    for _ in range(40):
        if frame is None:
            break
        if frame.f_code.co_name == "_run" and frame.f_locals.get("self") is trainer:
            return frame.f_locals.get("ckpt_path")
        frame = frame.f_back
    return trainer.ckpt_path


def _checkpoint_keys(path: Any) -> list[str] | None:
    """The state-dict keys of a local Lightning checkpoint (memory-mapped), None if unreadable:
    the load-time check (``guard_resume``) still runs then."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:
        return None
    state = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    return list(state) if isinstance(state, Mapping) else None


def _is_tensorboard_logger(logger: Any) -> bool:
    # By class name: lightning.pytorch and pytorch_lightning have separate class trees.
    return any(c.__name__ == "TensorBoardLogger" for c in type(logger).__mro__)


def _overrides(module: Any, name: str) -> bool:
    for cls in type(module).__mro__:
        if cls.__name__ == "LightningModule":
            return False
        if name in cls.__dict__:
            return True
    return False


def _logged_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs its scalars at: batches that stepped an optimizer (equal to
    ``global_step`` with one optimizer; half of it with two under manual optimization)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    stepped = getattr(loop, "_batches_that_stepped", None)
    return int(stepped) if isinstance(stepped, int) else int(trainer.global_step)


def _clip_algorithm(trainer: pl.Trainer) -> str:
    algorithm = trainer.gradient_clip_algorithm
    return str(getattr(algorithm, "value", algorithm) or "norm")


def _callbacks(trainer: pl.Trainer) -> list[Any]:
    """The Trainer's callbacks (an attribute its stubs do not declare)."""
    return list(getattr(trainer, "callbacks", []))


def _log_every_n_steps(trainer: pl.Trainer) -> int:
    """The Trainer's ``log_every_n_steps`` (an attribute its stubs do not declare)."""
    return int(getattr(trainer, "log_every_n_steps", 50) or 50)


def _step_scheduler(trainer: pl.Trainer) -> Any:
    """The first per-step (``interval="step"``) lr scheduler, None without one: the Watch
    reads the warmup and the peak lr from it."""
    config = trainer.lr_scheduler_configs[0] if trainer.lr_scheduler_configs else None
    return config.scheduler if config is not None and config.interval == "step" else None


def _scaler(trainer: pl.Trainer) -> Any:
    return getattr(trainer.precision_plugin, "scaler", None)


def _max_steps(trainer: pl.Trainer) -> int | None:
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    return None


def _is_sharded(trainer: pl.Trainer) -> bool:
    return type(trainer.strategy).__name__.startswith(("FSDP", "ModelParallel")) or _is_fsdp1(
        trainer
    )


def _is_fsdp1(trainer: pl.Trainer) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(trainer.strategy, FSDPStrategy)


def _planned_steps(trainer: pl.Trainer) -> int | None:
    """``max_steps``, else the optimizer steps ``max_epochs`` makes (None when unbounded)."""
    steps = _max_steps(trainer)
    if steps is not None:
        return steps
    try:
        estimated = float(trainer.estimated_stepping_batches)
    except Exception:  # no dataloader length (iterable datasets), or not computable yet
        return None
    return int(estimated) if math.isfinite(estimated) and estimated > 0 else None


def _refuse_spawn(trainer: pl.Trainer, scheme: str | None) -> None:
    """``ddp_spawn`` / ``ddp_fork`` / ``ddp_notebook`` run ``setup`` in worker processes and
    copy the trained weights back into the parent with ``strict=False``: the parent's module
    never gets the scheme's hooks, gates or norm removals, so after ``fit()`` it would compute
    a different function."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if scheme is None or type(launcher).__name__ != "_MultiProcessingLauncher":
        return
    method = getattr(launcher, "_start_method", "spawn")
    raise UnsupportedStrategyError(
        f"InitWatch(scheme={scheme!r}) with a multiprocessing strategy (start method "
        f"{method!r}: ddp_spawn, ddp_fork or ddp_notebook): the scheme is applied in the worker "
        "processes only, and Lightning copies the trained weights back into your module "
        "without the scheme's structure (DeepNorm residuals, ReZero gates, removed norms), so "
        "the model you hold after fit() would compute a different function. Use "
        "strategy='ddp' (supported), or apply the scheme before fit with a fixed seed "
        f"(`initwatch.reinit(module, {scheme!r}, seed=0)`, in the parent, before "
        "Trainer.fit) and pass InitWatch(scheme=None)."
    )


def _refuse_strategy(trainer: pl.Trainer) -> None:
    name = type(trainer.strategy).__name__
    if "deepspeed" in name.lower():
        raise UnsupportedStrategyError(
            f"InitWatch does not support {name} yet: Lightning's DeepSpeedStrategy runs only on "
            "CUDA GPUs, where initwatch's DeepSpeed path has not been verified, so it is refused "
            "rather than risk wrong per-layer statistics. DeepSpeed ZeRO-1/2/3 is supported with "
            "exact statistics in a plain loop (initwatch.Watch(engine)) and under the Hugging "
            "Face Trainer (see docs/sharded.md); in Lightning use FSDPStrategy or "
            "ModelParallelStrategy."
        )
    if any(s.lower() in name.lower() for s in _REFUSED):
        raise UnsupportedStrategyError(
            f"InitWatch does not support {name} yet: its parameters and gradients are "
            "partitioned in a way initwatch does not read, so per-layer statistics would be "
            "wrong. Use strategy='ddp', FSDPStrategy or ModelParallelStrategy (exact "
            "statistics, see docs/sharded.md), or train without InitWatch."
        )
    if _is_fsdp1(trainer):
        kwargs: dict[str, Any] = getattr(trainer.strategy, "kwargs", {})
        strategy = str(getattr(trainer.strategy, "sharding_strategy", "FULL_SHARD"))
        if not kwargs.get("use_orig_params", True):
            raise UnsupportedStrategyError(
                "InitWatch under FSDPStrategy needs use_orig_params=True (Lightning's default): "
                "with use_orig_params=False only FSDP's flat parameter is visible."
            )
        if "HYBRID" in strategy.upper():
            raise UnsupportedStrategyError(
                f"InitWatch does not support FSDPStrategy(sharding_strategy={strategy}): use "
                "FULL_SHARD, SHARD_GRAD_OP or NO_SHARD, or ModelParallelStrategy (fully_shard "
                "with an HSDP mesh)."
            )


def _refuse_fused_scaling(trainer: pl.Trainer) -> None:
    if _scaler(trainer) is None:
        return
    fused = [
        type(o).__name__
        for o in trainer.optimizers
        if getattr(o, "_step_supports_amp_scaling", False)
    ]
    if fused:
        raise UnsupportedStrategyError(
            f"InitWatch cannot read unscaled gradients with a fused optimizer ({fused[0]}) under "
            "fp16 mixed precision: Lightning leaves its gradients scaled in "
            "on_before_optimizer_step. Create the optimizer with fused=False, or train with "
            "precision='bf16-mixed'."
        )


__all__ = ["InitWatch", "InitWatchStoppingReason", "SchemeOutcome"]
