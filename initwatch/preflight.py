"""Pre-flight check: how each block's scale behaves across depth under each init, before a long run.

For the model's own init and each scheme that applies, :func:`run_check` builds the model with
random weights, measures it over a few forward and backward passes on random inputs, then runs a
short burst of optimizer steps at the planned learning rate over a few fixed random batches with
initwatch's rules judging every step (some failures, like a deep Post-LN stack's collapse, only
show after the first updates). It returns plain data (per-block activation RMS, backward-signal
RMS and gradient norm at init and after the burst, the losses, the alerts) and a recommendation
with its reason, like microsoft/mup's ``get_coord_data``: printing is ``initwatch check``'s job,
drawing :func:`initwatch.plots.check_profiles`'.

Example::

    >>> from initwatch.preflight import CheckSettings, run_check
    >>> result = run_check(CheckSettings(model="torch_encoder", depth=4, hidden=32, steps=6))
    >>> [v.name for v in result.variants][:2]
    ['own init', 'deepnet']
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from initwatch import catalogue
from initwatch.alerts import Alert
from initwatch.numbers import fmt

if TYPE_CHECKING:
    from initwatch.anatomy.model import Anatomy

OWN = "own init"
OPTIMIZERS = ("adam", "adamw", "sgd")
# the per-block depth profiles it measures: the statistics TensorBoard draws as heatmaps
STATS = tuple((s.name, f"{s.title} per block") for s in catalogue.CATALOGUE if s.heatmap)
DEFAULT_MAX_PARAMS = 200_000_000
# Two losses differ only when their gap exceeds this many standard errors (about 95 %).
NOISE_SE = 2.0

Progress = Callable[[str, int, int], None]
"""``progress(init_name, units_done, units_total)``: one unit is a pass or a burst step. An
init that will be skipped (:func:`skip_reason`) is reported once as ``(name, 0, 0)`` before any
init is measured, so a count can leave it out."""


def default_schemes() -> tuple[str, ...]:
    """Every scheme of the registry (:mod:`initwatch.schemes.registry`), in its order.

    Example::

        >>> default_schemes()[:3]
        ('deepnet', 't-fixup', 'rezero')
    """
    from initwatch.schemes.registry import SCHEMES

    return tuple(SCHEMES)


@dataclass
class CheckSettings:
    """What the pre-flight check builds and how it measures.

    Args:
        model: a family name (see :data:`initwatch.zoo.FAMILIES`), a Hugging Face config JSON
            file, or a ``save_pretrained`` directory (only its config is read).
        depth: blocks per stack (family default 12; for a config, overrides its depth).
        hidden: model width (family default 64; for a config, overrides its width).
        lr: the planned learning rate.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        steps: optimizer steps in the burst.
        passes: forward/backward passes at init (no update), averaged.
        batch: sequences (or images) per batch.
        seq: tokens per sequence.
        batches: fixed random batches the burst cycles through (the losses compared are means
            over several of them, not one batch's).
        schemes: schemes to try (None: every registered scheme; those that do not apply are
            skipped with the reason).
        seed: seeds weights and inputs.
        max_params: refuse to build a model larger than this (it runs on the CPU).

    Example::

        >>> CheckSettings(model="bert").steps
        30
    """

    model: str
    depth: int | None = None
    hidden: int | None = None
    lr: float = 1e-3
    optimizer: str = "adam"
    steps: int = 30
    passes: int = 3
    batch: int = 8
    seq: int = 32
    batches: int = 4
    schemes: tuple[str, ...] | None = None
    seed: int = 0
    max_params: int = DEFAULT_MAX_PARAMS

    @property
    def scheme_names(self) -> tuple[str, ...]:
        """The schemes tried: ``schemes``, or every registered one."""
        return default_schemes() if self.schemes is None else tuple(self.schemes)

    @property
    def units(self) -> int:
        """Progress units of one init: its passes plus its burst steps."""
        return self.passes + self.steps


@dataclass
class Variant:
    """The measurements of one init (the model's own, or a scheme).

    Args:
        name: ``"own init"`` or a scheme name.
        blocks: block names in depth order.
        init: ``{stat: {block: value}}`` averaged over the passes at init.
        after: ``{stat: {block: value}}`` at the last step of the burst.
        losses: the loss of every burst step.
        alerts: what the rules raised during the burst.
        skipped: why the scheme was not applied (then nothing was measured).
        batches: the fixed batches the burst cycled through.
        notes: the warnings applying the scheme gave (e.g. a part it could not find).

    Example::

        >>> Variant("rezero", skipped="not applicable").measured
        False
    """

    name: str
    blocks: list[str] = field(default_factory=list)
    init: dict[str, dict[str, float]] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    skipped: str | None = None
    batches: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        """False when the scheme was skipped."""
        return self.skipped is None

    @property
    def new_alerts(self) -> list[Alert]:
        """Alerts without their "still" updates."""
        return [a for a in self.alerts if not a.repeat]

    @property
    def errors(self) -> int:
        """New alerts of severity ``error``."""
        return sum(a.severity == "error" for a in self.new_alerts)

    @property
    def diverged(self) -> bool:
        """True when a loss of the burst was NaN or infinite."""
        return any(not math.isfinite(v) for v in self.losses)

    @property
    def start_loss(self) -> float:
        """Mean loss of the first step on each batch (the loss before training)."""
        head = self.losses[: max(1, self.batches)]
        return statistics.fmean(head) if head else math.nan

    def end_loss(self) -> tuple[float, float]:
        """Mean loss of the last quarter of the burst (at least one pass over every batch) and
        its standard error, from the spread of those losses.

        Example::

            >>> Variant("x", losses=[4.0, 4.0, 2.0, 1.0, 2.0, 1.0], batches=2).end_loss()
            (1.5, 0.5)
        """
        k = max(self.batches, len(self.losses) // 4, 1)
        tail = [v for v in self.losses[-k:] if math.isfinite(v)]
        if not tail or len(tail) < len(self.losses[-k:]):
            return math.nan, math.nan
        se = statistics.stdev(tail) / math.sqrt(len(tail)) if len(tail) > 1 else 0.0
        return statistics.fmean(tail), se

    @property
    def fell(self) -> bool:
        """The loss fell by more than its noise (:data:`NOISE_SE` standard errors)."""
        end, se = self.end_loss()
        return math.isfinite(end) and end + NOISE_SE * se < self.start_loss

    def grad_ratio(self, when: str = "after") -> float:
        """Smallest block gradient norm over the largest of the top quarter of blocks."""
        table_ = (self.after if when == "after" else self.init).get("grad_norm", {})
        values = [table_[b] for b in self.blocks if b in table_ and math.isfinite(table_[b])]
        if not values:
            return math.nan
        top = max(values[-max(1, len(values) // 4) :])
        return min(values) / top if top > 0 else math.nan

    @property
    def imbalance(self) -> float:
        """How far the gradient across depth is from even after the burst, in decades:
        ``|log10(grad_ratio)|`` (0: the lowest block gets as much as the top blocks)."""
        r = self.grad_ratio()
        return abs(math.log10(r)) if r > 0 and math.isfinite(r) else math.inf


@dataclass
class CheckResult:
    """What :func:`run_check` measured and concluded.

    Args:
        description: one line about the model.
        variants: one :class:`Variant` per init tried, the model's own first.
        recommendation: the init to use (``"own init"`` or a scheme name).
        reason: why, with the numbers.
        settings: the settings used.
        seconds: how long it took.

    Example::

        >>> CheckResult("m", [], OWN, "no alerts", CheckSettings("bert")).recommendation
        'own init'
    """

    description: str
    variants: list[Variant]
    recommendation: str
    reason: str
    settings: CheckSettings
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON): the settings, every variant's profiles, losses and alerts.

        Example::

            >>> CheckResult("m", [Variant(OWN)], OWN, "", CheckSettings("bert")).to_dict()[
            ...     "variants"][0]["name"]
            'own init'
        """
        from dataclasses import asdict

        out = asdict(self)
        for v, d in zip(self.variants, out["variants"], strict=True):
            d["alerts"] = [a.to_dict() for a in v.alerts]
        return out


# ------------------------------------------------------------------------------ measuring


def _optimizer(name: str, params: Any, lr: float) -> Any:
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def _output(out: Any) -> tuple[Any, bool]:
    """The main output tensor and whether it holds logits."""
    from initwatch.zoo import output_tensor

    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits, True
    return output_tensor(out), False


def _loss(model: Any, inputs: dict[str, Any], target: Any) -> Any:
    """Cross-entropy against fixed random labels for logits; MSE to a fixed target otherwise."""
    import torch.nn.functional as F

    y, _ = _output(model(**inputs))
    if target.dtype.is_floating_point:
        return F.mse_loss(y.float(), target)
    return F.cross_entropy(y.reshape(-1, y.shape[-1]).float(), target.reshape(-1))


def _make_target(model: Any, inputs: dict[str, Any], gen: Any) -> Any:
    """Random labels for logits, a random unit-variance tensor for other outputs."""
    import torch

    with torch.no_grad():
        y, logits = _output(model(**inputs))
    if logits and y.dim() >= 2 and y.shape[-1] > 1:
        return torch.randint(0, y.shape[-1], tuple(y.shape[:-1]), generator=gen)
    return torch.randn(tuple(y.shape), generator=gen)


def _profile(frame: Any, blocks: list[str]) -> dict[str, dict[str, float]]:
    from initwatch.sinks import aggregate_params

    params = aggregate_params(frame)
    out: dict[str, dict[str, float]] = {}
    for stat, _ in STATS:
        table_ = params[stat] if stat in params else frame.stat(stat)
        out[stat] = {b: float(table_[b]) for b in blocks if b in table_}
    return out


def _mean_profiles(profiles: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for stat, _ in STATS:
        names = {b for p in profiles for b in p.get(stat, {})}
        out[stat] = {
            b: statistics.fmean(p[stat][b] for p in profiles if b in p.get(stat, {})) for b in names
        }
    return out


def skip_reason(anatomy: Anatomy | None, scheme: str) -> str | None:
    """Why :func:`measure` skips ``scheme`` on a model of this anatomy (None: it runs): the
    registry's own short reason (``Scheme.applies``), or that initwatch cannot read the model.

    Example::

        >>> from initwatch import inspect, zoo
        >>> anatomy = inspect(zoo.build("gpt2", layers=2, hidden=16))
        >>> skip_reason(anatomy, "rezero"), skip_reason(anatomy, "deepnet")
        (None, 'Pre-LN: DeepNet needs Post-LN')
    """
    from initwatch.schemes.registry import applicability, get

    if anatomy is None:
        return "initwatch cannot read this model's blocks"
    verdict = applicability(anatomy).get(get(scheme).name, "applies")
    if verdict == "applies":
        return None
    head = "not applicable ("
    return verdict[len(head) : -1] if verdict.startswith(head) else verdict


def measure(
    source: Any, settings: CheckSettings, scheme: str | None, progress: Progress | None = None
) -> Variant:
    """Build the model, apply ``scheme`` (None: its own init) and measure it.

    Args:
        source: a :class:`~initwatch.zoo.ModelSource`.
        settings: what to measure.
        scheme: the scheme, or None for the model's own init.
        progress: called after every pass and step (see :data:`Progress`).

    Example::

        >>> from initwatch.zoo import model_source
        >>> s = CheckSettings("torch_encoder", depth=3, hidden=16, steps=3, passes=1)
        >>> v = measure(model_source("torch_encoder", 3, 16), s, "rezero")
        >>> v.blocks
        ['encoder.0', 'encoder.1', 'encoder.2']
    """
    import torch

    from initwatch.anatomy import try_inspect
    from initwatch.context import RunContext
    from initwatch.errors import InitWatchError
    from initwatch.schemes import reinit
    from initwatch.watch import Watch

    name = scheme or OWN
    notes: list[str] = []
    report = progress or (lambda *_: None)
    torch.manual_seed(settings.seed)
    model = source.build()
    model.train()
    anatomy = try_inspect(model)
    if scheme is not None:
        skip = skip_reason(anatomy, scheme)
        if skip is not None:
            return Variant(name, skipped=skip)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reinit(model, scheme, seed=settings.seed, anatomy=anatomy)
        except InitWatchError as exc:
            return Variant(name, skipped=" ".join(str(exc).split()))
        notes = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    gen = torch.Generator().manual_seed(1000 + settings.seed)
    opt = _optimizer(settings.optimizer, model.parameters(), settings.lr)
    done = 0

    # 1. Forward and backward passes at init, each on fresh random inputs; no update.
    probe = Watch(model, every=1, rules=False, on_alert="ignore", anatomy=anatomy)
    blocks: list[str] = []
    profiles = []
    try:
        for i in range(settings.passes):
            inputs = source.inputs(model, settings.batch, settings.seq, gen)
            target = _make_target(model, inputs, gen)
            probe.begin_step(i)
            loss = _loss(model, inputs, target)
            loss.backward()
            probe.before_optimizer_step(opt)
            probe.end_step(loss=loss.detach(), skipped=True)
            opt.zero_grad(set_to_none=True)
            frame = probe.last_frame
            assert frame is not None  # end_step always builds a frame on a measured step
            if not blocks:
                blocks = [i.name for i in frame.layers if i.kind == "block"]
            profiles.append(_profile(frame, blocks))
            done += 1
            report(name, done, settings.units)
    finally:
        probe.close()

    # 2. A burst of optimizer steps at the planned learning rate, cycling over a few fixed
    # random batches. The context names the scheme, so the rules grant a zero-started scheme
    # (the registry's ``starts_from_zero``) its grace.
    context = RunContext(
        scheme=scheme,
        optimizer=type(opt).__name__,
        lr=settings.lr,
        base_lr=settings.lr,
        warmup_steps=0,
        max_steps=settings.steps,
    )
    watch = Watch(model, every=1, on_alert="ignore", context=context, anatomy=anatomy)
    data = []
    for _ in range(max(1, settings.batches)):
        inputs = source.inputs(model, settings.batch, settings.seq, gen)
        data.append((inputs, _make_target(model, inputs, gen)))
    losses: list[float] = []
    try:
        for step in range(settings.steps):
            inputs, target = data[step % len(data)]
            with watch.step(step, opt) as scope:
                loss = _loss(model, inputs, target)
                loss.backward()
                opt.step()
                scope.loss = loss.detach()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            done += 1
            report(name, done, settings.units)
            if not math.isfinite(losses[-1]):
                break
        after = _profile(watch.last_frame, blocks) if watch.last_frame else {}
    finally:
        watch.close()
    return Variant(
        name,
        blocks=blocks,
        init=_mean_profiles(profiles),
        after=after,
        losses=losses,
        alerts=list(watch.alerts),
        batches=len(data),
        notes=notes,
    )


# ------------------------------------------------------------------------------ judging


def _fmt(x: float) -> str:
    return fmt(x, fixed=True)  # the numbers of `initwatch check`'s tables, compared side by side


def _loss_text(v: Variant) -> str:
    end, se = v.end_loss()
    return (
        f"loss {_fmt(v.start_loss)} -> {_fmt(end)} ± {_fmt(se)} "
        f"(last {max(v.batches, len(v.losses) // 4, 1)} of {len(v.losses)} steps, "
        f"{v.batches} batch{'es' if v.batches != 1 else ''})"
    )


def _short(v: Variant) -> str:
    end, se = v.end_loss()
    return f"{v.name} (loss {_fmt(end)} ± {_fmt(se)}, lowest/top gradient {_fmt(v.grad_ratio())})"


def _ratio_text(v: Variant) -> str:
    r = v.grad_ratio()
    return f"lowest block's gradient {_fmt(r)}x the top blocks'" if math.isfinite(r) else ""


def _first_alert(v: Variant) -> str:
    a = v.new_alerts[0]
    extra = f" (+{len(v.new_alerts) - 1} more)" if len(v.new_alerts) > 1 else ""
    return f"{a.kind} at {a.layer} by step {a.step}{extra}"


def rank(variants: Sequence[Variant]) -> list[Variant]:
    """Clean inits (no alert, loss fell beyond its noise), best first.

    A loss counts as lower only when it beats the lowest by more than :data:`NOISE_SE`
    combined standard errors; among inits whose losses are within that noise of the lowest,
    the one whose gradient is most even across depth (:attr:`Variant.imbalance`) comes first.

    Example::

        >>> a = Variant("a", losses=[3.0, 3.0, 1.00, 1.02], batches=2)
        >>> b = Variant("b", losses=[3.0, 3.0, 1.01, 1.01], batches=2)
        >>> a.after = {"grad_norm": {}}; b.after = {"grad_norm": {}}
        >>> [v.name for v in rank([a, b])]  # same loss within noise, same (unknown) balance
        ['a', 'b']
    """
    clean = [v for v in variants if v.measured and v.losses and not v.new_alerts and v.fell]
    if not clean:
        return []
    best_end, best_se = min((v.end_loss() for v in clean), key=lambda t: t[0])

    def tied(v: Variant) -> bool:
        end, se = v.end_loss()
        return end - best_end <= NOISE_SE * math.hypot(se, best_se)

    return sorted(clean, key=lambda v: (not tied(v), v.imbalance, v.end_loss()[0]))


def recommend(variants: Sequence[Variant], settings: CheckSettings) -> tuple[str, str]:
    """The init to use and why, from the measured variants.

    Health first, then loss: the model's own init is kept when it raised no alert and its loss
    fell by more than its noise. Otherwise the clean schemes are ranked by :func:`rank`: the
    lowest loss at the end of the burst (mean over the last quarter, several batches), where
    losses within noise of each other are decided by the most even gradient across depth.
    When every init alerts, the one with the fewest alerts (errors first) is named, with the
    own init's remedy.

    Example::

        >>> own = Variant(OWN, losses=[5.0, 1.0])
        >>> recommend([own], CheckSettings("bert"))[0]
        'own init'
    """
    measured = [v for v in variants if v.measured and v.losses]
    if not measured:
        return OWN, "nothing could be measured"
    own = next((v for v in measured if v.name == OWN), None)
    at = f"at lr {settings.lr:g} with {settings.optimizer}"
    if own is not None and not own.new_alerts and own.fell:
        parts = [f"the model's own init raised no alert {at}: {_loss_text(own)}"]
        if _ratio_text(own):
            parts.append(_ratio_text(own))
        return OWN, ", ".join(parts) + "; no scheme is needed"
    ranked = rank([v for v in measured if v.name != OWN])
    why_not_own = ""
    if own is not None:
        why_not_own = (
            f"the own init raised {_first_alert(own)}"
            if own.new_alerts
            else f"the own init did not train ({_loss_text(own)})"
        )
    if ranked:
        best = ranked[0]
        parts = [why_not_own, f"{best.name} raised no alert {at}: {_loss_text(best)}"]
        if _ratio_text(best):
            parts.append(_ratio_text(best))
        if ranked[1:]:
            parts.append("also clean: " + ", ".join(_short(v) for v in ranked[1:]))
        return best.name, "; ".join(p for p in parts if p)
    best = min(measured, key=lambda v: (v.diverged, v.errors, len(v.new_alerts), v.end_loss()[0]))
    advice = ""
    if own is not None and own.new_alerts:
        advice = f"; the remedy for the own init: {own.new_alerts[0].remedy}"
    return best.name, (
        f"every init alerted or did not train {at}; {best.name} had the fewest alerts "
        f"({len(best.new_alerts)}: {_first_alert(best) if best.new_alerts else 'none'}), "
        f"{_loss_text(best)}. Consider a lower learning rate or a warmup{advice}"
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' warnings about tiny test configs (e.g. token ids beyond a small vocab)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def source_of(settings: CheckSettings) -> Any:
    """The :class:`~initwatch.zoo.ModelSource` of ``settings.model`` (see
    :func:`initwatch.zoo.model_source`).

    Example::

        >>> source_of(CheckSettings("bert", depth=2, hidden=32)).description
        'bert (family), 2 blocks per stack, hidden 32'
    """
    from initwatch.zoo import model_source

    with _quiet_transformers():
        return model_source(settings.model, settings.depth, settings.hidden, settings.max_params)


def run_check(
    settings: CheckSettings, progress: Progress | None = None, source: Any = None
) -> CheckResult:
    """Measure the own init and every scheme of ``settings``; recommend one.

    Args:
        settings: what to build and measure.
        progress: called after every pass and step of every init (see :data:`Progress`).
        source: the :class:`~initwatch.zoo.ModelSource` (default: :func:`source_of`).

    Example::

        >>> r = run_check(CheckSettings("gpt2", depth=2, hidden=32, steps=3, passes=1,
        ...                             schemes=("rezero",)))
        >>> [v.name for v in r.variants]
        ['own init', 'rezero']
    """
    start = time.perf_counter()
    source = source if source is not None else source_of(settings)
    with _quiet_transformers():
        if progress is not None:  # tell it first which inits will be skipped (one more build)
            from initwatch.anatomy import try_inspect

            anatomy = try_inspect(source.build())
            for scheme in settings.scheme_names:
                if skip_reason(anatomy, scheme) is not None:
                    progress(scheme, 0, 0)
        variants = [measure(source, settings, s, progress) for s in (None, *settings.scheme_names)]
    choice, reason = recommend(variants, settings)
    return CheckResult(
        source.description, variants, choice, reason, settings, time.perf_counter() - start
    )
