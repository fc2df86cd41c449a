"""Sinks: where frames and alerts go, plus what every sink shares (aggregation, summary, images)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from initwatch.alerts import Alert
from initwatch.blocks import STATS as BLOCK_STATS
from initwatch.blocks import aggregate, param_group
from initwatch.catalogue import STATISTICS, worst_checks
from initwatch.frame import Frame, LayerInfo  # noqa: F401 (the doctests use LayerInfo)
from initwatch.numbers import fmt
from initwatch.sinks.heatmap import heatmap_image, heatmap_png, warm_renderer

if TYPE_CHECKING:
    from initwatch.context import RunContext
    from initwatch.rules.thresholds import Thresholds

__all__ = [
    "Sink",
    "aggregate_params",
    "heatmap_image",
    "heatmap_png",
    "param_group",
    "summary_markdown",
    "warm_renderer",
]


class Sink:
    """Receives what a :class:`~initwatch.Watch` measured; subclasses override what they need.

    Example::

        >>> class Printer(Sink):
        ...     def write_frame(self, frame):
        ...         print(frame.step)
        >>> Printer().write_frame(Frame(step=3, layers=[], values={}))
        3
    """

    thresholds: Thresholds | None = None  # the rules' thresholds (set by bind)
    context: RunContext | None = None  # the run's context (set by bind)

    def bind(self, thresholds: Thresholds | None = None, context: RunContext | None = None) -> None:
        """Called once by the :class:`~initwatch.Watch`: the thresholds its rules use and the
        run context, for sinks that draw threshold lines (None: the default thresholds)."""
        self.thresholds = thresholds
        self.context = context

    def write_frame(self, frame: Frame) -> None:
        """One logging step's statistics."""

    def write_alerts(self, alerts: Sequence[Alert], step: int, total: int) -> None:
        """The alerts of a logging step (possibly none); ``total`` counts new alerts so far."""

    def close(self, last: Frame | None, alerts: Sequence[Alert]) -> None:
        """End of the run: write a summary, flush."""


def aggregate_params(frame: Frame) -> dict[str, dict[str, float]]:
    """Parameter statistics per block (or module outside blocks), in depth order:
    ``{stat: {unit: value}}`` from the one aggregation the rules read too
    (:func:`initwatch.blocks.aggregate`, which says how each statistic combines).

    Example::

        >>> infos = [LayerInfo(n, "param", i, n) for i, n in enumerate(["a.w", "a.b"])]
        >>> f = Frame(0, infos, {"grad_norm": {"a.w": 3.0, "a.b": 4.0},
        ...                      "weight_norm": {"a.w": 10.0, "a.b": 0.0}})
        >>> aggregate_params(f)["grad_norm"]
        {'a': 5.0}
    """
    table = aggregate(frame)
    return {stat: table.table(stat) for stat in BLOCK_STATS}


def _extreme(table: dict[str, float], highest: bool) -> str | None:
    items = [(v, k) for k, v in table.items() if math.isfinite(v)]
    if not items:
        return None
    v, k = max(items) if highest else min(items)
    return f"`{k}` ({fmt(v, fixed=True)})"  # as `initwatch report` lists them


def summary_markdown(last: Frame | None, alerts: Sequence[Alert]) -> str:
    """A Markdown summary of a run: a verdict, every alert (oldest first, with its labelled
    value, how many "still" updates followed and the last one), and the worst layers at the
    last frame.

    Example::

        >>> print("\\n".join(summary_markdown(None, []).splitlines()[:3]))
        ## initwatch summary
        <BLANKLINE>
        **Verdict: healthy: no alerts**
    """
    from initwatch.alert_text import value_text, verdict

    lines = ["## initwatch summary", "", f"**Verdict: {verdict(list(alerts))}**"]
    new = [a for a in alerts if not a.repeat]
    if new:
        lines += ["", "Alerts, oldest first:", ""]
        for i, a in enumerate(new, 1):
            cause = a.extra.get("cause") if isinstance(a.extra, dict) else None
            later = [
                u
                for u in alerts
                if u.repeat
                and u.first_step == a.step
                and u.kind == a.kind
                and (cause is None or u.extra.get("cause") == cause)
            ]
            entry = f"{i}. **{a.kind}** at `{a.layer}`, step {a.step}: {value_text(a)}"
            if later:
                u = later[-1]
                entry += (
                    f'; {len(later)} "still" update{"s" if len(later) > 1 else ""}, the last '
                    f"at step {u.step}: {value_text(u)}"
                )
            lines.append(entry)
    if last is not None:
        lines += ["", f"Worst layers at step {last.step}:", ""]
        params = aggregate_params(last)
        for stat, label, highest in worst_checks():
            table = params[stat] if stat in params else last.stat(stat)
            if STATISTICS[stat].unit == "count":
                table = {k: v for k, v in table.items() if v > 0}  # none: nothing to name
            found = _extreme(table, highest)
            if found:
                lines.append(f"- {label}: {found}")
    return "\n".join(lines)
