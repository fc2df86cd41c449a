"""One detector per pathology: each reads a frame (and a short history) and returns findings.

A finding is a condition seen in one frame; :class:`~initwatch.rules.Rules` turns findings that
persist into alerts. Detectors never raise alerts themselves and keep no state of their own:
the history they read and extend belongs to the engine (so it is checkpointed with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar

import numpy as np

from initwatch.alerts import AlertKind, Severity
from initwatch.context import RunContext
from initwatch.frame import Frame, LayerInfo
from initwatch.numbers import fmt
from initwatch.rules.depth import act_depth_series, decay_ratio, grad_depth_series, growth_ratios
from initwatch.rules.thresholds import Thresholds
from initwatch.rules.view import (
    Stream,
    Unit,
    finite,
    median,
    name_list,
    param_units,
)
from initwatch.schemes.registry import grace_schemes

K = AlertKind
GRACE_SCHEMES = grace_schemes()  # read from the scheme registry (starts_from_zero)
FP16_MAX = 65504.0
EARLY_CLIMB = 2.0  # a loss above this multiple of the first one is not an early-baseline value


@dataclass
class Finding:
    """A condition seen in one frame, before persistence and de-duplication.

    Args:
        kind: an :class:`~initwatch.alerts.AlertKind` value.
        scope: what the cause is about (a stack, ``"model"``, ``"fp16"``...); one alert per
            ``kind/scope`` at a time.
        layer: the worst layer.
        value: its measured value; threshold: the threshold it crossed.
        message: one sentence with the evidence numbers.
        layers: every affected layer, worst first.
        evidence: the numbers remedies use.
        score: how far past the threshold (log10 units); the worst finding of a cause wins.
        severity: ``"warning"`` or ``"error"``.
        immediate: raise without waiting for persistence (non-finite values).
        layer_values: the value (in ``value``'s unit) of each affected layer where known, so
            "still" updates can keep naming the same worst layer while the values are within
            noise of each other.

    Example::

        >>> f = Finding("dead_units", "model", "net.1", 0.99, 0.95, "99% zeros", ["net.1"], {}, 0.1)
        >>> f.key
        'dead_units/model'
    """

    kind: str
    scope: str
    layer: str
    value: float
    threshold: float
    message: str
    layers: list[str]
    evidence: dict[str, Any]
    score: float
    severity: str = Severity.WARNING.value
    immediate: bool = False
    layer_values: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The cause: ``kind/scope``."""
        return f"{self.kind}/{self.scope}"


@dataclass
class Inputs:
    """What every detector reads.

    Args:
        frame: the frame.
        context: the run context.
        th: thresholds.
        history: ``series name -> recent values`` (owned by the engine, extended by detectors).
        warmup_frames: frames of history needed before a history baseline is trusted.

    Example::

        >>> from initwatch.frame import Frame
        >>> Inputs(Frame(0, [], {}), RunContext(), Thresholds(), {}, 5).skipped
        False
    """

    frame: Frame
    context: RunContext
    th: Thresholds
    history: dict[str, list[float]] = field(default_factory=dict)
    warmup_frames: int = 5

    @property
    def skipped(self) -> bool:
        """True when an AMP scaler skipped this step (gradients overflowed on purpose).

        Example::

            >>> f = Frame(0, [], {}, {"skipped_step": 1.0})
            >>> Inputs(f, RunContext(), Thresholds()).skipped
            True
        """
        return self.frame.globals.get("skipped_step", 0.0) == 1

    @property
    def lr(self) -> float | None:
        """The learning rate of this frame (the frame's, else the context's).

        Example::

            >>> Inputs(Frame(0, [], {}), RunContext(lr=3e-4), Thresholds()).lr
            0.0003
        """
        lr = self.frame.globals.get("lr")
        if finite(lr):
            return float(lr)
        return self.context.lr

    @property
    def fp16(self) -> bool:
        """True under float16 precision (not bfloat16).

        Example::

            >>> Inputs(Frame(0, [], {}), RunContext(precision="16-mixed"), Thresholds()).fp16
            True
        """
        return self.context.fp16

    @property
    def grace(self) -> bool:
        """True while block weights are small or zero by construction: the first
        ``th.scheme_grace_steps`` steps (and any warmup) under a scheme the registry marks
        ``starts_from_zero`` (ReZero, T-Fixup). Depth-wise gradient decay across blocks, the
        history-based exploding rules (gradient spikes, activation growth over time) and
        too-small updates are not judged then (gradients, outputs and updates grow from ~0 as
        the gates open); the gradient ceiling, non-finite values and too-large updates are.

        Example::

            >>> Inputs(Frame(3, [], {}), RunContext(scheme="rezero"), Thresholds()).grace
            True
        """
        return (self.context.scheme or "").lower() in GRACE_SCHEMES and (
            self.frame.step < self.th.scheme_grace_steps or self.context.in_warmup
        )

    def baseline(self, series: str) -> float | None:
        """Median of the series' history once ``warmup_frames`` values were seen, else None.

        Example::

            >>> x = Inputs(Frame(0, [], {}), RunContext(), Thresholds(), {"g": [1.0, 3.0]}, 2)
            >>> x.baseline("g"), x.baseline("other")
            (2.0, None)
        """
        h = self.history.get(series, [])
        return median(h) if len(h) >= self.warmup_frames else None

    def remember(self, series: str, value: float) -> None:
        """Append a finite value to a series, keeping ``th.history`` values.

        Example::

            >>> x = Inputs(Frame(0, [], {}), RunContext(), Thresholds())
            >>> x.remember("g", 1.0); x.remember("g", float("nan")); x.history
            {'g': [1.0]}
        """
        if finite(value):
            h = self.history.setdefault(series, [])
            h.append(float(value))
            del h[: -self.th.history]


def _picked(mask: np.ndarray, values: np.ndarray) -> tuple[list[int], list[float]]:
    where = np.flatnonzero(mask)
    return where.tolist(), values[where].tolist()


def _log_ratio(a: float, b: float) -> float:
    if a <= 0 or b <= 0:
        return math.inf
    return math.log10(a / b)


_Hit = TypeVar("_Hit", bound=tuple[Any, ...])  # a hit: (measured value, what it is of, ...)


def _worst_first(hits: Iterable[_Hit], largest: bool = True) -> list[_Hit]:
    """Hits ordered worst first: the largest value first (the smallest with ``largest=False``);
    equal values keep the order given (the sort is stable), so the earlier layer wins.

    Example::

        >>> _worst_first([(2.0, "a"), (5.0, "b"), (5.0, "c")])
        [(5.0, 'b'), (5.0, 'c'), (2.0, 'a')]
    """
    return sorted(hits, key=itemgetter(0), reverse=largest)


def _more(names: list[str], what: str) -> str:
    """The tail of a message naming every affected layer, when there is more than one.

    Example::

        >>> _more(["b1", "b2"], "layers above it"), _more(["b1"], "layers above it")
        ('; 2 layers above it: b1, b2', '')
    """
    return f"; {len(names)} {what}: {name_list(names)}" if len(names) > 1 else ""


# --------------------------------------------------------------------------- nonfinite
def nonfinite(x: Inputs) -> list[Finding]:
    """Any NaN/Inf in activations, gradients (unless the step was skipped) or the loss.

    Names the first non-finite layer in forward order: activations come before gradients.

    Example::

        >>> ls = [LayerInfo(n, "block", i, n) for i, n in enumerate(["b0", "b1", "b2"])]
        >>> f = Frame(0, ls, {"act_nonfinite": {"b0": 0.0, "b1": 4.0, "b2": 9.0}})
        >>> [(x.layer, x.severity) for x in nonfinite(Inputs(f, RunContext(), Thresholds()))]
        [('b1', 'error')]
    """
    f = x.frame
    layers = f.layers
    ix = f.index()
    # (comparisons with NaN are False and warn about nothing)
    act_count = f.column("act_nonfinite")  # inf: present, not counted yet
    hit = ~ix.is_param & ((act_count > 0) | (f.column("act_absmax") == math.inf))
    acts = [
        (layers[i], c if finite(c) else math.inf)
        for i, c in zip(*_picked(hit, act_count), strict=True)
    ]
    grads: list[tuple[LayerInfo, float]] = []
    gnorm = f.globals.get("grad_norm_global")
    if not x.skipped:
        trainable = ix.is_param.copy()
        for i in np.flatnonzero(trainable).tolist():
            trainable[i] = layers[i].trainable
        gcount = f.column("grad_nonfinite")
        hit = trainable & (
            (np.isfinite(gcount) & (gcount > 0)) | (f.column("grad_norm") == math.inf)
        )
        grads = [
            (layers[i], c if finite(c) else math.inf)
            for i, c in zip(*_picked(hit, gcount), strict=True)
        ]
    bad_global = gnorm is not None and not x.skipped and not finite(gnorm)
    loss = f.globals.get("loss")
    bad_loss = loss is not None and not finite(loss)
    if not (acts or grads or bad_global or bad_loss):
        return []
    parts = []
    if acts:
        first, count = acts[0]
        where, what = "activation", f"output of {first.name}"
    elif grads:
        first, count = grads[0]
        where, what = "gradient", f"gradient of {first.name}"
    else:
        first, count = None, math.nan
        where, what = "global", "global gradient norm" if bad_global else "loss"
    layer = first.name if first is not None else "*"
    if first is not None:
        n = f"{int(count)} non-finite values" if finite(count) else "non-finite values"
        parts.append(f"{n} in the {what}, the first in forward order")
    else:
        parts.append(f"non-finite {what}")
    others = [i.name for i, _ in acts[1:]] + [i.name for i, _ in grads[(0 if acts else 1) :]]
    if others:
        parts.append(f"also in {len(others)} later layers: {name_list(others)}")
    if gnorm is not None:
        parts.append(f"global grad norm {fmt(gnorm)}")
    if loss is not None:
        parts.append(f"loss {fmt(loss)}")
    affected = [layer] + others
    return [
        Finding(
            K.NONFINITE.value,
            "model",
            layer,
            float(count) if finite(count) else math.inf,
            0.0,
            "; ".join(parts),
            affected,
            {
                "where": where,
                "count": float(count) if finite(count) else math.inf,
                "grad_norm_global": gnorm,
                "loss": loss,
                "precision": x.context.precision,
                "lr": x.lr,
            },
            math.inf,
            Severity.ERROR.value,
            immediate=True,
        )
    ]


# --------------------------------------------------------------------------- gradients
def vanishing_gradient(x: Inputs) -> list[Finding]:
    """Depth-wise decay of block gradient norms and of the backward signal; absolute floor.

    Example::

        >>> ps = [LayerInfo(f"b{i}.w", "param", i, f"b{i}.w", "enc", i) for i in range(4)]
        >>> g = {"grad_norm": {"b0.w": 1e-5, "b1.w": 1e-2, "b2.w": 0.1, "b3.w": 0.1}}
        >>> x = Inputs(Frame(0, ps, g), RunContext(), Thresholds())
        >>> [(f.layer, f.value) for f in vanishing_gradient(x)]
        [('enc.0', 0.0001)]
    """
    th, f = x.th, x.frame
    out: list[Finding] = []
    # the depth comparisons (initwatch.rules.depth, which the dashboards draw too)
    for stat, stack, items in grad_depth_series(f, grace=x.grace):
        if len(items) >= th.min_layers:
            found = _depth_decay(x, stack, items, _DEPTH_WHAT[stat])
            for finding in found:
                finding.evidence["stat"] = stat  # which statistic the ratio is of
            out += found
    for stack, us in param_units(f).items():
        norms = [(u, u.grad_norm(f, skip_blocks=x.grace)) for u in us]
        norms = [(u, g) for u, g in norms if finite(g)]
        low = _worst_first(((g, u.name) for u, g in norms if g < th.grad_floor), largest=False)
        if low:
            g, name = low[0]
            names = [n for _, n in low]
            out.append(
                Finding(
                    K.VANISHING_GRADIENT.value,
                    stack,
                    name,
                    g,
                    th.grad_floor,
                    f"gradient norm of {name} is {fmt(g)}, below the floor {fmt(th.grad_floor)}"
                    + _more(names, "layers below it"),
                    names,
                    _grad_evidence(x, stack, {"grad_norm": g, "source": "floor"}),
                    _log_ratio(th.grad_floor, g),
                )
            )
    return out


# what vanishing_gradient's message calls each depth series
_DEPTH_WHAT = {"grad_norm": "gradient norm", "out_grad_rms": "backward signal (out_grad_rms)"}


def _grad_evidence(x: Inputs, stack: str, ev: dict[str, Any]) -> dict[str, Any]:
    depth = x.context.depth.get(stack) if stack in x.context.depth else None
    ev.update({"stack": stack, "depth": depth, "lr": x.lr})
    return ev


def _depth_decay(x: Inputs, stack: str, items: list[tuple[str, float]], what: str) -> list[Finding]:
    th = x.th
    found = decay_ratio(items)
    if found is None or not found[0] < th.grad_depth_ratio:
        return []
    ratio, name, ref = found
    low = _worst_first(
        ((v / ref, n) for n, v in items if v / ref < th.grad_depth_ratio), largest=False
    )
    names = [n for _, n in low]
    value = dict(items)[name]
    msg = (
        f"{what} of {name} is {fmt(value)}, {fmt(ratio)}x that of the top layers ({fmt(ref)}); "
        f"{len(names)} of {len(items)} layers below {fmt(th.grad_depth_ratio)}x: {name_list(names)}"
    )
    ev = _grad_evidence(
        x,
        stack,
        {"ratio": ratio, "reference": ref, "source": "depth", "n_layers": len(items)},
    )
    ev["n_affected"] = len(names)
    return [
        Finding(
            K.VANISHING_GRADIENT.value,
            stack,
            name,
            ratio,
            th.grad_depth_ratio,
            msg,
            names,
            ev,
            _log_ratio(th.grad_depth_ratio, ratio),
            layer_values={n: r for r, n in low},
        )
    ]


def exploding_gradient(x: Inputs) -> list[Finding]:
    """Global gradient norm against its own history (median) and an absolute ceiling; a
    block's (module's) gradient norm against its own history when it carries a real share of
    the global norm.

    Example::

        >>> x = Inputs(Frame(0, [], {}, {"grad_norm_global": 5e3}), RunContext(), Thresholds())
        >>> [(f.kind, f.evidence["source"]) for f in exploding_gradient(x)]
        [('exploding_gradient', 'ceiling')]
    """
    th, f = x.th, x.frame
    units = [u for us in param_units(f, blocks_only=False).values() for u in us]
    unorms = {u.name: u.grad_norm(f) for u in units}
    g = f.globals.get("grad_norm_global")
    if not finite(g):
        parts = [v for v in unorms.values() if finite(v)]
        g = math.sqrt(sum(v * v for v in parts)) if parts else math.nan
    out: list[Finding] = []
    if x.grace:
        # zero-started branches: gradients grow from ~0 while the gates open, by design. Only
        # the absolute ceiling is judged, and the history starts once the grace is over.
        if finite(g) and g > th.grad_norm_ceiling:
            out.append(_explosion(x, g, None, unorms, False))
        return out
    if finite(g):
        base = x.baseline("grad_norm_global")
        spike = base is not None and base > 0 and g > th.grad_spike_factor * base
        ceiling = g > th.grad_norm_ceiling
        if spike or ceiling:
            out.append(_explosion(x, g, base, unorms, spike))
        else:
            out += _layer_spike(x, g, base, unorms)
    x.remember("grad_norm_global", g)
    for name, v in unorms.items():
        x.remember(f"grad:{name}", v)
    return out


def _layer_spike(
    x: Inputs, g: float, base: float | None, unorms: dict[str, float]
) -> list[Finding]:
    """One block/module whose gradient rose past the spike factor against its own median,
    while carrying a real share of the global norm (the global norm may hide it)."""
    th = x.th
    hits = []
    for name, v in unorms.items():
        b = x.baseline(f"grad:{name}")
        if b is None or not (b > 0 and finite(v)):
            continue
        if v > th.grad_spike_factor * b and v >= th.grad_spike_share * g:
            hits.append((v / b, name, v, b))
    if not hits:
        return []
    ranked = _worst_first(hits)
    r, name, v, b = ranked[0]
    names = [h[1] for h in ranked]
    msg = (
        f"gradient norm of {name} is {fmt(v)}, {fmt(r)}x its median {fmt(b)}, and "
        f"{fmt(100 * v / g)}% of the global norm {fmt(g)}"
    ) + _more(names, f"layers rose over {fmt(th.grad_spike_factor)}x")
    ev = {
        "grad_norm": g,
        "layer_grad_norm": v,
        "layer_baseline": b,
        "baseline": base,
        "source": "layer_spike",
        "lr": x.lr,
    }
    thr = th.grad_spike_factor * b
    return [
        Finding(
            K.EXPLODING_GRADIENT.value, "model", name, v, thr, msg, names, ev, _log_ratio(v, thr)
        )
    ]


def _explosion(
    x: Inputs, g: float, base: float | None, unorms: dict[str, float], spike: bool
) -> Finding:
    th = x.th
    ratios = {}
    for name, v in unorms.items():
        b = x.baseline(f"grad:{name}")
        if finite(v) and b is not None and b > 0:
            ratios[name] = v / b
    if ratios:
        ranked = sorted(ratios, key=lambda n: -ratios[n])
        names = [n for n in ranked if ratios[n] > th.grad_spike_factor] or ranked[:1]
        where = f"largest rise at {names[0]} ({fmt(ratios[names[0]])}x its median)"
    else:
        ranked = sorted((n for n in unorms if finite(unorms[n])), key=lambda n: -unorms[n])
        names = ranked[:1]
        where = f"largest at {names[0]} ({fmt(unorms[names[0]])})" if names else ""
    layer = names[0] if names else "*"
    h = x.history.get("grad_norm_global", [])
    if spike:
        assert base is not None
        value, threshold = g, th.grad_spike_factor * base
        msg = f"global gradient norm {fmt(g)} is {fmt(g / base)}x its median {fmt(base)}"
    else:
        value, threshold = g, th.grad_norm_ceiling
        msg = f"global gradient norm {fmt(g)} is above the ceiling {fmt(th.grad_norm_ceiling)}"
    if where:
        msg += f"; {where}"
    msg += _more(names, f"layers rose over {fmt(th.grad_spike_factor)}x")
    ev = {
        "grad_norm": g,
        "baseline": base,
        "history_max": max(h) if h else None,
        "source": "spike" if spike else "ceiling",
        "lr": x.lr,
    }
    return Finding(
        K.EXPLODING_GRADIENT.value,
        "model",
        layer,
        value,
        threshold,
        msg,
        names or [layer],
        ev,
        _log_ratio(value, threshold),
    )


# --------------------------------------------------------------------------- activations
def activations(x: Inputs) -> list[Finding]:
    """Growth/decay of output RMS across depth and over time; fp16 range.

    Example::

        >>> ls = [LayerInfo(f"b{i}", "block", i, f"b{i}", block=i) for i in range(4)]
        >>> f = Frame(0, ls, {"act_rms": {"b0": 1.0, "b1": 10.0, "b2": 100.0, "b3": 1e3}})
        >>> [(a.kind, a.layer) for a in activations(Inputs(f, RunContext(), Thresholds()))]
        [('exploding_activation', 'b3')]
    """
    th, f = x.th, x.frame
    out: list[Finding] = []
    for s, items in act_depth_series(f):  # the output head is left out of module streams
        out += _act_depth(x, s, items)
        out += _act_time(x, s, items)
    if x.fp16:
        big = _worst_first(
            (v, i.name) for i, v in f.series("act_absmax") if finite(v) and v > th.fp16_absmax
        )
        if big:
            v, name = big[0]
            names = [n for _, n in big]
            out.append(
                Finding(
                    K.EXPLODING_ACTIVATION.value,
                    "fp16",
                    name,
                    v,
                    th.fp16_absmax,
                    f"output abs-max of {name} is {fmt(v)} under fp16 (largest finite value "
                    f"{fmt(FP16_MAX)}, {fmt(v / FP16_MAX * 100)}% of it)"
                    + _more(names, f"layers above {fmt(th.fp16_absmax)}"),
                    names,
                    {"absmax": v, "source": "fp16", "precision": x.context.precision, "lr": x.lr},
                    _log_ratio(v, th.fp16_absmax),
                )
            )
    return out


def _act_depth(x: Inputs, s: Stream, items: list[tuple[LayerInfo, float]]) -> list[Finding]:
    th = x.th
    if len(items) < th.min_layers or items[0][1] <= 0:
        return []
    first_name, ref = items[0][0].name, items[0][1]
    growth = growth_ratios(items)
    position = {i.name: k for k, (i, _) in enumerate(items)}
    n = len(items)
    out = []
    up = _worst_first((r, nm) for r, nm in growth if r > th.act_depth_growth)
    down = _worst_first(((r, nm) for r, nm in growth if r < th.act_depth_decay), largest=False)
    for kind, hits, thr in (
        (K.EXPLODING_ACTIVATION, up, th.act_depth_growth),
        (K.VANISHING_ACTIVATION, down, th.act_depth_decay),
    ):
        if not hits:
            continue
        r, name = hits[0]
        names = [nm for _, nm in hits]
        # the factor per layer over the layers that grew (or shrank): from the first layer
        # to the worst one, not to the last (which may have recovered)
        span = position[name]
        per_layer = r ** (1.0 / span) if r > 0 and span > 0 else 0.0
        msg = (
            f"output RMS of {name} is {fmt(r)}x that of {first_name} ({fmt(r * ref)} vs "
            f"{fmt(ref)}), {fmt(per_layer)}x per layer over the {span} layers up to it; "
            f"{len(names)} of {n} layers beyond {fmt(thr)}x: {name_list(names)}"
        )
        ev = {
            "ratio": r,
            "per_layer": per_layer,
            "per_layer_span": span,
            "n_layers": n,
            "reference": ref,
            "source": "depth",
            "stack": s.stack,
            "blocks": s.blocks,
            "lr": x.lr,
            "precision": x.context.precision,
        }
        score = _log_ratio(r, thr) if kind is K.EXPLODING_ACTIVATION else _log_ratio(thr, r)
        values = {nm: v for v, nm in hits}
        out.append(
            Finding(kind.value, s.stack, name, r, thr, msg, names, ev, score, layer_values=values)
        )
    return out


def _act_time(x: Inputs, s: Stream, items: list[tuple[LayerInfo, float]]) -> list[Finding]:
    th = x.th
    if x.grace:  # outputs grow while zero-started gates open: no history, no finding yet
        return []
    up: list[tuple[float, str, float, float]] = []
    down: list[tuple[float, str, float, float]] = []
    for info, v in items:
        series = f"act_rms:{info.name}"
        base = x.baseline(series)
        x.remember(series, v)
        if base is None or base <= 1e-12:
            continue
        r = v / base
        if r > th.act_time_factor:
            up.append((r, info.name, v, base))
        elif r < 1.0 / th.act_time_factor:
            down.append((r, info.name, v, base))
    out = []
    for kind, hits, thr in (
        (K.EXPLODING_ACTIVATION, _worst_first(up), th.act_time_factor),
        (K.VANISHING_ACTIVATION, _worst_first(down, largest=False), 1.0 / th.act_time_factor),
    ):
        if not hits:
            continue
        r, name, v, base = hits[0]
        names = [h[1] for h in hits]
        verb = "grew" if kind is K.EXPLODING_ACTIVATION else "fell"
        msg = f"output RMS of {name} {verb} to {fmt(v)}, {fmt(r)}x its recent median {fmt(base)}"
        msg += _more(names, f"layers moved beyond {fmt(thr)}x")
        ev = {
            "ratio": r,
            "value": v,
            "baseline": base,
            "source": "time",
            "stack": s.stack,
            "blocks": s.blocks,
            "lr": x.lr,
            "precision": x.context.precision,
        }
        score = _log_ratio(r, thr) if kind is K.EXPLODING_ACTIVATION else _log_ratio(thr, r)
        values = {h[1]: h[0] for h in hits}
        out.append(
            Finding(kind.value, s.stack, name, r, thr, msg, names, ev, score, layer_values=values)
        )
    return out


def dead_units(x: Inputs) -> list[Finding]:
    """Activation modules whose outputs are (almost) all exact zeros.

    Example::

        >>> acts = [LayerInfo("relu", "act", 0, "net.1")]
        >>> x = Inputs(Frame(0, acts, {"act_zero_frac": {"relu": 0.99}}), RunContext(), Thresholds())
        >>> [f.layer for f in dead_units(x)]
        ['relu']
    """
    return _fraction_rule(x, "act_zero_frac", x.th.dead_frac, K.DEAD_UNITS, "zeros")


def saturation(x: Inputs) -> list[Finding]:
    """tanh / sigmoid outputs stuck in their flat tails.

    Example::

        >>> acts = [LayerInfo("tanh", "act", 0, "net.1")]
        >>> x = Inputs(Frame(0, acts, {"act_sat_frac": {"tanh": 0.7}}), RunContext(), Thresholds())
        >>> [f.value for f in saturation(x)]
        [0.7]
    """
    return _fraction_rule(x, "act_sat_frac", x.th.sat_frac, K.SATURATION, "saturated")


def _fraction_rule(x: Inputs, stat: str, thr: float, kind: K, what: str) -> list[Finding]:
    series = x.frame.series(stat, kind="act")
    hits = _worst_first((v, i.name) for i, v in series if finite(v) and v > thr)
    if not hits:
        return []
    v, name = hits[0]
    names = [n for _, n in hits]
    n_act = len([1 for _, val in series if finite(val)])
    msg = f"{fmt(v * 100)}% of the outputs of {name} are {what} (threshold {fmt(thr * 100)}%)"
    msg += _more(names, f"of {n_act} activation layers above it")
    ev = {"fraction": v, "n_affected": len(names), "n_layers": n_act, "lr": x.lr}
    values = {n: h for h, n in hits}
    score = _log_ratio(v, thr)
    return [Finding(kind.value, "model", name, v, thr, msg, names, ev, score, layer_values=values)]


# --------------------------------------------------------------------------- update ratio
def _warmup_scale(x: Inputs) -> float:
    """During warmup, the factor from this step's lr to the peak the schedule is heading to
    (``context.base_lr``): update ratios scale with the lr, so ``ratio * scale`` is what the
    peak will do. 1.0 outside warmup or when the peak is unknown."""
    lr, peak = x.lr, x.context.base_lr
    if not x.context.in_warmup or lr is None or peak is None or not lr > 0 or peak <= lr:
        return 1.0
    return float(peak) / float(lr)


def update_ratio(x: Inputs) -> list[Finding]:
    """Update/weight ratio of each block (or module) far from the ~1e-3 band.

    During warmup the too-large side is judged at the peak lr the schedule is heading to
    (``ratio x peak / lr``), so a destructive peak is flagged before warmup ends; the
    too-small side is not judged during warmup, nor during the grace of a scheme whose
    branches start from zero (see :attr:`Inputs.grace`). A LoRA-adapted weight is judged by
    its effective update ``||d(s B A)|| / ||W||`` (unit parameters with role ``"lora"``,
    :mod:`initwatch.adapters`) against ``update_ratio_high_lora`` / ``update_ratio_low_lora``,
    as a cause of its own (scope ``"lora"``).

    Example::

        >>> ps = [LayerInfo("fc.weight", "param", 0, "fc.weight")]
        >>> f = Frame(0, ps, {"update_ratio": {"fc.weight": 0.5}, "weight_norm": {"fc.weight": 3.0}})
        >>> [(u.kind, u.layer) for u in update_ratio(Inputs(f, RunContext(), Thresholds()))]
        [('update_ratio_high', 'fc')]
    """
    th, ctx = x.th, x.context
    lr = x.lr
    high_thr = th.update_ratio_high_pretrained if ctx.pretrained else th.update_ratio_high
    low_thr = th.update_ratio_low_pretrained if ctx.pretrained else th.update_ratio_low
    annealing = (
        lr is not None
        and ctx.base_lr is not None
        and ctx.base_lr > 0
        and lr < th.anneal_fraction * ctx.base_lr
    )
    units = [u for us in param_units(x.frame).values() for u in us]
    scale = _warmup_scale(x)
    ratios = [(u.update_ratio(x.frame) * scale, u) for u in units]
    ratios = [(r, u) for r, u in ratios if finite(r)]
    out = []
    lora = [(r, u) for r, u in ratios if _is_lora(u)]
    plain = [(r, u) for r, u in ratios if not _is_lora(u)]
    groups = [("model", plain, high_thr, low_thr)]
    if lora:  # an adapted weight's effective update, judged with the LoRA thresholds
        groups.append(("lora", lora, th.update_ratio_high_lora, th.update_ratio_low_lora))
    for scope, ratios, high_thr, low_thr in groups:
        out += _ratio_findings(x, scope, ratios, high_thr, low_thr, scale, annealing)
    return out


def _is_lora(u: Unit) -> bool:
    if u.blocks is not None:
        table, i = u.blocks
        return table.lora[i]
    return any(p.role == "lora" for p in u.params)


def _ratio_findings(
    x: Inputs,
    scope: str,
    ratios: list[tuple[float, Unit]],
    high_thr: float,
    low_thr: float,
    scale: float,
    annealing: bool,
) -> list[Finding]:
    th, lr = x.th, x.lr
    out = []
    high = _worst_first((r, u) for r, u in ratios if r > high_thr)
    low = _worst_first(((r, u) for r, u in ratios if r < low_thr), largest=False)
    warming = x.context.in_warmup
    for kind, hits, thr in (
        (K.UPDATE_RATIO_HIGH, high, high_thr),
        # under a zero-started scheme's grace, blocks behind a closed gate (BART's encoder
        # behind the decoder's zero cross-attention gate) are starved by construction
        (K.UPDATE_RATIO_LOW, [] if annealing or warming or x.grace else low, low_thr),
    ):
        if not hits:
            continue
        r, u = hits[0]
        names = [h[1].name for h in hits]
        rel = "above" if kind is K.UPDATE_RATIO_HIGH else "below"
        at = f"lr {fmt(lr) if lr is not None else '?'}"
        if scale != 1.0:
            at = (
                f"the peak lr {fmt(x.context.base_lr)} this warmup is heading to "
                f"({fmt(r / scale)} now at lr {fmt(lr)}, x{fmt(scale)})"
            )
        msg = (
            f"update/weight ratio of {u.name} is {fmt(r)}, {fmt(r / th.update_ratio_target)}x "
            f"the healthy ~{fmt(th.update_ratio_target)} ({rel} {fmt(thr)}) at {at}"
        )
        msg += _more(names, f"of {len(ratios)} layers {rel} it")
        ev = {
            "ratio": r,
            "target": th.update_ratio_target,
            "factor": r / th.update_ratio_target,
            "median_ratio": median([h[0] for h in hits]),
            "n_affected": len(names),
            "n_layers": len(ratios),
            "lr": x.context.base_lr if scale != 1.0 else lr,
            "warmup_scale": scale,
        }
        if scope == "lora":
            ev["lora"] = True
        score = _log_ratio(r, thr) if kind is K.UPDATE_RATIO_HIGH else _log_ratio(thr, r)
        values = {h[1].name: h[0] for h in hits}
        out.append(
            Finding(kind.value, scope, u.name, r, thr, msg, names, ev, score, layer_values=values)
        )
    return out


def update_ratio_applies(x: Inputs) -> bool:
    """Update ratios are judged only on real optimizer steps at a positive lr (during warmup
    against the peak lr, see :func:`update_ratio`).

    Example::

        >>> update_ratio_applies(Inputs(Frame(0, [], {}), RunContext(lr=0.0), Thresholds()))
        False
    """
    lr = x.lr
    return not x.skipped and (lr is None or lr > 0)


# --------------------------------------------------------------------------- loss
def loss_diverging(x: Inputs) -> list[Finding]:
    """The loss far above its early baseline: the median of the first ``warmup_frames``
    measured losses of the run (kept, not a moving window, so a slow climb is seen too). A
    loss above ``EARLY_CLIMB`` (2) x the first measured loss never enters the baseline, so a
    shock that ramps up during the first measured steps cannot drag its own reference along;
    from the second frame on the baseline is the median of what was collected so far.

    Judged only for a positive baseline and loss (losses that can be negative or that start
    at ~0 have no meaningful ratio).

    Example::

        >>> x = Inputs(Frame(0, [], {}, {"loss": 4.0}), RunContext(), Thresholds(), {}, 2)
        >>> loss_diverging(x)
        []
        >>> x.frame = Frame(1, [], {}, {"loss": 4.2}); loss_diverging(x)
        []
        >>> x.frame = Frame(2, [], {}, {"loss": 120.0}); [f.kind for f in loss_diverging(x)]
        ['loss_diverging']
    """
    th = x.th
    loss = x.frame.globals.get("loss")
    if not finite(loss):
        return []
    early = x.history.setdefault("loss_early", [])
    base = median(early) if early else None
    thr = th.loss_diverge_factor * base if base is not None else math.inf
    if len(early) < x.warmup_frames and (not early or loss <= EARLY_CLIMB * early[0]):
        early.append(float(loss))  # a climbing (or diverging) loss is no baseline material
    if base is None or base <= 0 or loss <= 0 or loss <= thr:
        return []
    r = loss / base
    msg = (
        f"loss {fmt(loss)} is {fmt(r)}x its early baseline {fmt(base)} (median of the first "
        f"{len(early)} measured losses; threshold {fmt(th.loss_diverge_factor)}x)"
    )
    ev = {"loss": loss, "baseline": base, "ratio": r, "lr": x.lr, "source": "early_baseline"}
    return [
        Finding(
            K.LOSS_DIVERGING.value, "model", "*", loss, thr, msg, ["*"], ev, _log_ratio(loss, thr)
        )
    ]


# --------------------------------------------------------------------------- attention
def attention_collapse(x: Inputs) -> list[Finding]:
    """Self-attention sublayers whose rows turned one-hot (attention entropy collapse).

    Reads ``attn_onehot_frac`` (the fraction of sampled rows, over all heads, whose largest
    probability exceeds 0.99), measured from the q and k projections by
    :mod:`initwatch.attention`.

    Example::

        >>> f = Frame(0, [], {"attn_onehot_frac": {"decoder.0.attn": 0.2, "decoder.1.attn": 0.97}})
        >>> [(a.kind, a.layer) for a in attention_collapse(Inputs(f, RunContext(), Thresholds()))]
        [('attention_collapse', 'decoder.1.attn')]
    """
    th, f = x.th, x.frame
    thr = th.attn_onehot_frac
    onehot = f.stat("attn_onehot_frac")
    hits = _worst_first((v, n) for n, v in onehot.items() if finite(v) and v > thr)
    if not hits:
        return []
    v, name = hits[0]
    names = [n for _, n in hits]
    entropy = f.get("attn_entropy", name)
    logit = f.get("attn_logit_absmax", name)
    msg = (
        f"{fmt(100 * v)}% of the attention rows of {name} are one-hot (largest probability > "
        f"0.99; threshold {fmt(100 * thr)}%); mean entropy {fmt(entropy)} of a uniform row's, "
        f"largest |q.k/sqrt(d)| {fmt(logit)}"
    )
    msg += _more(names, f"of {len(onehot)} attention layers above it")
    ev = {
        "fraction": v,
        "entropy": entropy,
        "logit_absmax": logit,
        "n_affected": len(names),
        "n_layers": len(onehot),
        "lr": x.lr,
    }
    kind = K.ATTENTION_COLLAPSE.value
    return [Finding(kind, "model", name, v, thr, msg, names, ev, _log_ratio(v, thr))]


# --------------------------------------------------------------------------- lr schedule
def lr_schedule_collapse(x: Inputs) -> list[Finding]:
    """The learning rate fell to ~0 long before the planned end of the run.

    A decay that reaches ~0 at ``max_steps`` (cosine, linear) is healthy; one that falls below
    ``lr_collapse_fraction`` of the largest measured lr before ``lr_collapse_progress`` of
    ``max_steps`` is not (typically a scheduler sized in epochs stepped every batch). The lr is
    read, not estimated: the first frame that shows it alerts. Needs ``context.max_steps``; a
    schedule with deliberate warm restarts (``context.extra["lr_restarts"]``, set by the
    adapters for SGDR schedulers) is exempt.

    Example::

        >>> x = Inputs(Frame(0, [], {}, {"lr": 1e-3}), RunContext(max_steps=1000), Thresholds())
        >>> lr_schedule_collapse(x)
        []
        >>> x.frame = Frame(20, [], {}, {"lr": 1e-7})
        >>> [(f.kind, f.immediate) for f in lr_schedule_collapse(x)]
        [('lr_schedule_collapse', True)]
    """
    th, ctx = x.th, x.context
    lr = x.lr
    if lr is None or not finite(lr):
        return []
    seen = x.history.get("lr_peak", [])
    peak = max(seen[0] if seen else 0.0, float(lr))
    x.history["lr_peak"] = [peak]
    total, step = ctx.max_steps, x.frame.step
    if not total or peak <= 0 or ctx.in_warmup or ctx.extra.get("lr_restarts"):
        return []
    if lr >= th.lr_collapse_fraction * peak or step >= th.lr_collapse_progress * total:
        return []
    ratio = lr / peak
    msg = (
        f"learning rate {fmt(lr)} is {fmt(ratio)}x its peak {fmt(peak)} at step {step}, "
        f"{fmt(100 * step / total)}% of max_steps={total} (threshold: "
        f"{fmt(th.lr_collapse_fraction)}x before {fmt(100 * th.lr_collapse_progress)}%)"
    )
    ev = {"lr": lr, "peak": peak, "ratio": ratio, "step": step, "max_steps": total}
    return [
        Finding(
            K.LR_SCHEDULE_COLLAPSE.value,
            "model",
            "*",
            ratio,
            th.lr_collapse_fraction,
            msg,
            ["*"],
            ev,
            _log_ratio(th.lr_collapse_fraction, ratio) if ratio > 0 else math.inf,
            immediate=True,
        )
    ]


def _explains(cause: Finding, effect: Finding) -> bool:
    """Whether ``cause`` (a finding of this frame) accounts for ``effect``."""
    if cause.kind == K.DEAD_UNITS.value:
        # dead units explain exact zeros further on
        vanishing = (K.VANISHING_GRADIENT.value, K.VANISHING_ACTIVATION.value)
        return effect.kind in vanishing and effect.value == 0.0
    if cause.kind == K.VANISHING_GRADIENT.value:
        # a gradient that never arrives moves nothing: tiny updates of the same layers (with
        # Adam, a gradient below its eps) are its consequence, and raising the lr is no remedy
        return effect.kind == K.UPDATE_RATIO_LOW.value and set(effect.layers) <= set(cause.layers)
    return False


def explain(findings: list[Finding]) -> list[Finding]:
    """Drop findings that another finding of the same frame explains.

    Dead units explain exact zeros: a layer whose output RMS or gradient norm is exactly 0 while
    activations are dead is a consequence, not a second cause. A vanishing gradient explains
    too-small updates of the layers it starves. The explaining finding lists what it explains
    in its message.

    Example::

        >>> dead = Finding("dead_units", "model", "r1", 1.0, 0.95, "all zeros", ["r1"], {}, 0.1)
        >>> zero = Finding("vanishing_activation", "model", "l2", 0.0, 0.01, "0x", ["l2"], {}, 9)
        >>> [f.kind for f in explain([dead, zero])]
        ['dead_units']
        >>> van = Finding("vanishing_gradient", "model", "b0", 1e-5, 0.01, "", ["b0", "b1"], {}, 9)
        >>> low = Finding("update_ratio_low", "model", "b1", 1e-6, 1e-5, "", ["b1"], {}, 9)
        >>> [f.kind for f in explain([van, low])]
        ['vanishing_gradient']
    """
    explained: list[Finding] = []
    for cause in findings:
        effects = [f for f in findings if f is not cause and _explains(cause, f)]
        if effects:
            cause.message += "; this explains " + ", ".join(
                f"{f.kind} at {f.layer}" for f in effects
            )
            cause.evidence["explains"] = [f"{f.kind}/{f.layer}" for f in effects]
            explained += effects
    return [f for f in findings if f not in explained]


Detector = Callable[[Inputs], list[Finding]]

# (detector, kinds it judges, whether it runs on this frame)
DETECTORS: list[tuple[Detector, tuple[str, ...], Callable[[Inputs], bool]]] = [
    (nonfinite, (K.NONFINITE.value,), lambda x: True),
    (vanishing_gradient, (K.VANISHING_GRADIENT.value,), lambda x: not x.skipped),
    (exploding_gradient, (K.EXPLODING_GRADIENT.value,), lambda x: not x.skipped),
    (
        activations,
        (K.EXPLODING_ACTIVATION.value, K.VANISHING_ACTIVATION.value),
        lambda x: True,
    ),
    (dead_units, (K.DEAD_UNITS.value,), lambda x: True),
    (saturation, (K.SATURATION.value,), lambda x: True),
    (update_ratio, (K.UPDATE_RATIO_HIGH.value, K.UPDATE_RATIO_LOW.value), update_ratio_applies),
    (loss_diverging, (K.LOSS_DIVERGING.value,), lambda x: True),
    (attention_collapse, (K.ATTENTION_COLLAPSE.value,), lambda x: True),
    (lr_schedule_collapse, (K.LR_SCHEDULE_COLLAPSE.value,), lambda x: True),
]

__all__ = ["DETECTORS", "Finding", "Inputs", "Unit", "explain"]
