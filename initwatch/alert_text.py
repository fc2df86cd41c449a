"""How an alert reads: its value named for what it is, the console text, the one-line update.

Every place that shows an alert to a person (the console warning, the log record, the
TensorBoard Text tab, the end-of-run summary) formats it here, so the wording is one fact.
"""

from __future__ import annotations

import textwrap
from typing import Any

from initwatch.alerts import Alert, AlertKind
from initwatch.catalogue import title
from initwatch.numbers import fmt

K = AlertKind
WIDTH = 88  # columns of the console text (wrapped, indented)


def _ev(alert: Alert) -> dict[str, Any]:
    extra = alert.extra if isinstance(alert.extra, dict) else {}
    ev = extra.get("evidence")
    return ev if isinstance(ev, dict) else {}


def _pct(x: float) -> str:
    return f"{fmt(100 * x)}%"


def value_text(alert: Alert) -> str:
    """The alert's value and threshold, named for what they are.

    Example::

        >>> a = Alert(8, "vanishing_gradient", "encoder.2", 5.3e-4, 0.01, "warning", "m", "r",
        ...           extra={"evidence": {"source": "depth"}})
        >>> value_text(a)
        'ratio 5.3e-04 (encoder.2 / top blocks; alert below 0.01)'
        >>> value_text(Alert(3, "dead_units", "relu1", 0.99, 0.95, "warning", "m", "r"))
        'zero fraction 99% (alert above 95%)'
    """
    ev, v, t, k = _ev(alert), alert.value, alert.threshold, alert.kind
    src = ev.get("source")
    if k == K.VANISHING_GRADIENT.value:
        if src == "floor":
            return f"{title('grad_norm')} {fmt(v)} (floor {fmt(t)})"
        stat = ev.get("stat")
        of = f" of the {title(stat)}" if isinstance(stat, str) else ""
        return f"ratio {fmt(v)}{of} ({alert.layer} / top blocks; alert below {fmt(t)})"
    if k == K.EXPLODING_GRADIENT.value:
        base = ev.get("layer_baseline") if src == "layer_spike" else ev.get("baseline")
        what = title("grad_norm") if src == "layer_spike" else f"global {title('grad_norm')}"
        if src in ("spike", "layer_spike") and isinstance(base, (int, float)) and base > 0:
            return (
                f"{what} {fmt(v)} ({fmt(v / base)}x its median {fmt(base)}; alert above {fmt(t)})"
            )
        return f"{what} {fmt(v)} (ceiling {fmt(t)})"
    if k in (K.VANISHING_ACTIVATION.value, K.EXPLODING_ACTIVATION.value):
        rel = "below" if k == K.VANISHING_ACTIVATION.value else "above"
        if src == "fp16":
            return f"{title('act_absmax')} {fmt(v)} (fp16 limit 65504; alert above {fmt(t)})"
        rms = title("act_rms")
        if src == "time":
            return f"ratio {fmt(v)} ({rms} / its recent median; alert {rel} {fmt(t)})"
        return f"ratio {fmt(v)} ({rms} / the first layer's; alert {rel} {fmt(t)})"
    if k == K.NONFINITE.value:
        n = "some" if v != v or v == float("inf") else f"{v:.0f}"
        return f"non-finite values: {n}"
    if k == K.DEAD_UNITS.value:
        return f"{title('act_zero_frac')} {_pct(v)} (alert above {_pct(t)})"
    if k == K.SATURATION.value:
        return f"{title('act_sat_frac')} {_pct(v)} (alert above {_pct(t)})"
    if k in (K.UPDATE_RATIO_HIGH.value, K.UPDATE_RATIO_LOW.value):
        rel = "above" if k == K.UPDATE_RATIO_HIGH.value else "below"
        return f"{title('update_ratio')} {fmt(v)} (healthy ~1e-3; alert {rel} {fmt(t)})"
    if k == K.LOSS_DIVERGING.value:
        base = ev.get("baseline")
        times = f"{fmt(v / base)}x its early value {fmt(base)}; " if base else ""
        return f"loss {fmt(v)} ({times}alert above {fmt(t)})"
    if k == K.ATTENTION_COLLAPSE.value:
        return f"one-hot row fraction {_pct(v)} (alert above {_pct(t)})"
    if k == K.LR_SCHEDULE_COLLAPSE.value:
        return f"ratio {fmt(v)} (lr / peak lr; alert below {fmt(t)})"
    return f"value {fmt(v)} (threshold {fmt(t)})"


def headline(alert: Alert) -> str:
    """``vanishing_gradient at encoder.2 (step 12)``; updates add ``still``, ``since step``.

    Example::

        >>> headline(Alert(30, "dead_units", "relu1", 0.99, 0.95, "warning", "m", "r",
        ...                first_step=10, repeat=2))
        'still dead_units at relu1 (step 30, since step 10)'
    """
    if alert.repeat:
        return f"still {alert.kind} at {alert.layer} (step {alert.step}, since step {alert.first_step})"
    return f"{alert.kind} at {alert.layer} (step {alert.step})"


def remedy_items(remedy: str) -> list[str]:
    """The alternatives of a remedy (remedies join them with ``"; or "``).

    Example::

        >>> remedy_items("Lower the lr; or add a warmup.")
        ['Lower the lr', 'add a warmup.']
    """
    return [p for p in (s.strip() for s in remedy.split("; or ")) if p]


def still_line(alert: Alert) -> str:
    """One short line for a "still" update: where, since when, the labelled value, how many
    layers; never the remedy again (it is the original alert's).

    Example::

        >>> a = Alert(30, "dead_units", "relu1", 0.99, 0.95, "warning", "m", "r",
        ...           first_step=10, repeat=2, extra={"layers": ["relu1", "relu2"]})
        >>> still_line(a)
        'initwatch: still dead_units at relu1 (step 30, since step 10): zero fraction 99% (alert above 95%); 2 layers affected'
    """
    layers = alert.extra.get("layers") if isinstance(alert.extra, dict) else None
    more = (
        f"; {len(layers)} layers affected" if isinstance(layers, list) and len(layers) > 1 else ""
    )
    return f"initwatch: {headline(alert)}: {value_text(alert)}{more}"


def console_text(alert: Alert, width: int = WIDTH) -> str:
    """The alert as a person reads it on the console: a headline, the evidence and the
    remedy's alternatives as bullets, wrapped at ``width`` columns. An update is one line
    (:func:`still_line`).

    Example::

        >>> a = Alert(3, "dead_units", "relu1", 0.99, 0.95, "warning", "99% of relu1 is zero",
        ...           "Use GELU; or lower the lr.")
        >>> print(console_text(a))
        initwatch: dead_units at relu1 (step 3)
          zero fraction 99% (alert above 95%)
          99% of relu1 is zero
          what to do:
          - Use GELU
          - lower the lr.
    """
    if alert.repeat:
        return still_line(alert)

    def wrap(text: str, first: str, rest: str) -> list[str]:
        return textwrap.wrap(
            text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
        )

    lines = [f"initwatch: {headline(alert)}"]
    lines += wrap(value_text(alert), "  ", "    ")
    lines += wrap(alert.message, "  ", "  ")
    items = remedy_items(alert.remedy)
    if items:
        lines.append("  what to do:")
        for item in items:
            lines += wrap(item, "  - ", "    ")
    return "\n".join(lines)


def markdown(alert: Alert) -> str:
    """The alert as Markdown for the TensorBoard Text tab: a bold headline with the labelled
    value, the evidence, and the remedy's alternatives as a list. An update is one line.

    Example::

        >>> a = Alert(3, "dead_units", "relu1", 0.99, 0.95, "warning", "99% zeros",
        ...           "Use GELU; or lower the lr.")
        >>> print(markdown(a))
        **warning · dead_units** at `relu1` (step 3): zero fraction 99% (alert above 95%)
        <BLANKLINE>
        99% zeros
        <BLANKLINE>
        **What to do:**
        <BLANKLINE>
        - Use GELU
        - lower the lr.
    """
    still = f", still since step {alert.first_step}" if alert.repeat else ""
    head = (
        f"**{alert.severity} · {alert.kind}** at `{alert.layer}` (step {alert.step}{still}): "
        f"{value_text(alert)}"
    )
    if alert.repeat:
        layers = alert.extra.get("layers") if isinstance(alert.extra, dict) else None
        n = len(layers) if isinstance(layers, list) else 0
        return head + (f"; {n} layers affected" if n > 1 else "")
    parts = [head, alert.message]
    items = remedy_items(alert.remedy)
    if items:
        parts += ["**What to do:**", "\n".join(f"- {i}" for i in items)]
    return "\n\n".join(parts)


def verdict(alerts: list[Alert]) -> str:
    """A run's verdict from its alerts: ``healthy`` or ``UNHEALTHY`` with what was found.

    Example::

        >>> verdict([])
        'healthy: no alerts'
        >>> verdict([Alert(3, "dead_units", "relu1", 0.99, 0.95, "warning", "m", "r")])
        'UNHEALTHY: 1 alert (dead_units at relu1 since step 3)'
    """
    new = [a for a in alerts if not a.repeat]
    if not new:
        return "healthy: no alerts"
    errors = sum(a.severity == "error" for a in new)
    head = f"{len(new)} alert{'s' if len(new) != 1 else ''}"
    if errors:
        head += f", {errors} error{'s' if errors != 1 else ''}"
    what = "; ".join(f"{a.kind} at {a.layer} since step {a.step}" for a in new[:5])
    more = f"; +{len(new) - 5} more" if len(new) > 5 else ""
    return f"UNHEALTHY: {head} ({what}{more})"


__all__ = [
    "console_text",
    "headline",
    "markdown",
    "remedy_items",
    "still_line",
    "value_text",
    "verdict",
]
