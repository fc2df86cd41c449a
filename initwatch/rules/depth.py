"""The depth comparisons the rules make, computed in one place for the rules and the dashboards.

``vanishing_gradient`` compares each block's gradient norm (and backward signal) with the top
blocks (:func:`decay_ratio`); the activation rules compare each block's output RMS with the
lowest block's (:func:`growth_ratios`). :func:`depth_ratios` gives, per statistic and stack, the
one number each rule tests against its threshold, which the TensorBoard sink draws as a line
with the threshold beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from initwatch.frame import Frame, LayerInfo
from initwatch.rules.thresholds import Thresholds
from initwatch.rules.view import Stream, finite, param_units, stream_groups


def top_reference(values: Sequence[float]) -> float:
    """The largest value among the top quarter (at least one) of a depth-ordered list.

    Example::

        >>> top_reference([1.0, 5.0, 3.0, 2.0, 4.0, 0.5, 0.7, 0.6])
        0.7
    """
    n = max(1, len(values) // 4)
    return max(values[-n:])


def decay_ratio(items: Sequence[tuple[str, float]]) -> tuple[float, str, float] | None:
    """The vanishing rule's depth ratio of one stack: ``(lowest value / reference, its layer,
    reference)``, the reference being :func:`top_reference`; None when the reference is not
    positive.

    Example::

        >>> decay_ratio([("b0", 1e-5), ("b1", 1e-2), ("b2", 0.1), ("b3", 0.1)])
        (0.0001, 'b0', 0.1)
    """
    ref = top_reference([v for _, v in items])
    if ref <= 0:
        return None
    ratio, name = min(((v / ref, n) for n, v in items), key=lambda t: t[0])
    return ratio, name, ref


def grad_depth_series(frame: Frame, grace: bool = False) -> list[tuple[str, str, list]]:
    """``(statistic, stack, [(layer, value)...])`` that ``vanishing_gradient`` compares across
    depth: the gradient norm of each parameter unit (block) per stack, and the backward signal
    ``out_grad_rms`` of each block (only outputs of one shape are comparable: blocks). Non-finite
    values are left out; ``grace`` leaves block parameters out (a zero-started scheme).

    Example::

        >>> ps = [LayerInfo(f"b{i}.w", "param", i, f"b{i}.w", "enc", i) for i in range(2)]
        >>> grad_depth_series(Frame(0, ps, {"grad_norm": {"b0.w": 1.0, "b1.w": 2.0}}))
        [('grad_norm', 'enc', [('enc.0', 1.0), ('enc.1', 2.0)])]
    """
    out: list[tuple[str, str, list]] = []
    for stack, units in param_units(frame).items():
        norms = [(u.name, u.grad_norm(frame, skip_blocks=grace)) for u in units]
        out.append(("grad_norm", stack, [(n, g) for n, g in norms if finite(g)]))
    for s in stream_groups(frame, "out_grad_rms"):
        if s.blocks:
            out.append(("out_grad_rms", s.stack, [(i.name, v) for i, v in s.items]))
    return out


def act_depth_series(frame: Frame) -> list[tuple[Stream, list[tuple[LayerInfo, float]]]]:
    """The output-RMS streams the activation rules compare across depth, each with the items
    compared: the output head is left out of a stream of modules (its scale is set by the loss,
    and often shrunk on purpose, not by depth).

    Example::

        >>> ls = [LayerInfo(f"b{i}", "block", i, f"b{i}", block=i) for i in range(2)]
        >>> [len(items) for _, items in act_depth_series(Frame(0, ls, {"act_rms": {"b0": 1.0,
        ...                                                               "b1": 2.0}}))]
        [2]
    """
    sources = [i.name for i in frame.layers if i.kind != "param"]
    head = sources[-1] if sources else None
    out = []
    for s in stream_groups(frame, "act_rms"):
        items = s.items if s.blocks else [(i, v) for i, v in s.items if i.name != head]
        out.append((s, items))
    return out


def growth_ratios(items: Sequence[tuple[LayerInfo, float]]) -> list[tuple[float, str]]:
    """``(value / the lowest layer's value, layer)`` for every layer above the lowest: what the
    activation depth rules test (callers check the lowest value is positive).

    Example::

        >>> ls = [LayerInfo(f"b{i}", "block", i, f"b{i}") for i in range(3)]
        >>> growth_ratios(list(zip(ls, [2.0, 4.0, 1.0])))
        [(2.0, 'b1'), (0.5, 'b2')]
    """
    ref = items[0][1]
    return [(v / ref, i.name) for i, v in items[1:]]


@dataclass(frozen=True)
class DepthRatio:
    """One depth comparison a rule makes, with the threshold it is tested against.

    Args:
        stat: ``"grad_norm"``, ``"out_grad_rms"`` (lowest block / top blocks),
            ``"act_rms_growth"`` (largest block / lowest block) or ``"act_rms_decay"``
            (smallest block / lowest block).
        stack: the stack (``"model"`` when none).
        ratio: the ratio.
        layer: the layer the ratio is taken at.
        threshold: the rule's threshold.
        below: True when the rule fires below the threshold, False above it.

    Example::

        >>> DepthRatio("grad_norm", "encoder", 1e-4, "encoder.0", 1e-2, True).alerting
        True
    """

    stat: str
    stack: str
    ratio: float
    layer: str
    threshold: float
    below: bool

    @property
    def alerting(self) -> bool:
        """Whether the ratio is past the threshold (before the rules' persistence)."""
        return self.ratio < self.threshold if self.below else self.ratio > self.threshold


def depth_ratios(frame: Frame, th: Thresholds | None = None) -> list[DepthRatio]:
    """Every depth ratio the depth rules test in ``frame`` (the same series, the same
    reference, the same minimum number of layers), with the thresholds of ``th``.

    Example::

        >>> ps = [LayerInfo(f"b{i}.w", "param", i, f"b{i}.w", "enc", i) for i in range(4)]
        >>> g = {"grad_norm": {"b0.w": 1e-5, "b1.w": 1e-2, "b2.w": 0.1, "b3.w": 0.1}}
        >>> [(d.stat, d.stack, d.ratio, d.alerting) for d in depth_ratios(Frame(0, ps, g))]
        [('grad_norm', 'enc', 0.0001, True)]
    """
    th = th if th is not None else Thresholds()
    out: list[DepthRatio] = []
    for stat, stack, items in grad_depth_series(frame):
        found = decay_ratio(items) if len(items) >= th.min_layers else None
        if found is not None:
            out.append(DepthRatio(stat, stack, found[0], found[1], th.grad_depth_ratio, True))
    for s, items in act_depth_series(frame):
        if len(items) < th.min_layers or items[0][1] <= 0:
            continue
        growth = growth_ratios(items)
        hi, lo = max(growth, key=lambda t: t[0]), min(growth, key=lambda t: t[0])
        out.append(DepthRatio("act_rms_growth", s.stack, hi[0], hi[1], th.act_depth_growth, False))
        out.append(DepthRatio("act_rms_decay", s.stack, lo[0], lo[1], th.act_depth_decay, True))
    return out
