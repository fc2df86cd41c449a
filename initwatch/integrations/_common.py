"""What the Lightning and Hugging Face adapters share: applying a scheme once, the run context,
and driving a :class:`~initwatch.Watch` through a framework's step events."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from initwatch.alerts import Alert
from initwatch.anatomy import Anatomy, try_inspect
from initwatch.context import RunContext
from initwatch.errors import AlreadyAppliedError, InitWatchError
from initwatch.schemes import ReinitReport, decide_pretrained, reinit, scheme_name
from initwatch.schemes.base import applied_scheme
from initwatch.schemes.registry import key_scheme
from initwatch.vocabulary import LayersSpec, MicroBatchLoss, OnAlertSpec, RulesSpec
from initwatch.watch import DENSE_START, MAX_INTERVAL  # noqa: F401 (the adapters' defaults)

if TYPE_CHECKING:
    from initwatch.frame import Frame
    from initwatch.watch import Watch

STATE_VERSION = 1
OWN_RUN = "initwatch_logs"  # directory of the callback's own TensorBoard run


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


def resolve_scheme(scheme: str | None, call: str = "initwatch.reinit(model, {})") -> str | None:
    """The canonical scheme name (``None`` stays ``None``); ``ValueError`` for an unknown one,
    its example written as ``call`` (``{}`` where the scheme goes).

    Example::

        >>> resolve_scheme("T-Fixup"), resolve_scheme(None)
        ('t-fixup', None)
    """
    return None if scheme is None else scheme_name(scheme, call)


def validate_on_alert(on_alert: OnAlertSpec) -> None:
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


def is_summary_writer(obj: Any) -> bool:
    """True for a TensorBoard ``SummaryWriter`` (torch's or tensorboardX's); False for
    Lightning's ``_DummyExperiment`` on ranks > 0, a CSV writer, or None.

    Example::

        >>> is_summary_writer(None)
        False
    """
    return any(c.__name__ == "SummaryWriter" for c in type(obj).__mro__)


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
    """The settings, the :class:`~initwatch.Watch` and the resume state both adapters share,
    validated once at construction.

    Each adapter calls :meth:`_configure` from its ``__init__``; ``interval_name`` is what the
    framework calls the logging interval (``log_every_n_steps`` / ``logging_steps``). The
    adapter creates one Watch per fit with :meth:`_start_watch` and maps its framework's
    events onto it; everything else (micro-batch losses, the schedule's facts, the alert
    history, the state a resume restores) is the Watch's.

    Attributes:
        watch: the :class:`~initwatch.Watch` while a fit runs (its ``frames``, ``last_frame``,
            ``context``), None outside one: it is closed and released when the fit ends (so
            it keeps no model alive); ``alerts``, ``context`` and the state stay.

    Example::

        >>> s = AdapterSettings()
        >>> s._configure("rezero", None, "logging_steps", "warn", None, "default", None, None,
        ...              1024, None, pretrained=False)
        >>> s.scheme, s.alerts, s.watch
        ('rezero', [], None)
    """

    def _configure(
        self,
        scheme: str | None,
        interval: int | None,
        interval_name: str,
        on_alert: OnAlertSpec,
        scheme_options: Mapping[str, Any] | None,
        layers: LayersSpec,
        logdir: str | os.PathLike[str] | None,
        rules: RulesSpec,
        update_sample: int,
        anatomy: Anatomy | None,
        dense_start: int = DENSE_START,
        max_interval: int | None = MAX_INTERVAL,
        pretrained: bool | None = None,
    ) -> None:
        from initwatch import validate as v

        name = type(self).__name__
        self.scheme = resolve_scheme(scheme, f"{name}(scheme={{}})")
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
        self.watch: Watch | None = None
        self._resume: dict[str, Any] | None = None  # a checkpoint's Watch state, until it starts
        self._last: dict[str, Any] | None = None  # the state of the last fit's Watch
        self._history: list[Alert] = []  # and its alerts
        self._last_context: RunContext | None = None
        self._last_frames: list[Frame] = []  # the last Watch's recent frames
        self._watch_settings: dict[str, Any] = {
            "layers": layers,
            "on_alert": on_alert,
            "rules": rules,
            "update_sample": update_sample,
            "dense_start": int(dense_start),
            "max_interval": int(max_interval) if max_interval is not None else None,
            "pretrained": pretrained,
        }

    def _start_watch(
        self,
        model: nn.Module,
        *,
        context: RunContext,
        every: int,
        writer: Any = None,
        logdir: str | None = None,
        anatomy: Anatomy | None = None,
        micro_batch_loss: MicroBatchLoss = "mean",
    ) -> Watch:
        """Close the last fit's Watch and create this fit's (hooks attached now: before any
        compiled forward), resuming the state :meth:`_restore_state` was given, if any."""
        from initwatch.selection import LayerPatternError
        from initwatch.watch import Watch

        self._close_watch()
        state, self._resume = self._resume, None
        try:
            self.watch = Watch(
                model,
                writer=writer,
                every=int(every),
                context=context,
                anatomy=anatomy,
                logdir=logdir,
                micro_batch_loss=micro_batch_loss,
                state=state,
                **self._watch_settings,
            )
        except LayerPatternError as exc:  # its example in the caller's API, not Watch's
            raise exc.for_call(f"{type(self).__name__}(layers={{}})") from None
        return self.watch

    @property
    def _open(self) -> Watch | None:
        """The Watch while it watches, else None (also after the policy closed it)."""
        watch = self.watch
        return watch if watch is not None and not watch.closed else None

    def _close_watch(self) -> None:
        """Write the summary, remove every hook and release the Watch (idempotent); its
        alerts, context and state stay."""
        watch, self.watch = self.watch, None
        if watch is None:
            return
        try:
            watch.close()
        finally:
            self._last = watch.state_dict()
            self._history = list(watch.alerts)
            self._last_context = watch.context
            self._last_frames = list(watch.frames)

    def _fresh_state(self) -> None:
        """A new fit that resumes nothing: the next Watch starts with an empty history."""
        self._resume = None

    def _restore_state(self, state: Mapping[str, Any] | None) -> None:
        """Resume :meth:`_saved_state`: into the open Watch now, else into the next one."""
        watch = state.get("watch") if state else None
        if not watch:
            return
        if self.watch is not None:
            self.watch.load_state_dict(watch)
        else:
            self._resume = dict(watch)

    def _saved_state(self) -> dict[str, Any]:
        """Plain data for a checkpoint: the Watch's state (step, alert history, rule state)."""
        if self.watch is not None:
            watch: dict[str, Any] | None = self.watch.state_dict()
        else:
            watch = self._resume if self._resume is not None else self._last
        return {"version": STATE_VERSION, "watch": watch} if watch else {}

    @property
    def alerts(self) -> list[Alert]:
        """The alerts raised so far (and those of the run this one resumed), oldest first."""
        if self.watch is not None:
            return list(self.watch.alerts)
        if self._resume is not None:
            return [Alert.from_dict(a) for a in self._resume.get("alerts", [])]
        return list(self._history)

    @property
    def frames(self) -> list[Frame]:
        """The most recent frames (at most ``initwatch.watch.FRAME_HISTORY``) of the current
        or last run, oldest first; they stay after the run ends, when :attr:`watch` is
        released. Empty before the first measured step.

        Example::

            >>> from initwatch.integrations.lightning import InitWatch
            >>> InitWatch().frames
            []
        """
        return list(self.watch.frames) if self.watch is not None else list(self._last_frames)

    @property
    def last_frame(self) -> Frame | None:
        """The newest of :attr:`frames`, or None.

        Example::

            >>> from initwatch.integrations.lightning import InitWatch
            >>> InitWatch().last_frame is None
            True
        """
        frames = self.watch.frames if self.watch is not None else self._last_frames
        return frames[-1] if frames else None  # (no copy of the history for one frame)

    @property
    def context(self) -> RunContext | None:
        """The :class:`~initwatch.RunContext` the rules and remedies see (of the current or
        last run; None before the first)."""
        return self.watch.context if self.watch is not None else self._last_context


def describe_report(report: ReinitReport | None) -> str:
    """One line about a scheme application, for the adapters' info messages.

    Example::

        >>> describe_report(None)
        'no scheme applied'
    """
    if report is None:
        return "no scheme applied"
    return report.headline()
