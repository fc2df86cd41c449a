"""Watch: per-layer statistics, alerts and TensorBoard output for a training loop."""

from __future__ import annotations

import functools
import logging
import math
import os
import traceback
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from initwatch import zero
from initwatch.adapters import LoraProbe
from initwatch.alerts import Alert
from initwatch.anatomy.model import Anatomy
from initwatch.attention import (
    attach_all,
    attention_probes,
    idle_all,
    remove_all,
)
from initwatch.context import RunContext
from initwatch.errors import ShardingError
from initwatch.frame import Frame, FrameBuilder
from initwatch.plain import to_plain
from initwatch.probes import ParamProbe, ProbeSet
from initwatch.schedule import schedule_facts, steps_done, torch_optimizer
from initwatch.selection import select_layers, select_parameters, unwrap
from initwatch.sharding import refuse_replaced
from initwatch.sinks import Sink
from initwatch.stats import LOSS_FIELDS, HostValues, StatBuffer
from initwatch.vocabulary import (
    LayersSpec,
    MicroBatchLoss,
    OnAlertSpec,
    OptimizerLike,
    RulesSpec,
    ScalarLike,
    SchedulerLike,
    WriterSpec,
)

log = logging.getLogger("initwatch")

# model -> the open Watch attached to it (weak both ways: no reference kept, nothing pickled)
_OPEN: weakref.WeakKeyDictionary[nn.Module, Callable[[], Any]] = weakref.WeakKeyDictionary()

# Set on the exception the alert policy raised (on_alert="raise", the user's function): a
# decision to stop, which the adapters' step-hook guards let through.
DECISION = "_initwatch_decision"

FRAME_HISTORY = 32  # frames kept in Watch.frames (the rules keep their own history)
LR_JUMP = 2.0  # an lr more than this multiple of the previous step's reopens the dense window
# The start of a run is measured densely, whatever the logging cadence: every optimizer step for
# the first DENSE_START steps (of each fit, a resume included, under the adapters) and after an lr
# jump, then at least every MAX_INTERVAL steps: the shocks that ruin a fine-tune come in its first
# steps. A measured step costs ~10 % of a plain one (docs/benchmarks.md): 20 extra steps once,
# then ~1 % of the run.
DENSE_START = 20
MAX_INTERVAL = 10


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _read_anatomy(model: nn.Module) -> Anatomy | None:
    try:
        from initwatch.anatomy import try_inspect
    except ImportError:
        return None
    return try_inspect(model)


def hooks_not_run_message(scheme: str | None) -> str:
    """What to say when the first measured step recorded no activation although the model
    ran: the hooks did not run (and a scheme that works by hooks is not applied).

    Example::

        >>> "torch._dynamo.reset()" in hooks_not_run_message("deepnet")
        True
    """
    what = (
        f"and scheme {scheme!r} is not live (its residual scaling / gates / norm removal did "
        "not run), "
        if scheme
        else ""
    )
    return (
        "no forward hook ran in the first measured step although the model ran: no activation "
        f"statistics were recorded {what}most likely because torch.compile reused a graph "
        "compiled before initwatch attached its hooks (an earlier compiled model of the same "
        "class in this process: a previous fit in a notebook or sweep). Call "
        "torch._dynamo.reset() before building and compiling this model, or compile it after "
        "the Watch / callback attached (torch.compile(model) after initwatch.Watch(model))"
    )


def _make_rules(rules: Any) -> Any:
    if rules is False:
        return None
    if rules is None or isinstance(rules, dict):
        try:
            from initwatch.rules import Rules
        except ImportError:
            return None
        return Rules(**(rules or {}))
    return rules


def _make_policy(on_alert: Any) -> Any:
    try:
        from initwatch.policy import AlertPolicy
    except ImportError:
        return None
    policy = AlertPolicy(on_alert)
    if policy.mode == "warn" and _rank() != 0:
        return AlertPolicy("ignore")  # every rank sees the same alerts: rank 0 warns for all
    return policy


def _make_sink(writer: Any, logdir: str | None) -> tuple[Sink | None, Any]:
    """The sink for rank 0 (None elsewhere) and the writer the Watch owns (to close), if any."""
    if _rank() != 0:
        return None, None
    if isinstance(writer, Sink):
        return writer, None
    own = None
    if writer is None and logdir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = own = SummaryWriter(logdir)
    if writer is None:
        return None, None
    from initwatch.sinks.tensorboard import TensorBoardSink

    return TensorBoardSink(writer), own


def _guarded(default: Any) -> Callable:
    """Turn an exception inside initwatch into one warning per method and exception type (where
    it was raised; the full traceback goes to the ``"initwatch"`` logger at DEBUG level), so a
    monitor bug never stops training. The alert policy runs outside: ``on_alert="raise"`` and a
    user's ``on_alert`` function that raises do stop the run."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def run(self: Watch, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                self._abort()
                self._internal_failure(method.__name__, exc)
                return default() if callable(default) else default

        return run

    return wrap


def _is_sharded(model: nn.Module) -> bool:
    """FSDP / DTensor / DeepSpeed ZeRO parameters: the optimizer's tensors are not the
    module's."""
    if any(zero.is_zero(p) for p in model.parameters()):
        return True
    if any(
        type(m).__name__.startswith(("FullyShardedDataParallel", "FSDP")) for m in model.modules()
    ):
        return True
    return any(
        type(p).__name__ == "DTensor" or hasattr(p, "_local_tensor") for p in model.parameters()
    )


def failure_message(where: str, exc: BaseException) -> str:
    """The warning about an internal failure: what failed, where it was raised; the full
    traceback goes to the ``"initwatch"`` logger at DEBUG level now.

    Example::

        >>> try:
        ...     {}["x"]
        ... except KeyError as exc:
        ...     print(failure_message("end_step", exc)[:40])
        end_step failed and was skipped: KeyErro
    """
    log.debug("initwatch: %s failed", where, exc_info=exc)
    return (
        f"{where} failed and was skipped: {exc!r} (raised at {_where(exc)}; the full "
        "traceback is logged on the 'initwatch' logger at DEBUG level; please report it)"
    )


def _where(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame of ``exc``'s traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown location"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"


@dataclass
class StepScope:
    """What :meth:`Watch.step` yields: set ``loss`` inside the block; ``alerts`` after it.

    Example::

        >>> StepScope().alerts
        []
    """

    loss: Any = None
    alerts: list[Alert] = field(default_factory=list)


class Watch:
    """Per-layer statistics of a training run, checked by rules and written to TensorBoard.

    Hooks are attached here, gated by data: create the Watch before ``torch.compile`` runs
    the model for the first time. For an eager model the forward hooks are detached between
    logging steps (after the first one) and re-attached by :meth:`begin_step`; once they have
    run under ``torch.compile`` they stay attached. Steps that are not logging steps cost a
    few attribute reads. On a logging step (``step % every == 0``) the forward hooks reduce
    each monitored output on the device (all micro-batches until :meth:`end_step`), tensor hooks
    reduce ``dL/d(block output)``, :meth:`before_optimizer_step` reads gradient and weight norms
    and snapshots a sample of weight coordinates, and :meth:`end_step` measures the update,
    reduces across ranks (one collective), copies the buffer to the host once,
    builds a :class:`~initwatch.frame.Frame`, runs the rules, writes the sinks (rank 0) and
    applies the alert policy. An exception inside initwatch becomes one warning (with where it
    was raised), never a crash. The alert policy's own exceptions are decisions and stop the
    run, with the hooks removed: the :class:`~initwatch.errors.AlertError` of
    ``on_alert="raise"`` and whatever a user's ``on_alert`` function raises.

    Args:
        model: the model (a ``torch.compile`` / DDP wrapper is unwrapped).
        writer: a ``torch.utils.tensorboard.SummaryWriter``, or any
            :class:`~initwatch.sinks.Sink`; None: a writer on ``logdir`` if given, else
            frames and alerts are only kept in memory.
        every: measure every this many optimizer steps (step 0 included).
        layers: ``"default"``, ``"blocks"``, ``"linear"`` or module paths / glob patterns
            (see :func:`~initwatch.selection.select_layers`).
        on_alert: what an alert does: ``"warn"``, ``"stop"``, ``"raise"`` or a
            callable (see :class:`initwatch.policy.AlertPolicy`).
        context: a :class:`~initwatch.RunContext` to start from (filled from the anatomy and
            the optimizer).
        anatomy: the model's :class:`~initwatch.anatomy.model.Anatomy`; read with
            :func:`initwatch.inspect` when None (models it cannot read are watched by path).
        rules: a ``Rules`` object, a dict of thresholds for ``Rules(**thresholds)``, None for
            the default rules, or False for none.
        update_sample: coordinates sampled per parameter tensor above 16k elements to estimate
            the update ratio (relative error about ``1 / sqrt(2 * update_sample)``); smaller
            tensors are measured exactly.
        logdir: directory for a SummaryWriter the Watch creates and closes, when ``writer``
            is None.
        dense_start: measure every step for the first this many optimizer steps the Watch
            sees, and again for as many steps after the learning rate jumps (rises more than
            ``LR_JUMP`` = 2x from one step to the next: a schedule restart, a manual change);
            default ``DENSE_START`` = 20 (as the adapters); 0: only ``every``.
        max_interval: measure at least every this many optimizer steps, whatever ``every``
            or the framework's cadence says; default ``MAX_INTERVAL`` = 10 (as the adapters);
            None: no cap, only ``every``. ``Watch(model, every=50, dense_start=0,
            max_interval=None)`` measures exactly every 50th step.
        pretrained: whether the weights are trained (a fine-tune: fine-tune thresholds and
            remedies). None: ``context.pretrained`` if True, else decided from the weights and
            loading markers (:func:`initwatch.decide_pretrained`); kept in :meth:`state_dict`
            so a resumed run keeps the decision made on its first start.
        micro_batch_loss: how the losses handed to :meth:`add_loss` within one step make the
            step's loss: ``"mean"`` (default; each micro-batch's own loss) or ``"sum"`` (losses
            already divided by the number of micro-batches, as the Hugging Face Trainer's
            ``training_step`` returns them).
        state: a :meth:`state_dict` to resume from (a checkpoint's, or an earlier fit's).
        histogram_every: histograms of each block's output and dL/d(output) on every this
            many measured steps (the first one included), counted on the device into the same
            buffer (:mod:`initwatch.histograms`; eager hooks only, not inside ``torch.compile``
            graphs); 0: none.

    The step's learning-rate facts come from the optimizer and, when
    :meth:`before_optimizer_step` (or :meth:`step`) is given one, the per-step ``scheduler``:
    ``context.base_lr`` is the peak the schedule rises to, ``context.warmup_steps`` its warmup
    and ``context.in_warmup`` whether this step is in it, so the rules judge an update ratio
    during warmup at the peak it is heading to.

    Example::

        >>> import torch, torch.nn as nn, initwatch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> watch = initwatch.Watch(model, every=2, rules=False, dense_start=0, max_interval=None)
        >>> for step in range(4):
        ...     watch.begin_step(step)
        ...     loss = model(torch.randn(4, 8)).pow(2).mean()
        ...     loss.backward()
        ...     watch.before_optimizer_step(opt)
        ...     opt.step(); opt.zero_grad()
        ...     _ = watch.end_step(loss=loss)
        True
        False
        True
        False
        >>> watch.last_frame.step, sorted(watch.last_frame.values["act_sat_frac"])
        (2, ['1'])
        >>> watch.close()
    """

    def __init__(
        self,
        model: nn.Module,
        writer: WriterSpec = None,
        every: int = 50,
        layers: LayersSpec = "default",
        on_alert: OnAlertSpec = "warn",
        context: RunContext | None = None,
        anatomy: Anatomy | None = None,
        rules: RulesSpec = None,
        update_sample: int = 1024,
        logdir: str | os.PathLike[str] | None = None,
        dense_start: int = DENSE_START,
        max_interval: int | None = MAX_INTERVAL,
        pretrained: bool | None = None,
        micro_batch_loss: MicroBatchLoss = "mean",
        state: Mapping[str, Any] | None = None,
        histogram_every: int = 10,
    ) -> None:
        from initwatch import validate as v

        v.module("model", model, "initwatch.Watch(model, every=50)")
        self.every = v.positive_int("every", every, "initwatch.Watch(model, every=50)")
        layers = v.layers_spec(layers)
        v.anatomy_or_none(anatomy)
        v.context_or_none(context)
        rules = v.rules_spec(rules)
        v.positive_int("update_sample", update_sample, "initwatch.Watch(model, update_sample=1024)")
        logdir = v.path_or_none("logdir", logdir, "initwatch.Watch(model, logdir='runs/exp1')")
        v.writer_or_none(writer)
        self._policy = _make_policy(on_alert)
        self.dense_start = v.non_negative_int(
            "dense_start", dense_start, "initwatch.Watch(model, dense_start=20)"
        )
        self.max_interval = (
            v.positive_int("max_interval", max_interval, "initwatch.Watch(model, max_interval=10)")
            if max_interval is not None
            else None
        )
        v.pretrained_or_none(pretrained, "initwatch.Watch(model, pretrained=True)")
        v.choice(
            "micro_batch_loss",
            micro_batch_loss,
            ("mean", "sum"),
            'initwatch.Watch(model, micro_batch_loss="mean")',
        )
        self.micro_batch_loss = micro_batch_loss
        self.histogram_every = v.non_negative_int(
            "histogram_every", histogram_every, "initwatch.Watch(model, histogram_every=10)"
        )
        self._measured = 0  # measured steps so far (the histogram cadence counts them)
        zero.refuse_engine(model)
        self.model = model
        inner = unwrap(model)
        with zero.gathered(inner):  # ZeRO-3: shapes and anatomy from the full tensors, once
            self.anatomy = anatomy if anatomy is not None else _read_anatomy(inner)
            self.context = context if context is not None else RunContext()
            self._pretrained_given = pretrained
            self._context_from_anatomy()
            self._context_from_model(inner)
            first = next(inner.parameters(), None)
            self._buffer = StatBuffer(first.device if first is not None else "cpu")
            targets = select_layers(inner, self.anatomy, layers)
            self._param_infos = select_parameters(inner, self.anatomy)
            self._params = ParamProbe(self._param_infos, self._buffer, sample=update_sample)
            self._lora = LoraProbe(inner)  # LoRA adapters: the adapted weight's effective update
            self._lora_values: dict[str, dict[str, float]] = {}
            self._loss = self._buffer.add("loss", LOSS_FIELDS)
            self._probes = ProbeSet(targets, self._buffer, histograms=self.histogram_every > 0)
            self._attention = attention_probes(inner, self.anatomy, self._buffer, self._probes.gate)
        try:  # all or nothing: a failure from here on leaves no hook behind
            self._buffer.allocate()
            self._loss_plan = self._buffer.plan(self._loss, [("sum", "sum", 0)])
            self._framer = FrameBuilder(
                self._probes.probes, self._attention, self._params, self._param_infos, self._loss
            )
            self._rules = _make_rules(rules)
            self._sink, self._own_writer = _make_sink(writer, logdir)
            bind = getattr(self._sink, "bind", None)
            if callable(bind):  # threshold lines on dashboards
                bind(getattr(self._rules, "thresholds", None), self.context)
        except BaseException:
            self._probes.remove()
            remove_all(self._attention)
            raise
        self._note_open(inner)
        self.alerts: list[Alert] = []
        self.frames: deque[Frame] = deque(maxlen=FRAME_HISTORY)
        self.step_index: int | None = None
        self._logging = False
        self._grads_read = False
        self._closed = False
        self._warned: set[str] = set()
        self._failed: set[str] = set()
        self._new_alerts = 0
        # True/False once the first measured step with a forward has shown whether the forward
        # hooks ran (None before): False when a compiled graph from before they were attached ran.
        self.hooks_live: bool | None = None
        self._optimizer_checked = False
        self._first_optimizers: list[Any] = []
        self._optimizer_hooks: list[tuple[weakref.ref, list]] = []
        self._stepped = False
        self._in_step = False
        self._step_scheduler: Any = None
        self._dense_left = self.dense_start
        self._last_measured: int | None = None
        self._groups: Any = None  # param_groups of the optimizer seen last (for the lr)
        self._prev_lr: float | None = None
        self._preclip: Any = None
        self._optimizers: dict[int, set[int]] = {}  # id(optimizer) -> ids of its parameters
        self._read_ids: set[int] = set()
        self._step_open = False  # between begin_step and end_step
        self._micro_loss: torch.Tensor | None = None  # add_loss's sum on a measured step
        self._micro_n = 0
        self._schedule: tuple[Any, dict[str, Any]] | None = None  # (scheduler ref, its facts)
        if state:
            self.load_state_dict(state)

    # ---- properties -----------------------------------------------------------------------

    @property
    def last_frame(self) -> Frame | None:
        """The most recent frame, or None before the first logging step."""
        return self.frames[-1] if self.frames else None

    @property
    def should_stop(self) -> bool:
        """True once the alert policy (``on_alert="stop"``) asks to stop training."""
        return bool(getattr(self._policy, "should_stop", False))

    @property
    def is_logging(self) -> bool:
        """True between :meth:`begin_step` and :meth:`end_step` of a logging step."""
        return self._logging

    @property
    def in_step(self) -> bool:
        """True between :meth:`begin_step` and :meth:`end_step` (measured or not)."""
        return self._step_open

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (hooks removed; ``alerts`` and ``frames`` stay)."""
        return self._closed

    # ---- the step protocol ----------------------------------------------------------------

    @_guarded(False)
    def begin_step(self, step: int, measure: bool | None = None) -> bool:
        """Start optimizer step ``step`` (before the first micro-batch's forward).

        Args:
            step: the optimizer step, numbered as the training framework numbers it.
            measure: whether the framework's cadence measures this step; None (default):
                every ``every``-th step (``step % every == 0``). Adapters pass the framework's
                own logging cadence. The step is also measured inside the dense window
                (``dense_start``) and when ``max_interval`` steps passed since the last one.

        Returns True when this step is measured.
        """
        if self._closed:
            return False
        if self._logging:  # the previous logging step was never ended
            self.end_step()
        self._step_open = True
        self._micro_loss, self._micro_n = None, 0
        self.step_index = int(step)
        self.context.step = self.step_index
        cadence = self.step_index % self.every == 0 if measure is None else bool(measure)
        dense = self._dense(self.step_index)  # first: it counts every step
        self._logging = cadence or dense
        if self._logging:
            self._last_measured = self.step_index
        self._grads_read = False
        if self._logging:
            self._probes.attach()
            attach_all(self._attention)
        self._preclip = None
        self._probes.gate.on = self._logging
        every = self.histogram_every
        self._probes.gate.histograms = self._logging and every > 0 and self._measured % every == 0
        self._measured += self._logging
        return self._logging

    @_guarded(None)
    def add_loss(self, loss: ScalarLike | None) -> None:
        """Add one micro-batch's loss on a measured step (kept on the device; nothing happens
        on other steps). :meth:`end_step` without a ``loss`` uses their mean (their sum with
        ``micro_batch_loss="sum"``).

        Example::

            >>> import torch, torch.nn as nn, initwatch
            >>> watch = initwatch.Watch(nn.Linear(2, 1), every=1, rules=False)
            >>> watch.begin_step(0)
            True
            >>> watch.add_loss(torch.tensor(1.0)); watch.add_loss(3.0)
            >>> _ = watch.end_step()
            >>> watch.last_frame.globals["loss"]
            2.0
            >>> watch.close()
        """
        if not self._logging or loss is None:
            return
        if torch.is_tensor(loss):
            value = loss.detach().float().reshape(-1)[:1]
        else:
            try:
                value = torch.tensor([float(loss)])
            except (TypeError, ValueError):
                return
        if self._micro_loss is not None:
            value = self._micro_loss + value.to(self._micro_loss.device)
        self._micro_loss = value
        self._micro_n += 1

    @_guarded(None)
    def before_optimizer_step(
        self,
        optimizer: OptimizerLike | nn.Module,
        grad_norm_preclip: ScalarLike | None = None,
        scheduler: SchedulerLike | None = None,
    ) -> None:
        """Read the final gradients (accumulated, unscaled, all-reduced) and snapshot the
        sampled weight coordinates; call it right before ``optimizer.step()``.

        Args:
            optimizer: the optimizer about to step (a framework wrapper is unwrapped), or a
                DeepSpeed engine: call it right before ``engine.step()``, which clips the
                ZeRO-partitioned gradients and frees them (docs/sharded.md).
            grad_norm_preclip: the global gradient norm before clipping, when the gradients
                were already clipped (the Hugging Face Trainer clips before its hook): the
                frame's ``grad_norm_global`` and per-tensor ``grad_norm`` are then the pre-clip
                values (clipping scales every gradient by one factor), and the clipped global
                norm is kept as ``grad_norm_clipped``.
            scheduler: the per-step learning-rate scheduler, if any: ``context.base_lr``
                (its peak), ``context.warmup_steps``, ``context.in_warmup`` (its
                ``last_epoch`` below the warmup) and ``context.extra["lr_restarts"]`` follow it
                (:func:`initwatch.schedule.schedule_facts`, read once per scheduler). Without
                one these context fields are left as they are.

        Called again within the same step (several optimizers stepping on one batch, e.g. a
        GAN under manual optimization), each optimizer's gradients are read at its own step
        (each tensor once) and the snapshot of the first call stands: the update is measured
        over the whole step.

        The optimizers of the first step are checked for trainable parameters they miss
        (:meth:`check_optimizer`) when it ends.
        """
        opt = torch_optimizer(optimizer)
        if not self._optimizer_checked and all(o is not opt for o in self._first_optimizers):
            self._first_optimizers.append(opt)
        self._groups = getattr(opt, "param_groups", None) or self._groups
        if not self._logging:
            return
        self.context.optimizer = type(opt).__name__
        lr = self._current_lr()
        if lr is not None:
            self.context.lr = lr
        if grad_norm_preclip is not None:
            self._preclip = grad_norm_preclip
        if scheduler is not None:
            self._context_from_schedule(scheduler, opt)
        if not self._grads_read:
            self._lora.snapshot()
        try:
            self._read_grads(opt)
        except ShardingError as exc:  # a layout it cannot read: no parameter statistics
            self._warn(str(exc))
            return
        self._grads_read = True

    def _read_grads(self, opt: Any) -> None:
        """One read per tensor and step: with several optimizers stepping in one step, each
        reads its own tensors (at the first, also those of no optimizer seen so far)."""
        targets = self._params.targets
        refuse_replaced(self.model, [t.param for t in targets], [t.info.name for t in targets])
        mine = {id(p) for g in getattr(opt, "param_groups", []) for p in g["params"]}
        self._optimizers[id(opt)] = mine
        ids = [id(t.param) for t in self._params.targets]
        if not self._grads_read:
            others = set().union(*(v for k, v in self._optimizers.items() if k != id(opt)))
            others -= mine  # a replaced optimizer over the same parameters excludes nothing
            only = None if not others else [i not in others for i in ids]
            seen = self._params.read_grads() if only is None else self._params.read_grads(only)
            self._read_ids = {i for i, h in zip(ids, seen or [], strict=False) if h}
            self._params.snapshot()
            return
        only = [i in mine and i not in self._read_ids for i in ids]
        if any(only):
            seen = self._params.read_grads(only)
            self._read_ids |= {i for i, h in zip(ids, seen, strict=True) if h}

    @_guarded(list)
    def check_optimizer(self, optimizers: OptimizerLike | Iterable[OptimizerLike]) -> list[str]:
        """Warn once, naming them, about trainable parameters that are in no param group of
        ``optimizers`` (one optimizer or several): they would never train, e.g. ReZero gates
        added after the optimizer was built. Returns their names. Runs when the first step ends,
        over the optimizers that stepped in it; the callbacks call it when training starts.

        Example::

            >>> import torch, torch.nn as nn, initwatch
            >>> model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
            >>> watch = initwatch.Watch(model, rules=False)
            >>> opt = torch.optim.SGD(model[0].parameters(), lr=0.1)
            >>> import warnings
            >>> with warnings.catch_warnings(record=True):
            ...     watch.check_optimizer(opt)
            ['1.weight', '1.bias']
            >>> watch.close()
        """
        self._optimizer_checked = True
        self._first_optimizers = []
        many = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
        groups = [g for o in many for g in getattr(torch_optimizer(o), "param_groups", [])]
        inner = unwrap(self.model)
        if not groups or _is_sharded(inner):  # sharded: optimizers hold other tensor objects
            return []
        held = {id(p) for g in groups for p in g.get("params", [])}
        missing = [n for n, p in inner.named_parameters() if p.requires_grad and id(p) not in held]
        if missing:
            names = ", ".join(missing[:8]) + (
                f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            )
            self.context.extra["params_not_in_optimizer"] = missing
            self._warn(
                f"{len(missing)} trainable parameter(s) are in no param group of the optimizer "
                f"and will never train: {names}. Build the optimizer after initwatch.reinit (ReZero "
                "adds gates) and after every change to the model, or add them with "
                "optimizer.add_param_group({'params': [...]})."
            )
        return missing

    def end_step(self, loss: ScalarLike | None = None, skipped: bool = False) -> list[Alert]:
        """Finish the step (after ``optimizer.step()``): returns the alerts it raised.

        The alerts are handed to the alert policy last. An exception from it
        (``on_alert="raise"``'s :class:`~initwatch.AlertError`, or whatever the user's
        ``on_alert`` function raises) closes the Watch (hooks removed) and propagates: it is
        the user's decision to stop the run.

        Args:
            loss: the step's loss (a tensor stays on the device until the one host copy);
                None: the losses :meth:`add_loss` collected, if any.
            skipped: True when an AMP scaler skipped the optimizer step: no update ratio.
        """
        self._step_open = False
        collected = self._micro_loss  # set with the first add_loss, with _micro_n >= 1
        if loss is None and collected is not None:
            loss = collected / self._micro_n if self.micro_batch_loss == "mean" else collected
        self._micro_loss, self._micro_n = None, 0
        if not self._optimizer_checked and self._first_optimizers:
            self.check_optimizer(self._first_optimizers)
        alerts = self._measure_step(loss, skipped)
        if self._policy is not None and alerts:
            try:
                for alert in alerts:
                    self._policy.handle(alert)
            except BaseException as exc:
                with suppress(Exception):  # adapters let a decision through their own guard
                    setattr(exc, DECISION, True)
                self.close()
                raise
        return alerts

    @_guarded(list)
    def _measure_step(self, loss: ScalarLike | None, skipped: bool) -> list[Alert]:
        if not self._logging:
            return []
        self._logging = False
        self._probes.idle()
        idle_all(self._attention, self._probes.gate)
        self._lora_values = {}
        if self._grads_read and not skipped:
            self._params.measure_update()
            self._lora_values = self._lora.measure()
        self._params.discard_snapshot()
        if loss is not None:
            value = torch.as_tensor(loss).detach()
            self._buffer.stage(
                self._loss_plan, (value if value.dim() == 0 else value.flatten()[0],)
            )
            self._buffer.stage_host(self._loss, "count", 1)
        self._buffer.reduce_across_ranks()
        host = self._buffer.read()
        self._buffer.reset()
        frame = self._frame(host, skipped)
        self.frames.append(frame)
        if self.hooks_live is None:
            self._check_hooks_ran(host, loss is not None or "grad_norm_global" in frame.globals)
        self._count_nonfinite_where_flagged(frame)
        self._report_probe_errors()
        alerts = list(self._rules.update(frame, self.context)) if self._rules else []
        self.alerts.extend(alerts)
        self._new_alerts += sum(1 for a in alerts if not a.repeat)
        if self._sink is not None:
            self._sink.write_frame(frame)
            self._sink.write_alerts(alerts, frame.step, self._new_alerts)
        return alerts

    @contextmanager
    def step(
        self, step: int, optimizer: torch.optim.Optimizer, scheduler: SchedulerLike | None = None
    ) -> Iterator[StepScope]:
        """One optimizer step of a plain loop, as a ``with`` block.

        Calls :meth:`begin_step` on entry, :meth:`before_optimizer_step` from a step pre-hook
        of ``optimizer`` (with ``scheduler``: the warmup and peak lr follow it) and
        :meth:`end_step` on exit (``skipped`` when ``optimizer.step()`` did not run, e.g. a
        ``GradScaler`` skipped it). Set ``scope.loss`` inside the block (or call
        :meth:`add_loss` per micro-batch).

        Example::

            >>> import torch, torch.nn as nn, initwatch
            >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
            >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
            >>> watch = initwatch.Watch(model, every=1, rules=False)
            >>> with watch.step(0, opt) as scope:
            ...     scope.loss = model(torch.randn(8, 4)).pow(2).mean()
            ...     scope.loss.backward()
            ...     opt.step()
            >>> "update_ratio" in watch.last_frame.values
            True
        """
        scope = StepScope()
        self._hook_optimizer(optimizer)
        self._step_scheduler = scheduler
        self._stepped = False
        self.begin_step(step)
        self._in_step = True
        try:
            yield scope
        except BaseException:
            self._abort()
            raise
        finally:
            self._in_step = False
        scope.alerts = self.end_step(loss=scope.loss, skipped=not self._stepped)

    def _hook_optimizer(self, optimizer: Any) -> None:
        """Register the step pre-/post-hooks of :meth:`step` once per optimizer (removed at
        :meth:`close`); they do nothing outside a ``with watch.step(...)`` block. A DeepSpeed
        engine gets them around ``engine.step()`` (its gradients are gone once it stepped)."""
        if any(o() is optimizer for o, _ in self._optimizer_hooks):
            return
        if zero.is_engine(optimizer):

            def engine_pre() -> None:
                if self._in_step:
                    self.before_optimizer_step(optimizer, scheduler=self._step_scheduler)

            def engine_post(applied: bool) -> None:
                if self._in_step:
                    self._stepped = applied

            hook = zero.EngineStepHook(optimizer, engine_pre, engine_post)
            self._optimizer_hooks.append((weakref.ref(optimizer), [hook]))
            return
        if any(zero.is_zero(p) for p in unwrap(self.model).parameters()):
            raise ShardingError(
                f"watch.step(step, optimizer) got a {type(optimizer).__name__} for a model "
                "trained by DeepSpeed ZeRO: its gradients are read when engine.step() starts. "
                "Pass the engine: `with watch.step(i, engine):`."
            )

        def pre(opt: Any, args: Any, kwargs: Any) -> None:
            if self._in_step:
                self.before_optimizer_step(opt, scheduler=self._step_scheduler)

        def post(opt: Any, args: Any, kwargs: Any) -> None:
            if self._in_step:
                self._stepped = True

        handles = [optimizer.register_step_pre_hook(pre), optimizer.register_step_post_hook(post)]
        self._optimizer_hooks.append((weakref.ref(optimizer), handles))

    @_guarded(None)
    def close(self) -> None:
        """Write the summary, remove every hook, close the writer the Watch created
        (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._abort()
        self._probes.remove()
        for _, handles in self._optimizer_hooks:
            for h in handles:
                h.remove()
        self._optimizer_hooks = []
        remove_all(self._attention)
        inner = unwrap(self.model)
        if _OPEN.get(inner, lambda: None)() is self:
            del _OPEN[inner]
        if self._sink is not None:
            self._sink.close(self.last_frame, self.alerts)
        if self._own_writer is not None:
            self._own_writer.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain data (weights-only-loadable): step, alert history and rule state.

        Pass it as ``Watch(..., state=...)`` (or to :meth:`load_state_dict`) to resume.

        Example::

            >>> import torch.nn as nn, initwatch
            >>> watch = initwatch.Watch(nn.Linear(2, 1), every=1, rules=False)
            >>> watch.begin_step(7)
            True
            >>> _ = watch.end_step(); watch.close()
            >>> initwatch.Watch(nn.Linear(2, 1), rules=False, state=watch.state_dict()).step_index
            7
        """
        state: dict[str, Any] = {
            "step": self.step_index,
            "alerts": [a.to_dict() for a in self.alerts],
            "new_alerts": self._new_alerts,
            "pretrained": self.context.pretrained,
        }
        if self._rules is not None and hasattr(self._rules, "state_dict"):
            state["rules"] = self._rules.state_dict()
        return to_plain(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.step_index = state.get("step")
        self.alerts = [Alert.from_dict(a) for a in state.get("alerts", [])]
        self._new_alerts = int(state.get("new_alerts", sum(1 for a in self.alerts if not a.repeat)))
        if self._pretrained_given is None and isinstance(state.get("pretrained"), bool):
            # decided when the run first started (a resume sees its own trained weights)
            self.context.pretrained = state["pretrained"]
        if "rules" in state and self._rules is not None and hasattr(self._rules, "load_state_dict"):
            self._rules.load_state_dict(state["rules"])

    # ---- internals ------------------------------------------------------------------------

    def _context_from_anatomy(self) -> None:
        from initwatch.schemes.base import has_cross

        a, ctx = self.anatomy, self.context
        if a is None:
            return
        ctx.family = ctx.family or a.family
        ctx.layout = ctx.layout or a.layout
        ctx.residual = ctx.residual or a.residual
        ctx.depth = ctx.depth or dict(a.depth)
        ctx.cross_attention = ctx.cross_attention or has_cross(a)

    def _context_from_schedule(self, scheduler: Any, optimizer: Any) -> None:
        """``base_lr``, ``warmup_steps``, ``in_warmup`` and ``lr_restarts`` from a per-step
        scheduler (its facts are read once; ``in_warmup`` at every measured step). A fact the
        scheduler does not tell (None) leaves what the context holds (an adapter's fallback)."""
        ctx = self.context
        cached = self._schedule
        if cached is None or cached[0]() is not scheduler:
            facts = schedule_facts(scheduler, optimizer, ctx.max_steps)
            with suppress(TypeError):
                self._schedule = (weakref.ref(scheduler), facts)
        else:
            facts = cached[1]
        if facts["base_lr"] is not None:
            ctx.base_lr = facts["base_lr"]
        if facts["warmup_steps"] is not None:
            ctx.warmup_steps = facts["warmup_steps"]
        ctx.extra["lr_restarts"] = facts["lr_restarts"]
        done = steps_done(scheduler)
        if ctx.warmup_steps is not None and done is not None:
            ctx.in_warmup = done < ctx.warmup_steps

    def check_scheme_live(self, scheme: str | None, caller: str) -> None:
        """Raise :class:`~initwatch.InitWatchError` once the first measured step showed that
        no forward hook ran while ``scheme`` is on the model: the run would train without the
        scheme (``caller`` names the callback in the message).

        Example::

            >>> import torch.nn as nn, initwatch
            >>> watch = initwatch.Watch(nn.Linear(2, 1), rules=False)
            >>> watch.check_scheme_live("rezero", "InitWatch")  # not known yet: no error
            >>> watch.close()
        """
        from initwatch.errors import InitWatchError

        if scheme is not None and self.hooks_live is False:
            raise InitWatchError(f"{caller}: {hooks_not_run_message(scheme)}.")

    def _context_from_model(self, model: nn.Module) -> None:
        """The scheme initwatch applied and whether the weights are pretrained (a fine-tune):
        rules exempt a scheme's zero-by-construction start, remedies never re-init a fine-tune."""
        from initwatch.schemes.base import applied_scheme
        from initwatch.schemes.pretrained import decide_pretrained
        from initwatch.selection import activation_kinds

        ctx = self.context
        ctx.activations = ctx.activations or activation_kinds(model)
        ctx.extra.setdefault("framework", "plain")  # the adapters set their own
        if ctx.scheme is None:
            scheme = applied_scheme(model)
            ctx.scheme = None if scheme in (None, "none") else scheme
        if self._pretrained_given is not None:
            ctx.pretrained = self._pretrained_given
            ctx.extra["pretrained_source"] = "given"
        elif not ctx.pretrained and "pretrained_source" not in ctx.extra:
            decision = decide_pretrained(model)
            ctx.pretrained = decision.pretrained
            ctx.extra.update(pretrained_source=decision.source, pretrained_why=decision.describe())

    def _frame(self, host: HostValues, skipped: bool) -> Frame:
        pre, self._preclip = self._preclip, None
        lr = float(self.context.lr) if self.context.lr is not None else None
        return self._framer.build(
            host, self.step_index or 0, skipped, self._grads_read, self._lora_values, lr, pre
        )

    def _count_nonfinite_where_flagged(self, frame: Frame) -> None:
        """Layers whose sum was non-finite count their non-finite elements from now on."""
        table = frame.stat("act_nonfinite")
        for probe in self._probes.probes:
            if not probe.counted and table.get(probe.target.info.name, 0.0) == math.inf:
                probe.count_nonfinite = True

    def _dense(self, step: int) -> bool:
        """Whether the dense start, an lr jump or ``max_interval`` measures this step."""
        lr = self._current_lr()
        prev, self._prev_lr = self._prev_lr, lr
        if lr is not None and prev is not None and lr > LR_JUMP * prev:
            self._dense_left = max(self._dense_left, self.dense_start)
        if self._dense_left > 0:
            self._dense_left -= 1
            return True
        last = self._last_measured
        return self.max_interval is not None and (last is None or step - last >= self.max_interval)

    def _current_lr(self) -> float | None:
        """The first param group's lr of the optimizer seen last (None: not known yet)."""
        groups = self._groups
        lr = groups[0].get("lr") if groups else None
        if isinstance(lr, torch.Tensor):
            lr = float(lr) if lr.device.type == "cpu" else None
        return float(lr) if isinstance(lr, (int, float)) else None

    def _check_hooks_ran(self, host: HostValues, ran: bool) -> None:
        """At the first measured step that ran a forward (a loss or gradients came back):
        did any forward hook see an output? If none did, the model ran a graph compiled before
        the hooks were attached, so the statistics, and a scheme's hooks (DeepNorm's residual,
        ReZero's gates), are not live."""
        if not ran or not self._probes.probes:
            return
        self.hooks_live = any(host.row(p.group)["count"] > 0 for p in self._probes.probes)
        if not self.hooks_live:
            self._warn(hooks_not_run_message(self.context.scheme))

    def _abort(self) -> None:
        """Leave a half-done logging step cleanly (gate off, buffer reset)."""
        self._logging = False
        self._probes.idle()
        idle_all(self._attention, self._probes.gate)
        self._params.discard_snapshot()
        with suppress(Exception):
            self._buffer.reset()

    def _report_probe_errors(self) -> None:
        for layer, err in self._probes.errors().items():
            self._warn(f"probe on {layer} failed and was skipped: {err}")
        for att in self._attention:
            if att.error:
                self._warn(f"attention probe on {att.name} failed and was skipped: {att.error}")
                att.error = None

    def _note_open(self, inner: nn.Module) -> None:
        """Warn when another open Watch (or initwatch callback) watches the same model."""
        other = _OPEN.get(inner, lambda: None)()
        if other is not None and not other._closed:
            warnings.warn(
                f"initwatch: this {type(inner).__name__} is already watched by an open Watch "
                "(a plain Watch, or one an initwatch callback created): both measure it, so every "
                "statistic and TensorBoard point is written twice. close() the first one, or "
                "keep only one of the callback and the plain Watch.",
                RuntimeWarning,
                stacklevel=3,
            )
        _OPEN[inner] = weakref.ref(self)

    def _internal_failure(self, where: str, exc: Exception) -> None:
        """One warning per method and exception type, with where it was raised."""
        key = f"{where}:{type(exc).__name__}"
        if key in self._failed:
            return
        self._failed.add(key)
        self._warn(failure_message(where, exc))

    def _warn(self, message: str) -> None:
        if message in self._warned or _rank() != 0:
            return
        self._warned.add(message)
        warnings.warn(f"initwatch: {message}", RuntimeWarning, stacklevel=3)
