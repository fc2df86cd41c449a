"""What the Lightning and Hugging Face adapters share: applying a scheme once, the run context,
and driving a :class:`~initwatch.Watch` through a framework's step events."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from initwatch.alerts import Alert
from initwatch.anatomy import Anatomy, try_inspect
from initwatch.context import RunContext
from initwatch.errors import AlreadyAppliedError, InitWatchError
from initwatch.schemes import ReinitReport, decide_pretrained, reinit, scheme_name
from initwatch.schemes.base import applied_scheme
from initwatch.schemes.registry import key_scheme

STATE_VERSION = 1
OWN_RUN = "initwatch_logs"  # directory of the callback's own TensorBoard run
_WARMUP_PROBE_LIMIT = 100_000
# The start of a fit is measured densely, whatever the framework's logging interval: every
# optimizer step for the first DENSE_START steps of each fit (a resumed fit included) and after
# an lr jump, then at least every MAX_INTERVAL steps. The framework's own logging steps are
# always measured too, so TensorBoard shares their step axis. A measured step costs ~10 % of a
# plain one (docs/benchmarks.md): 20 extra steps once, then ~1 % of the run.
DENSE_START = 20
MAX_INTERVAL = 10


class UnsupportedStrategyError(InitWatchError, RuntimeError):
    """The training strategy (FSDP, DeepSpeed, ...) is one initwatch refuses to watch.

    Example::

        >>> issubclass(UnsupportedStrategyError, InitWatchError)
        True
    """


def own_run_dir(base: str | os.PathLike | None, fallback: str | os.PathLike = ".") -> str:
    """A fresh TensorBoard run for one fit: ``<base>/initwatch_logs/version_<N>``, N one past
    the highest existing version, so two fits never write into one run. ``base`` None (a
    trainer without a log directory, e.g. Lightning's ``fast_dev_run``) uses ``fallback``.

    Example::

        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> os.path.relpath(own_run_dir(root), root)
        'initwatch_logs/version_0'
        >>> os.makedirs(own_run_dir(root)); os.path.basename(own_run_dir(root))
        'version_1'
        >>> os.path.relpath(own_run_dir(None, fallback=root), root)
        'initwatch_logs/version_1'
    """
    parent = os.path.join(os.fspath(base if base is not None else fallback), OWN_RUN)
    taken = [-1]
    if os.path.isdir(parent):
        for name in os.listdir(parent):
            number = name[len("version_") :]
            if name.startswith("version_") and number.isdigit():
                taken.append(int(number))
    return os.path.join(parent, f"version_{max(taken) + 1}")


def resolve_scheme(scheme: str | None) -> str | None:
    """The canonical scheme name (``None`` stays ``None``); ``ValueError`` for an unknown one.

    Example::

        >>> resolve_scheme("T-Fixup"), resolve_scheme(None)
        ('t-fixup', None)
    """
    return None if scheme is None else scheme_name(scheme)


def validate_on_alert(on_alert: Any) -> None:
    """Raise ``ValueError`` at construction for an ``on_alert`` the alert policy rejects.

    Example::

        >>> validate_on_alert("stop")
    """
    from initwatch.policy import AlertPolicy

    AlertPolicy(on_alert)


def apply_scheme(
    model: nn.Module,
    scheme: str | None,
    options: Mapping[str, Any] | None,
    *,
    anatomy: Anatomy | None = None,
    framework: str,
    pretrained: bool | None = None,
) -> ReinitReport | None:
    """Apply ``scheme`` to ``model`` unless it already carries it; return the report or None.

    The framework hook that calls this runs before the optimizer exists, before a DDP wrap
    broadcasts rank 0's weights and before a checkpoint is restored, so new parameters are
    trained, all ranks agree and a resume overwrites the fresh draw with the saved weights. The
    same model seen again (``validate``/``test`` after ``fit``, a second ``fit``, a model
    restored with :func:`initwatch.restore`) is left alone; a model carrying a *different*
    scheme is refused.

    ``pretrained`` (None: decide from the weights) is the ``pretrained`` option of
    :func:`initwatch.reinit` unless ``options`` sets it.

    Raises:
        PretrainedWeightsError: ``model``'s weights look trained or were loaded from a
            checkpoint (:func:`initwatch.decide_pretrained`), or ``pretrained=True``.
        AlreadyAppliedError: ``model`` carries another scheme.

    Example::

        >>> from initwatch import zoo
        >>> model = zoo.build("gpt2")
        >>> apply_scheme(model, "rezero", None, framework="test").scheme
        'rezero'
        >>> apply_scheme(model, "rezero", None, framework="test") is None
        True
    """
    if scheme is None:
        return None
    present = applied_scheme(model)
    if present == scheme:
        return None
    if present is not None:
        raise AlreadyAppliedError(
            f"{framework}: this model already carries initwatch scheme {present!r}, and the "
            f"callback was asked for scheme={scheme!r}. Applying a second scheme would "
            f"re-initialize trained weights. Pass scheme={present!r} (or scheme=None to only "
            "monitor), or build a fresh model."
        )
    opts = dict(options or {})
    if pretrained is not None:
        opts.setdefault("pretrained", pretrained)
    if anatomy is not None:
        opts.setdefault("anatomy", anatomy)
    return reinit(model, scheme, **opts)


def guard_resume(model: nn.Module, callback: str) -> Any:
    """Until the returned handle is removed, loading a checkpoint into ``model`` whose keys show
    another scheme than ``model`` carries raises :class:`~initwatch.InitWatchError` naming the
    checkpoint's scheme and the fix, before the framework's raw missing/unexpected-keys error
    (or, with a non-strict load, a silently half-loaded model). ``callback`` is the call that
    fixes it, with ``{scheme}`` for the checkpoint's scheme.

    Example::

        >>> from initwatch import reinit, zoo
        >>> trained = zoo.build("gpt2", layers=2)
        >>> _ = reinit(trained, "rezero")
        >>> fresh = zoo.build("gpt2", layers=2)
        >>> handle = guard_resume(fresh, "InitWatch(scheme={scheme!r})")
        >>> fresh.load_state_dict(trained.state_dict())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        initwatch.errors.InitWatchError: this checkpoint was written by a model re-initialized with scheme 'rezero' ... pass InitWatch(scheme='rezero'): ...
        >>> handle.remove()
    """

    def check(module: nn.Module, state: Mapping[str, Any], prefix: str, *rest: Any) -> None:
        if not prefix:  # the model itself, not one of its submodules
            check_checkpoint(module, state, applied_scheme(module) or "none", callback)

    return model.register_load_state_dict_pre_hook(check)


def check_checkpoint(model: nn.Module, keys: Iterable[str], present: str, callback: str) -> None:
    """Raise :class:`~initwatch.InitWatchError` when a checkpoint's keys show another scheme
    than ``present`` (the scheme ``model`` carries, or will carry once the callback applied
    it), naming both and the fix (``callback`` with ``{scheme}``). Partial state dicts (less
    than half of the model's keys, e.g. adapters) are not judged.

    Example::

        >>> from initwatch import zoo
        >>> model = zoo.build("gpt2", layers=2)
        >>> check_checkpoint(model, model.state_dict(), "none", "InitWatch(scheme={scheme!r})")
        >>> check_checkpoint(model, model.state_dict(), "rezero", "InitWatch(scheme={scheme!r})")
        Traceback (most recent call last):
        ...
        initwatch.errors.InitWatchError: this checkpoint was written by a model without an initwatch scheme, ...
    """
    from initwatch.schemes.restore import scheme_of_state

    keys = set(keys)
    own = set(model.state_dict())
    if len(own & keys) < len(own) / 2:
        return
    found = scheme_of_state(model, keys)
    if found == key_scheme(present):  # a weights-only scheme's checkpoint is a plain one
        return
    carries = "no scheme" if present == "none" else f"scheme {present!r}"
    if found == "none":
        raise InitWatchError(
            "this checkpoint was written by a model without an initwatch scheme, but the "
            f"model it is loaded into carries {carries}, so their keys differ. To resume it, "
            f"pass {callback.format(scheme=None)}; to re-initialize, start from scratch "
            "without the checkpoint."
        )
    raise InitWatchError(
        f"this checkpoint was written by a model re-initialized with scheme {found!r} (its "
        f"keys carry that scheme's structure), but the model it is loaded into carries "
        f"{carries}. To resume it, pass {callback.format(scheme=found)}: the structure is "
        "rebuilt before the weights are loaded. To load it outside the trainer, build a "
        "fresh model and call initwatch.restore(model, checkpoint)."
    )


def refuse_second_watcher(callbacks: Iterable[Any], me: Any) -> None:
    """Raise :class:`~initwatch.InitWatchError` when ``callbacks`` hold another initwatch
    callback besides ``me``: two would apply schemes twice and write every point twice. Called
    before anything is applied, so a refused construction leaves the model as it was.

    Example::

        >>> refuse_second_watcher([1, "x"], object())
    """
    mine = type(me).__name__
    others = [c for c in callbacks if c is not me and isinstance(c, AdapterSettings)]
    if others:
        raise InitWatchError(
            f"two initwatch callbacks on one trainer ({mine} and {type(others[0]).__name__}): "
            "each would watch the same model (every TensorBoard point written twice) and a "
            "second scheme would re-initialize the first one's. Keep one, e.g. "
            f"callbacks=[{mine}(scheme='rezero')]; nothing was applied."
        )


def read_anatomy(model: nn.Module, given: Anatomy | None) -> Anatomy | None:
    """The anatomy passed by the user, else :func:`initwatch.inspect`'s, else None.

    Read it *before* a scheme edits the model, and hand the same object to the Watch.

    Example::

        >>> read_anatomy(nn.Linear(2, 2), None) is None
        True
    """
    return given if given is not None else try_inspect(model)


def base_context(
    model: nn.Module,
    *,
    scheme: str | None,
    framework: str,
    precision: str | None = None,
    max_steps: int | None = None,
    pretrained: bool | None = None,
) -> RunContext:
    """A :class:`~initwatch.RunContext` with what is known before training starts.

    ``pretrained`` (None) is decided by :func:`initwatch.decide_pretrained` (from the weights
    and loading markers; ``extra["pretrained_source"]`` and ``extra["pretrained_why"]`` say
    how): fine-tune thresholds and remedies follow it. The anatomy fields are filled by the
    Watch.

    Example::

        >>> from initwatch import zoo
        >>> ctx = base_context(zoo.build("gpt2"), scheme=None, framework="lightning")
        >>> ctx.pretrained, ctx.extra["framework"]
        (False, 'lightning')
    """
    decision = decide_pretrained(model, pretrained)
    return RunContext(
        scheme=scheme or applied_scheme(model),
        precision=precision,
        max_steps=max_steps if max_steps is not None and max_steps > 0 else None,
        pretrained=decision.pretrained,
        extra={
            "framework": framework,
            "pretrained_source": decision.source,
            "pretrained_why": decision.describe(),
        },
    )


def torch_optimizer(optimizer: Any) -> Any:
    """The ``torch.optim.Optimizer`` inside Lightning's / accelerate's wrappers.

    Example::

        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> torch_optimizer(opt) is opt
        True
    """
    for attr in ("optimizer", "_optimizer"):
        inner = getattr(optimizer, attr, None)
        if inner is not None and hasattr(inner, "param_groups"):
            return torch_optimizer(inner)
    return optimizer


def _lambda_warmup(fn: Any, limit: int, whole_run: bool = False) -> int | None:
    """Steps a multiplicative LR lambda keeps rising from step 0 (0: no warmup); a lambda
    still rising at ``limit`` gives ``limit`` when ``whole_run`` (the limit is the run's
    ``max_steps``: the warmup lasts the whole run), else None (unknown)."""
    try:
        prev = float(fn(0))
        for i in range(1, limit + 1):
            cur = float(fn(i))
            if cur <= prev:
                return i - 1
            prev = cur
    except Exception:
        return None
    return limit if whole_run else None


def warmup_steps_of(scheduler: Any, max_steps: int | None = None) -> int | None:
    """Number of warmup steps of a per-step LR scheduler, 0 for none, None when unknown.

    Recognises ``LinearLR`` (rising), ``OneCycleLR``, ``SequentialLR`` starting with a warmup,
    and ``LambdaLR`` / ``MultiplicativeLR``-free lambdas (the Hugging Face schedules), whose
    multiplier is probed step by step until it stops rising.

    Example::

        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
        >>> warmup_steps_of(sched)
        9
        >>> warmup_steps_of(sched, max_steps=5)  # still rising when the run ends
        5
    """
    sched = torch.optim.lr_scheduler
    if scheduler is None:
        return None
    if isinstance(scheduler, sched.LinearLR):
        rising = scheduler.start_factor < scheduler.end_factor
        return int(scheduler.total_iters) if rising else 0
    if isinstance(scheduler, sched.OneCycleLR):
        phases = getattr(scheduler, "_schedule_phases", None)
        return int(phases[0]["end_step"]) if phases else None
    if isinstance(scheduler, sched.SequentialLR):
        inner = getattr(scheduler, "_schedulers", [])
        milestones = getattr(scheduler, "_milestones", [])
        if inner and milestones and warmup_steps_of(inner[0], max_steps):
            return int(milestones[0])
        return 0 if inner else None
    if isinstance(scheduler, sched.LambdaLR) and len(scheduler.lr_lambdas) >= 1:
        limit = min(max_steps or _WARMUP_PROBE_LIMIT, _WARMUP_PROBE_LIMIT)
        return _lambda_warmup(scheduler.lr_lambdas[0], limit, whole_run=limit == max_steps)
    if isinstance(scheduler, (sched.ConstantLR, sched.StepLR, sched.ExponentialLR)):
        return 0
    return None


def base_lr_of(scheduler: Any, optimizer: Any) -> float | None:
    """The configured (peak) learning rate: the scheduler's ``base_lrs[0]``, else the
    optimizer's ``initial_lr`` / ``lr``.

    Example::

        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> base_lr_of(None, opt)
        0.1
    """
    base = getattr(scheduler, "base_lrs", None)
    if base:
        return float(base[0])
    opt = torch_optimizer(optimizer)
    groups = getattr(opt, "param_groups", None)
    if not groups:
        return None
    lr = groups[0].get("initial_lr", groups[0].get("lr"))
    return float(lr) if isinstance(lr, (int, float)) else None


def restarts_of(scheduler: Any) -> bool:
    """True for a schedule that returns to ~0 and restarts on purpose (SGDR): PyTorch's
    ``CosineAnnealingWarmRestarts`` and Hugging Face's cosine with hard restarts
    (``lr_scheduler_type="cosine_with_restarts"``). ``lr_schedule_collapse`` exempts them.

    Example::

        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> restarts_of(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10))
        True
        >>> restarts_of(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10))
        False
    """
    sched = torch.optim.lr_scheduler
    if isinstance(scheduler, sched.CosineAnnealingWarmRestarts):
        return True
    if isinstance(scheduler, sched.SequentialLR):
        return any(restarts_of(s) for s in getattr(scheduler, "_schedulers", []))
    if isinstance(scheduler, sched.LambdaLR) and scheduler.lr_lambdas:
        fn = scheduler.lr_lambdas[0]
        name = getattr(getattr(fn, "func", fn), "__name__", "")
        return "restarts" in name
    return False


def peak_lr_of(scheduler: Any, optimizer: Any, max_steps: int | None = None) -> float | None:
    """The learning rate a per-step schedule rises to (its warmup's end), else
    :func:`base_lr_of`: a ``LambdaLR`` (the Hugging Face schedules) at the step its multiplier
    stops rising, ``OneCycleLR``'s ``max_lr``, a rising ``LinearLR``'s end factor.

    Example::

        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(2.0, (s + 1) / 5))
        >>> peak_lr_of(sched, opt)
        0.2
    """
    sched = torch.optim.lr_scheduler
    base = base_lr_of(scheduler, optimizer)
    try:
        if isinstance(scheduler, sched.OneCycleLR):
            return float(torch_optimizer(optimizer).param_groups[0]["max_lr"])
        if base is None:
            return None
        if isinstance(scheduler, sched.LinearLR):
            return base * max(float(scheduler.start_factor), float(scheduler.end_factor))
        if isinstance(scheduler, sched.LambdaLR) and scheduler.lr_lambdas:
            limit = min(max_steps or _WARMUP_PROBE_LIMIT, _WARMUP_PROBE_LIMIT)
            fn = scheduler.lr_lambdas[0]
            top = _lambda_warmup(fn, limit, whole_run=limit == max_steps)
            return base * float(fn(top)) if top is not None else base
    except Exception:
        return base
    return base


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is True on any rank (one collective under ``torch.distributed``).

    Example::

        >>> any_rank(True)
        True
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def is_summary_writer(obj: Any) -> bool:
    """True for a TensorBoard ``SummaryWriter`` (torch's or tensorboardX's); False for
    Lightning's ``_DummyExperiment`` on ranks > 0, a CSV writer, or None.

    Example::

        >>> is_summary_writer(None)
        False
    """
    return any(c.__name__ == "SummaryWriter" for c in type(obj).__mro__)


def _plain(obj: Any) -> Any:
    """Plain data for a weights-only checkpoint (tuples and sets become lists)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_plain(v) for v in items]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def step_hook(method: Callable[..., Any]) -> Callable[..., Any]:
    """Guard a per-step framework hook of an adapter: an internal failure becomes one warning
    per hook and exception type (with where it was raised) and training goes on; a deliberate
    stop (:class:`~initwatch.InitWatchError`, or what the alert policy raised for the user)
    propagates.

    Example::

        >>> class Adapter(AdapterSettings):
        ...     @step_hook
        ...     def on_step_end(self):
        ...         raise KeyError("bug")
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     Adapter().on_step_end()
        >>> "on_step_end failed and was skipped" in str(seen[0].message)
        True
    """

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        from initwatch.watch import DECISION, failure_message

        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            if isinstance(exc, InitWatchError) or getattr(exc, DECISION, False):
                raise
            failed = self.__dict__.setdefault("_hook_failures", set())
            key = f"{method.__name__}:{type(exc).__name__}"
            if key not in failed and is_rank_zero():
                failed.add(key)
                warnings.warn(
                    f"initwatch: {failure_message(method.__name__, exc)}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None

    return run


def is_rank_zero() -> bool:
    """True on rank 0 (or without ``torch.distributed``).

    Example::

        >>> is_rank_zero()
        True
    """
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class AdapterSettings:
    """The settings and alert state both adapters share, validated once at construction.

    Each adapter calls :meth:`_configure` from its ``__init__``; ``interval_name`` is what the
    framework calls the logging interval (``log_every_n_steps`` / ``logging_steps``).

    Example::

        >>> s = AdapterSettings()
        >>> s._configure("rezero", None, "logging_steps", "warn", None, "default", None, None,
        ...              1024, None, pretrained=False)
        >>> s.scheme, s.alerts
        ('rezero', [])
    """

    def _configure(
        self,
        scheme: str | None,
        interval: int | None,
        interval_name: str,
        on_alert: Any,
        scheme_options: Mapping[str, Any] | None,
        layers: str | Sequence[str],
        logdir: str | os.PathLike | None,
        rules: Any,
        update_sample: int,
        anatomy: Anatomy | None,
        dense_start: int = DENSE_START,
        max_interval: int | None = MAX_INTERVAL,
        pretrained: bool | None = None,
    ) -> None:
        from initwatch import validate as v

        name = type(self).__name__
        self.scheme = resolve_scheme(scheme)
        interval = v.optional_interval(interval_name, interval)
        dense_start = v.non_negative_int("dense_start", dense_start, f"{name}(dense_start=20)")
        if max_interval is not None:
            max_interval = v.positive_int(
                "max_interval", max_interval, f"{name}(max_interval=10), or None for no cap"
            )
        self.pretrained = v.pretrained_or_none(pretrained, f"{name}(pretrained=True)")
        validate_on_alert(on_alert)
        self.on_alert = on_alert
        self.scheme_options = v.scheme_options(self.scheme, scheme_options)
        self.layers = layers = v.layers_spec(layers)
        self.logdir = v.path_or_none("logdir", logdir, f"{name}(logdir='runs/exp1')")
        rules = v.rules_spec(rules)
        v.positive_int("update_sample", update_sample, f"{name}(update_sample=1024)")
        self.anatomy = v.anatomy_or_none(anatomy, f"{name}(anatomy=anatomy)")
        self.report: ReinitReport | None = None
        self._driver = StepDriver(
            every=interval,
            layers=layers,
            on_alert=on_alert,
            rules=rules,
            update_sample=update_sample,
            dense_start=int(dense_start),
            max_interval=int(max_interval) if max_interval is not None else None,
            pretrained=pretrained,
        )

    @property
    def alerts(self) -> list[Alert]:
        """The alerts raised so far (and those of the run this one resumed), oldest first."""
        return self._driver.alerts

    @property
    def context(self) -> RunContext | None:
        """The :class:`~initwatch.RunContext` the rules and remedies see (of the current or
        last run; None before the first)."""
        return self._driver.context


class StepDriver:
    """Maps a framework's step events onto one :class:`~initwatch.Watch` and keeps the alert
    history of the last fit (adapters :meth:`reset` it when a new fit starts that does not
    resume a checkpoint). Each adapter owns one; all the statistics, rules and
    writing stay in the Watch.

    Protocol per optimizer step: :meth:`begin` before the first micro-batch, :meth:`add_loss`
    per micro-batch (optional), :meth:`before_optimizer_step` once with the final gradients,
    :meth:`end` after the optimizer step. The step's loss is the mean of the micro-batch losses,
    or their sum when ``sum_losses`` is set (losses already divided by the number of
    micro-batches, as the Hugging Face Trainer's ``training_step`` returns them).

    Args:
        every: measure every this many optimizer steps (None: set by :meth:`start`).
        layers, on_alert, rules, update_sample, dense_start, max_interval,
            pretrained: passed to
            the Watch (the driver's defaults: off; the adapters pass ``DENSE_START`` and
            ``MAX_INTERVAL``).

    Example::

        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> driver = StepDriver(every=1, rules=False)
        >>> driver.start(model, context=RunContext())
        >>> driver.begin(0)
        True
        >>> loss = model(torch.randn(8, 4)).pow(2).mean(); loss.backward()
        >>> driver.add_loss(loss); driver.before_optimizer_step(opt); opt.step()
        >>> driver.end()
        []
        >>> driver.close(); driver.alerts
        []
    """

    def __init__(
        self,
        every: int | None = None,
        layers: str | Sequence[str] = "default",
        on_alert: Any = "warn",
        rules: Any = None,
        update_sample: int = 1024,
        dense_start: int = 0,
        max_interval: int | None = None,
        pretrained: bool | None = None,
    ) -> None:
        self.every = every
        self.dense_start = dense_start
        self.max_interval = max_interval
        self.pretrained = pretrained
        self.layers = layers
        self.on_alert = on_alert
        self.rules = rules
        self.update_sample = update_sample
        self.watch: Any = None
        self.step: int | None = None
        self.logging = False
        self.context: RunContext | None = None
        self._state: dict[str, Any] | None = None
        self._history: list[Alert] = []
        self._loss: torch.Tensor | None = None
        self._loss_n = 0
        self.sum_losses = False

    # ---- lifecycle ----------------------------------------------------------------------

    def start(
        self,
        model: nn.Module,
        *,
        context: RunContext,
        every: int | None = None,
        writer: Any = None,
        logdir: str | None = None,
        anatomy: Anatomy | None = None,
        rank: int = 0,
    ) -> None:
        """Create the Watch (hooks attached now: before any compiled forward) and load the
        state saved by an earlier fit or a checkpoint."""
        from initwatch.watch import Watch

        self.close()
        on_alert = self.on_alert
        if rank != 0 and on_alert == "warn":
            on_alert = _silent  # the alert policy warns on rank 0 only
        self.watch = Watch(
            model,
            writer=writer if rank == 0 else None,
            every=int(every or self.every or 50),
            layers=self.layers,
            on_alert=on_alert,
            context=context,
            anatomy=anatomy,
            rules=self.rules,
            update_sample=self.update_sample,
            logdir=logdir if rank == 0 else None,
            dense_start=self.dense_start,
            max_interval=self.max_interval,
            pretrained=self.pretrained,
        )
        if self._state is not None:
            self.watch.load_state_dict(self._state)
        self.context = self.watch.context
        self.step = None
        self.logging = False

    def close(self) -> None:
        """Write the summary and remove every hook (idempotent); the history is kept."""
        if self.watch is None:
            return
        watch, self.watch = self.watch, None
        try:
            watch.close()
        finally:
            self._state = _plain(watch.state_dict())
            self._history = list(watch.alerts)
            self.logging = False

    @property
    def started(self) -> bool:
        """True while a Watch is attached."""
        return self.watch is not None

    # ---- steps --------------------------------------------------------------------------

    def begin(self, step: int, measure: bool | None = None) -> bool:
        """Begin optimizer step ``step``; True when it is measured (``measure``: the
        framework's own cadence, None for the Watch's ``step % every``)."""
        self.step = int(step)
        self._loss, self._loss_n = None, 0
        watch = self.watch
        self.logging = bool(watch.begin_step(self.step, measure)) if watch is not None else False
        return self.logging

    def add_loss(self, loss: Any) -> None:
        """Add one micro-batch's loss (kept on the device) on a measured step."""
        if not self.logging or loss is None:
            return
        value = loss.detach().float().reshape(-1)[:1] if torch.is_tensor(loss) else None
        if value is None:
            try:
                value = torch.tensor([float(loss)])
            except (TypeError, ValueError):
                return
        self._loss = value if self._loss is None else self._loss + value.to(self._loss.device)
        self._loss_n += 1

    def before_optimizer_step(
        self, optimizer: Any, grad_norm_preclip: Any = None, **context: Any
    ) -> None:
        """Read the final gradients; ``context`` fields (lr, in_warmup, ...) are set first.
        ``grad_norm_preclip``: the global norm before clipping, when the gradients already are
        (see :meth:`initwatch.Watch.before_optimizer_step`)."""
        if self.watch is None:
            return
        if not self.logging:
            self.watch.before_optimizer_step(optimizer)  # only remembers the optimizer (its lr)
            return
        ctx = self.watch.context
        for key, value in context.items():
            if hasattr(ctx, key) and key != "extra":
                setattr(ctx, key, value)
            else:
                ctx.extra[key] = value
        self.watch.before_optimizer_step(optimizer, grad_norm_preclip=grad_norm_preclip)

    def end(self, skipped: bool = False) -> list[Alert]:
        """End the step; returns its new alerts (empty on steps that are not measured)."""
        if self.watch is None:
            return []
        loss = self._loss if self.sum_losses or not self._loss_n else self._loss / self._loss_n
        self._loss, self._loss_n = None, 0
        self.logging = False
        return list(self.watch.end_step(loss=loss, skipped=skipped))

    def check_scheme_live(self, scheme: str | None, framework: str) -> None:
        """Raise once the first measured step showed that no forward hook ran while the
        callback's ``scheme`` is on the model: the run would train without the scheme."""
        from initwatch.watch import hooks_not_run_message

        watch = self.watch
        if scheme is None or watch is None or watch.hooks_live is not False:
            return
        raise InitWatchError(f"{framework}: {hooks_not_run_message(scheme)}.")

    @property
    def should_stop(self) -> bool:
        """True once ``on_alert="stop"`` asked to stop."""
        return bool(self.watch is not None and self.watch.should_stop)

    # ---- history and state --------------------------------------------------------------

    @property
    def alerts(self) -> list[Alert]:
        """All alerts so far (earlier fits and resumed runs included), oldest first."""
        return list(self.watch.alerts) if self.watch is not None else list(self._history)

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the Watch's state (step, alert history, rule state)."""
        watch = _plain(self.watch.state_dict()) if self.watch is not None else self._state
        return {"version": STATE_VERSION, "watch": watch} if watch is not None else {}

    def reset(self, state: Mapping[str, Any] | None = None) -> None:
        """Forget the alert history and rule state of earlier fits (a new ``train()`` or trial
        starts clean), then restore ``state`` (a resumed checkpoint's) if given."""
        self._state = None
        self._history = []
        if state:
            self.load_state_dict(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; applied to the Watch now or when it starts."""
        watch = state.get("watch") if state else None
        if watch is None:
            return
        self._state = dict(watch)
        self._history = [Alert.from_dict(a) for a in watch.get("alerts", [])]
        if self.watch is not None:
            self.watch.load_state_dict(self._state)


def _silent(alert: Alert) -> None:
    """The alert policy of ranks > 0 under ``on_alert="warn"``: rank 0 warns for all."""


def describe_report(report: ReinitReport | None) -> str:
    """One line about a scheme application, for the adapters' info messages.

    Example::

        >>> describe_report(None)
        'no scheme applied'
    """
    if report is None:
        return "no scheme applied"
    return str(report).splitlines()[0]
