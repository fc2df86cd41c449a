"""Re-initialize a transformer when the Hugging Face Trainer is built and watch its layers train."""

from __future__ import annotations

import logging
import os
import sys
import weakref
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from torch import nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from typing_extensions import override

from initwatch import zero
from initwatch.anatomy import Anatomy
from initwatch.errors import InitWatchError
from initwatch.integrations._common import (
    DENSE_START,
    MAX_INTERVAL,
    AdapterSettings,
    UnsupportedStrategyError,
    apply_scheme,
    base_context,
    describe_report,
    guard_resume,
    own_run_dir,
    read_anatomy,
    refuse_second_watcher,
    step_hook,
)
from initwatch.sharding import broadcast_from_rank0
from initwatch.vocabulary import LayersSpec, OnAlertSpec, RulesSpec

if TYPE_CHECKING:
    from initwatch.watch import Watch

log = logging.getLogger("initwatch")

PRECLIP_TAG = "initwatch/global/grad_norm_preclip"


class InitWatchCallback(TrainerCallback, ExportableState, AdapterSettings):
    r"""Apply a re-initialization scheme when the Trainer is built, and watch per-layer
    statistics while it trains.

    Pass it to ``Trainer(callbacks=[...])``. The scheme is applied in ``on_init_end``: the
    optimizer is created later (so ReZero's new parameters are trained), the DDP wrap later
    broadcasts rank 0's weights, and ``train(resume_from_checkpoint=...)`` later loads the saved
    weights into the re-initialized structure. A callback that misses ``on_init_end``
    (``trainer.add_callback``) or a model that ``model_init`` replaces is refused with an
    error: applying a scheme at ``on_train_begin`` would leave new parameters out of the
    optimizer and destroy resumed weights.

    Measured are every ``logging_steps``-th optimizer step (the Trainer's cadence and
    numbering: the step counted after its increment, like ``train/loss``), every step of the
    first ``dense_start`` steps of each ``train()`` (and after an lr jump), and at least every
    ``max_interval``-th step: activations of all micro-batches, gradients at
    ``on_pre_optimizer_step`` (accumulated, unscaled, after the DDP all-reduce) and the update
    the optimizer made. The Trainer clips before that hook; the callback reads the pre-clip
    global norm from the Trainer's own clipping call (``accelerator.clip_grad_norm_``) and the
    rules see the gradients as they were **before clipping** (``grad_norm_global`` is the
    pre-clip norm, per-tensor norms are scaled back by the clip factor; the clipped norm is
    ``grad_norm_clipped``). The pre-clip norm the Trainer logs (``logs["grad_norm"]``) is also
    written as ``initwatch/global/grad_norm_preclip`` (``train/grad_norm`` in the Trainer's own
    run). With ``report_to="tensorboard"`` the statistics go into the Trainer's run directory;
    otherwise into an own run per ``train()``, ``<output_dir>/initwatch_logs/version_<N>``.
    Only world process zero writes.

    Args:
        scheme: ``"deepnet"``, ``"t-fixup"``, ``"rezero"`` or None (only watch; the right
            choice for a fine-tune). An unknown name raises ``ValueError`` here.
        logging_steps: measure every this many optimizer steps; None: ``args.logging_steps``.
        on_alert: ``"warn"``, ``"stop"`` (sets ``control.should_training_stop``), ``"raise"``
            or a callable ``f(alert)``.
        scheme_options: keyword arguments for :func:`initwatch.reinit`.
        layers: which modules to watch: ``"default"``, ``"blocks"``, ``"linear"`` or module
            paths / glob patterns.
        logdir: write the statistics to this directory instead.
        rules: thresholds for the rules (a dict), a ``Rules`` object, or False for none.
        update_sample: coordinates sampled per tensor to estimate the update ratio.
        pretrained: whether the weights are trained (a fine-tune). None (default): decided
            from the weights themselves and loading markers
            (:func:`initwatch.decide_pretrained`), so a ``load_state_dict`` /
            ``load_from_checkpoint`` / ``safetensors`` load counts like ``from_pretrained``;
            True / False decide it: a scheme is refused on pretrained weights, and the
            fine-tune thresholds and remedies apply to them.
        anatomy: for custom models, ``initwatch.inspect(model, blocks=..., roles=...)``.
        dense_start: measure every optimizer step for the first this many steps of each
            ``train()`` and after an lr jump (default 20; 0: off).
        max_interval: measure at least every this many optimizer steps, however large
            ``logging_steps`` is (default 10; None: ``logging_steps`` only).

    Attributes:
        watch: the :class:`~initwatch.Watch` while ``train()`` runs (None before and after:
            it is closed and released at ``on_train_end``).
        frames, last_frame: the most recent frames of the current (or last) ``train()``; they
            stay after it ends.
        context: the :class:`~initwatch.RunContext` the rules and remedies see (framework,
            family, layout, depth, scheme, optimizer, lr, base lr and warmup, clipping,
            precision, fine-tune) of the current (or last) ``train()``; None before the first.
        alerts: the alerts of the current (or last) ``train()``, oldest first. Each ``train()``
            (each trial of ``hyperparameter_search``, each ``model_init`` model) starts with a
            fresh history; ``train(resume_from_checkpoint=...)`` restores the checkpoint's,
            wherever it lives: the callback is an ``ExportableState``, so the Trainer saves its
            state in each checkpoint's ``trainer_state.json`` (``stateful_callbacks``).
        report: the :class:`~initwatch.ReinitReport` of the scheme application, or None.

    Raises:
        UnsupportedStrategyError: FSDP1, or DeepSpeed fp16 (FSDP2 and DeepSpeed ZeRO-1/2/3
            in fp32/bf16 are supported with exact statistics, docs/sharded.md).
        PretrainedWeightsError: a scheme on weights that look trained or were loaded from a
            checkpoint; use ``scheme=None`` to fine-tune with the monitor, or
            ``pretrained=False`` if the weights are an initialization.
        InitWatchError: the callback missed ``on_init_end``, the model comes from
            ``model_init``, or ReZero with an optimizer built before the Trainer.

    Example::

        >>> import tempfile, torch
        >>> from transformers import PrinterCallback, Trainer, TrainingArguments
        >>> from initwatch import zoo
        >>> from initwatch.integrations.transformers import InitWatchCallback
        >>> model = zoo.build("gpt2", layers=2, hidden=32)
        >>> data = [{"input_ids": torch.randint(0, 96, (8,)), "labels": torch.randint(0, 96, (8,))}
        ...         for _ in range(8)]
        >>> args = TrainingArguments(tempfile.mkdtemp(), max_steps=4, per_device_train_batch_size=2,
        ...                          logging_steps=2, report_to="none", save_strategy="no",
        ...                          use_cpu=True, disable_tqdm=True)
        >>> watch = InitWatchCallback(scheme="t-fixup")
        >>> trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[watch])
        >>> watch.report.scheme
        't-fixup'
        >>> trainer.remove_callback(PrinterCallback)  # keep this example quiet
        >>> _ = trainer.train()
        >>> isinstance(watch.alerts, list)
        True
    """

    def __init__(
        self,
        scheme: str | None = None,
        logging_steps: int | None = None,
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
        self._configure(
            scheme,
            logging_steps,
            "logging_steps",
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
        self.logging_steps = logging_steps
        self._model: weakref.ref[nn.Module] | None = None  # the model seen at on_init_end
        self._trainer: weakref.ref[Trainer] | None = None
        self._anatomy: Anatomy | None = None
        self._writer: Any = None
        self._loss_hook: Any = None
        self._skipped = False
        self._preclip: Any = None
        self._clip_patch: tuple[Any, Any] | None = None
        self._resume_guard: Any = None
        self._engine_hook: Any = None  # DeepSpeed: the Watch reads when engine.step() starts

    # ---- init: the scheme -----------------------------------------------------------------

    @override
    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model, trainer = kwargs.get("model"), _calling_trainer(self)
        self._trainer = weakref.ref(trainer) if trainer is not None else None
        _refuse_strategy(args, trainer)
        if trainer is not None:  # before anything is applied: a refusal leaves the model alone
            refuse_second_watcher(trainer.callback_handler.callbacks, self)
        if model is None:
            return
        self._model = weakref.ref(model)
        self._guard_resume(model)  # until train(resume_from_checkpoint=...) has loaded
        if self.scheme is None:
            return
        if trainer is not None and trainer.model_init is not None:
            raise InitWatchError(_MODEL_INIT_HELP.format(scheme=self.scheme))
        if kwargs.get("optimizer") is not None and self.scheme == "rezero":
            raise InitWatchError(
                "InitWatchCallback(scheme='rezero') adds trainable parameters, but the optimizer "
                "passed with Trainer(optimizers=...) was built before them and would never train "
                "them. Let the Trainer create the optimizer (drop optimizers=), or call "
                "initwatch.reinit(model, 'rezero') before building your optimizer and pass "
                "InitWatchCallback(scheme=None)."
            )
        self._anatomy = read_anatomy(model, self.anatomy)
        self.report = apply_scheme(
            model,
            self.scheme,
            self.scheme_options,
            anatomy=self._anatomy,
            framework="InitWatchCallback",
            pretrained=self.pretrained,
        )
        if self.report is not None and _fsdp_version(args, trainer):
            broadcast_from_rank0(model)  # FSDP does not: every rank shards rank 0's draw
        if state.is_world_process_zero:
            log.info("InitWatchCallback: %s", describe_report(self.report))

    # ---- train: attach the Watch ------------------------------------------------------------

    @override
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model: nn.Module = kwargs["model"]
        self._guard_resume(None)
        seen = self._model() if self._model is not None else None
        if self.scheme is not None and seen is None:
            raise InitWatchError(_MISSED_INIT_HELP.format(scheme=self.scheme))
        if self.scheme is not None and seen is not model:
            raise InitWatchError(_MODEL_INIT_HELP.format(scheme=self.scheme))
        trainer = (self._trainer() if self._trainer is not None else None) or _calling_trainer(self)
        if trainer is None:
            log.warning(_NO_TRAINER_HELP)
        _refuse_strategy(args, trainer)
        rank0 = state.is_world_process_zero
        self._writer = _open_writer(self._logdir(args, trainer)) if rank0 else None
        self._fresh_state()
        self._restore_state(_load_state(state))  # fresh unless this train() resumes
        anatomy = self._anatomy if seen is model else None
        engine = _deepspeed_engine(trainer)
        zero.refuse_engine(engine)
        with zero.gathered(model):  # ZeRO-3: the context from the full tensors, once
            context = base_context(
                model,
                scheme=self.scheme,
                framework="transformers",
                precision="bf16-mixed" if args.bf16 else "16-mixed" if args.fp16 else "32",
                max_steps=state.max_steps,
                pretrained=self.pretrained,
            )
            anatomy = anatomy or read_anatomy(model, self.anatomy)
        # What the lr scheduler does not tell (an unknown schedule) comes from the arguments.
        context.base_lr = args.learning_rate
        context.warmup_steps = args.get_warmup_steps(state.max_steps)
        clip = args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None
        context.grad_clip = clip
        context.grad_clip_algorithm = "norm" if clip is not None else None
        self._release_loss()
        watch = self._start_watch(
            model,
            context=context,
            every=self.logging_steps or state.logging_steps,
            writer=self._writer,
            anatomy=anatomy,
            # the loss the Trainer logs: the sum of what training_step returns; without the
            # Trainer, the model's own loss averaged over micro-batches
            micro_batch_loss="sum" if trainer is not None else "mean",
        )
        self._hook_engine(engine)
        if trainer is not None:
            self._loss_hook = _TrainingStepCapture(trainer, watch)
        else:
            self._loss_hook = model.register_forward_hook(self._capture_loss)
        self._watch_clipping(trainer)
        if kwargs.get("optimizer") is not None:
            watch.check_optimizer(kwargs["optimizer"])  # parameters it misses

    def _hook_engine(self, engine: Any) -> None:
        """Under DeepSpeed accelerate runs ``engine.step()`` inside ``accelerator.backward``,
        before ``on_pre_optimizer_step``: the gradients are gone by then (ZeRO-3 has even
        updated the weights), so the Watch reads them when ``engine.step()`` starts (before
        the engine clips them: pre-clip values, as on the other paths)."""
        self._unhook_engine()
        if engine is None:
            return

        def pre() -> None:
            watch = self._open
            if watch is not None and watch.is_logging:
                watch.before_optimizer_step(engine)

        self._engine_hook = zero.EngineStepHook(engine, pre, lambda applied: None)

    def _unhook_engine(self) -> None:
        if self._engine_hook is not None:
            self._engine_hook.remove()
            self._engine_hook = None

    def _watch_clipping(self, trainer: Trainer | None) -> None:
        """Capture the pre-clip global norm the Trainer computes right before
        ``on_pre_optimizer_step`` (``accelerator.clip_grad_norm_`` returns it), on measured
        steps only; the instance attribute is restored at :meth:`close`."""
        self._unwatch_clipping()
        accelerator = getattr(trainer, "accelerator", None)
        original = getattr(accelerator, "clip_grad_norm_", None)
        if original is None:
            return

        def clip_grad_norm_(*args: Any, **kwargs: Any) -> Any:
            norm = original(*args, **kwargs)
            if self.watch is not None and self.watch.is_logging:
                self._preclip = norm
            return norm

        setattr(accelerator, "clip_grad_norm_", clip_grad_norm_)  # noqa: B010  (Any | None)
        self._clip_patch = (accelerator, original)

    def _unwatch_clipping(self) -> None:
        if self._clip_patch is not None:
            accelerator, original = self._clip_patch
            self._clip_patch = None
            if accelerator.__dict__.get("clip_grad_norm_") is not None:
                accelerator.clip_grad_norm_ = original

    def _guard_resume(self, model: nn.Module | None) -> None:
        """A checkpoint of another scheme loaded by ``train(resume_from_checkpoint=...)`` (a
        non-strict load in the Trainer) raises an error naming it (see ``guard_resume``)."""
        if self._resume_guard is not None:
            self._resume_guard.remove()
            self._resume_guard = None
        if model is not None:
            self._resume_guard = guard_resume(model, "InitWatchCallback(scheme={scheme!r})")

    def _logdir(self, args: TrainingArguments, trainer: Trainer | None) -> str:
        """The TensorBoardCallback's run directory, else a fresh own run per ``train()``:
        ``<output_dir>/initwatch_logs/version_<N>``."""
        if self.logdir is not None:
            return self.logdir
        callbacks = trainer.callback_handler.callbacks if trainer is not None else []
        for cb in callbacks:
            if type(cb).__name__ == "TensorBoardCallback":
                writer = getattr(cb, "tb_writer", None)
                found = getattr(writer, "log_dir", None) or getattr(cb, "logging_dir", None)
                if found:
                    return str(found)
        return own_run_dir(args.output_dir)

    def _capture_loss(self, module: nn.Module, args: Any, output: Any) -> None:
        watch = self.watch
        if watch is None or not watch.is_logging or not module.training:
            return
        loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        watch.add_loss(loss)

    def _release_loss(self) -> None:
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None

    # ---- steps --------------------------------------------------------------------------

    @override
    @step_hook
    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._open is not None:  # numbered as the Trainer logs: the count after this step
            self._open.begin_step(state.global_step + 1)
        self._skipped = False
        self._preclip = None

    @override
    @step_hook
    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        watch = self._open
        if watch is None:
            return
        preclip, self._preclip = self._preclip, None  # the Trainer clipped already
        if self._engine_hook is not None:  # read before the engine clipped: already pre-clip
            preclip = None
        watch.before_optimizer_step(
            kwargs.get("optimizer"),
            grad_norm_preclip=preclip if watch.context.clipping else None,
            scheduler=kwargs.get("lr_scheduler"),
        )

    @override
    @step_hook
    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # accelerate's AcceleratedOptimizer knows whether the GradScaler skipped the step.
        self._skipped = bool(getattr(kwargs.get("optimizer"), "step_was_skipped", False))

    @override
    @step_hook
    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        watch = self._open
        if watch is None:
            return
        measured = watch.is_logging
        try:
            watch.end_step(skipped=measured and self._skipped)
        except BaseException:  # on_alert="raise" or the user's function: stop, hooks removed
            self.close()
            raise
        if measured:
            watch.check_scheme_live(self.scheme, "InitWatchCallback")
        # Every rank makes this call on the same steps: one collective per logging step.
        if measured and self.on_alert == "stop" and _any_process(watch.should_stop):
            control.should_training_stop = True

    @override
    @step_hook
    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        norm = (logs or {}).get("grad_norm")
        if norm is None or self._open is None:
            return
        self._open.context.extra["grad_norm_preclip"] = float(norm)
        if self._writer is not None:
            self._writer.add_scalar(PRECLIP_TAG, float(norm), state.global_step)

    # ---- checkpoints and the end --------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The Trainer's ``ExportableState`` hook: the alert state, saved into each checkpoint's
        ``trainer_state.json`` (read back at ``on_train_begin`` of a resumed ``train()``).

        ``args`` rebuild a monitoring-only callback (``scheme=None``: the checkpoint's weights
        already carry the scheme) for ``restore_callback_states_from_checkpoint=True``, which
        replaces the callback instance: keep it off to keep your ``callback.alerts``.
        """
        args: dict[str, Any] = {"logging_steps": self.logging_steps, "logdir": self.logdir}
        if isinstance(self.on_alert, str):
            args["on_alert"] = self.on_alert
        if isinstance(self.layers, str) or all(isinstance(x, str) for x in self.layers):
            args["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return {"args": args, "attributes": {"_resume_state": self._saved_state()}}

    @override
    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.close()

    def close(self) -> None:
        """Write the summary, remove the hooks and close the writer (idempotent; called at
        ``on_train_end``)."""
        self._guard_resume(None)
        self._release_loss()
        self._unwatch_clipping()
        self._unhook_engine()
        try:
            self._close_watch()
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


_MISSED_INIT_HELP = (
    "InitWatchCallback(scheme={scheme!r}) did not see on_init_end, so the scheme was never "
    "applied; applying it now, at on_train_begin, would leave new parameters out of the "
    "optimizer and overwrite resumed weights. Pass the callback when building the Trainer: "
    "Trainer(..., callbacks=[InitWatchCallback(scheme={scheme!r})]), not trainer.add_callback(). "
    "(add_callback is fine with scheme=None: monitoring only.)"
)
_NO_TRAINER_HELP = (
    "InitWatchCallback found no Trainer calling it: the loss it records is the model's own "
    "loss averaged over micro-batches (not a compute_loss override's), gradient statistics are "
    "read after the Trainer's clipping, and the statistics go to an own run directory. Pass the "
    "callback to a transformers Trainer: Trainer(..., callbacks=[InitWatchCallback()])."
)
_MODEL_INIT_HELP = (
    "InitWatchCallback(scheme={scheme!r}) cannot re-initialize a model built by model_init: "
    "Trainer.train() builds a new model after the callback applied the scheme. Apply it inside "
    "model_init instead, e.g.\n"
    "    def model_init():\n"
    "        model = AutoModelForCausalLM.from_config(config)\n"
    "        initwatch.reinit(model, {scheme!r})\n"
    "        return model\n"
    "and pass InitWatchCallback(scheme=None) to watch the run."
)


class _TrainingStepCapture:
    """Wraps ``trainer.training_step`` (an instance attribute, removed by :meth:`remove`) to hand
    each micro-batch's returned loss to the Watch.

    The Trainer logs the sum of what ``training_step`` returns over an optimizer step's
    micro-batches: the loss its ``compute_loss`` computed (a subclass's own, e.g. TRL's
    ``SFTTrainer``), already divided by the number of micro-batches, or normalized by
    ``num_items_in_batch``. The model's own forward loss is neither under gradient accumulation.
    """

    def __init__(self, trainer: Trainer, watch: Watch) -> None:
        self._trainer = weakref.ref(trainer)
        original = trainer.training_step

        def training_step(*args: Any, **kwargs: Any) -> Any:
            loss = original(*args, **kwargs)
            watch.add_loss(loss)
            return loss

        self._wrapper = training_step
        trainer.training_step = training_step  # type: ignore[method-assign]

    def remove(self) -> None:
        trainer = self._trainer()
        if trainer is not None and trainer.__dict__.get("training_step") is self._wrapper:
            del trainer.training_step


def _calling_trainer(callback: TrainerCallback) -> Trainer | None:
    """The Trainer whose callback handler holds ``callback`` and is calling it now, or None.

    Hugging Face's events carry no trainer: their keyword arguments are the model, optimizer,
    lr scheduler and data loaders, which the hooks use, and ``TrainingArguments`` answers the
    strategy questions. Five facts exist only on the Trainer: the loss its ``training_step``
    returns (a subclass's ``compute_loss``, scaled for gradient accumulation and
    ``num_items_in_batch``), the pre-clip norm its accelerator's ``clip_grad_norm_`` returns
    (the gradients are clipped before ``on_pre_optimizer_step``), its ``TensorBoardCallback``'s
    run directory (named by the time), its DeepSpeed engine and ``model_init``. Nothing the
    Trainer hands a callback leads to it (a search of the heap for it took 0.4-0.5 s with
    GPT-2 loaded), so this reads the calling frames: the handler is called from a Trainer
    method a few frames up. Only a Trainer that holds this very callback is accepted, so a
    Trainer built inside another one's hooks is never taken. It runs at ``on_init_end`` and
    ``on_train_begin`` only. Without a Trainer (events called by hand) the callback falls
    back to the model's own loss and the clipped norms, and logs that it does.
    """
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_FRAMES):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer) and _holds(candidate, callback):
            return candidate
        frame = frame.f_back
    return None


_FRAMES = 40  # how far up the calling frames the Trainer is looked for (it is 3-5 frames up)


def _holds(trainer: Trainer, callback: TrainerCallback) -> bool:
    handler = getattr(trainer, "callback_handler", None)
    return any(cb is callback for cb in getattr(handler, "callbacks", ()))


def _any_process(flag: bool) -> bool:
    """True when ``flag`` is True on any process (accelerate's reduce: one collective when
    distributed, none otherwise)."""
    import torch
    from accelerate.state import PartialState
    from accelerate.utils import reduce

    device = PartialState().device
    return bool(reduce(torch.tensor([float(flag)], device=device), reduction="max").item() > 0)


def _fsdp_version(args: TrainingArguments, trainer: Trainer | None) -> int | None:
    """The FSDP version the Trainer shards with (None: no FSDP; on CPU accelerate ignores
    ``fsdp=`` and trains with DDP)."""
    if trainer is not None and getattr(trainer, "accelerator", None) is not None:
        plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
        return None if plugin is None else int(getattr(plugin, "fsdp_version", 1))
    if not getattr(args, "fsdp", None):
        return None
    return int((getattr(args, "fsdp_config", None) or {}).get("version", 2))


def _deepspeed_engine(trainer: Trainer | None) -> Any:
    """The Trainer's DeepSpeed engine (set once ``train()`` initialized it), else None."""
    for candidate in (getattr(trainer, "model_wrapped", None), getattr(trainer, "deepspeed", None)):
        if zero.is_engine(candidate):
            return candidate
    return None


def _deepspeed_fp16(args: TrainingArguments) -> bool:
    """fp16 under DeepSpeed: ``fp16=True``, or ``"fp16": {"enabled": true}`` in its config."""
    if getattr(args, "fp16", False):
        return True
    config: Any = getattr(getattr(args, "hf_deepspeed_config", None), "config", None)
    if not isinstance(config, Mapping):
        config = args.deepspeed if isinstance(getattr(args, "deepspeed", None), Mapping) else {}
    return (config.get("fp16") or {}).get("enabled") is True


def _refuse_strategy(args: TrainingArguments, trainer: Trainer | None) -> None:
    deepspeed = bool(getattr(args, "deepspeed", None)) or bool(
        getattr(trainer, "is_deepspeed_enabled", False)
    )
    if deepspeed and _deepspeed_fp16(args):
        raise UnsupportedStrategyError(
            "InitWatchCallback does not support DeepSpeed with fp16: the engine keeps its "
            "partitioned gradients multiplied by the dynamic loss scale until engine.step(), "
            "so per-layer gradient norms would be wrong. Train with bf16=True (and "
            '"bf16": {"enabled": "auto"} in the DeepSpeed config) or fp32; ZeRO-1/2/3 are '
            "supported there with exact statistics (docs/sharded.md)."
        )
    if _fsdp_version(args, trainer) == 1:
        raise UnsupportedStrategyError(
            "InitWatchCallback does not support FSDP1 under the Trainer: accelerate wraps the "
            "model before on_train_begin, so only flattened shards are visible. Use FSDP2: "
            "fsdp_config={'version': 2} (transformers' default)."
        )


def _open_writer(logdir: str) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(logdir)


def _load_state(state: TrainerState) -> dict[str, Any]:
    """The callback state saved in the checkpoint this run resumes from, if any: what
    :meth:`InitWatchCallback.state` put into its ``trainer_state.json`` (``ExportableState``),
    which the Trainer has loaded into ``state`` by ``on_train_begin``."""
    if not state.global_step:
        return {}
    callbacks: Any = state.stateful_callbacks or {}  # a dict once loaded from a checkpoint
    saved = callbacks.get(InitWatchCallback.__name__)
    if isinstance(saved, list):
        saved = saved[0] if saved else None
    found = saved.get("attributes", {}).get("_resume_state") if isinstance(saved, Mapping) else None
    return dict(found) if found else {}


__all__ = ["InitWatchCallback"]
