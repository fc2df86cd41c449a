"""Sinks: where frames and alerts go, plus what every sink shares (aggregation, summary, images)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from initwatch.alerts import Alert
from initwatch.frame import Frame, LayerInfo

__all__ = ["Sink", "aggregate_params", "heatmap_image", "param_group", "summary_markdown"]


class Sink:
    """Receives what a :class:`~initwatch.Watch` measured; subclasses override what they need.

    Example::

        >>> class Printer(Sink):
        ...     def write_frame(self, frame):
        ...         print(frame.step)
        >>> Printer().write_frame(Frame(step=3, layers=[], values={}))
        3
    """

    def write_frame(self, frame: Frame) -> None:
        """One logging step's statistics."""

    def write_alerts(self, alerts: Sequence[Alert], step: int, total: int) -> None:
        """The alerts of a logging step (possibly none); ``total`` counts new alerts so far."""

    def close(self, last: Frame | None, alerts: Sequence[Alert]) -> None:
        """End of the run: write a summary, flush."""


def param_group(info: LayerInfo) -> str:
    """The group a parameter is aggregated into: its block (``"encoder.3"``) or its module path.

    Example::

        >>> param_group(LayerInfo("h.0.attn.c_attn.weight", "param", 0, "h.0.attn.c_attn.weight",
        ...                       stack="decoder", block=0))
        'decoder.0'
        >>> param_group(LayerInfo("wte.weight", "param", 1, "wte.weight"))
        'wte'
    """
    if info.stack is not None and info.block is not None:
        return f"{info.stack}.{info.block}"
    return info.name.rsplit(".", 1)[0] if "." in info.name else "root"


_PARAM_AGG = ("grad_norm", "weight_norm", "grad_weight_ratio", "update_ratio", "grad_nonfinite")


@dataclass
class _Sums:
    g: float = 0.0
    w: float = 0.0
    u: float = 0.0
    bad: float = 0.0
    has_g: bool = False
    has_u: bool = False


def aggregate_params(frame: Frame) -> dict[str, dict[str, float]]:
    """Parameter statistics aggregated by :func:`param_group`, in depth order.

    ``grad_norm`` and ``weight_norm`` are the L2 norms over the group's tensors, the ratios are
    taken between those (``update_ratio`` from the per-tensor estimates of ``||ΔW||``), and
    ``grad_nonfinite`` is summed.

    Example::

        >>> infos = [LayerInfo(n, "param", i, n) for i, n in enumerate(["a.w", "a.b"])]
        >>> f = Frame(0, infos, {"grad_norm": {"a.w": 3.0, "a.b": 4.0},
        ...                      "weight_norm": {"a.w": 10.0, "a.b": 0.0}})
        >>> aggregate_params(f)["grad_norm"]
        {'a': 5.0}
    """
    acc: dict[str, _Sums] = {}
    measured = {s: frame.values.get(s, {}) for s in ("grad_norm", "update_ratio")}
    for info in frame.layers:
        if info.kind != "param":
            continue
        g = acc.setdefault(param_group(info), _Sums())
        w = frame.get("weight_norm", info.name, 0.0)
        g.w += w * w
        g.g += frame.get("grad_norm", info.name, 0.0) ** 2
        g.u += (frame.get("update_ratio", info.name, 0.0) * w) ** 2
        g.bad += frame.get("grad_nonfinite", info.name, 0.0)
        g.has_g |= info.name in measured["grad_norm"]
        g.has_u |= info.name in measured["update_ratio"]
    out: dict[str, dict[str, float]] = {s: {} for s in _PARAM_AGG}
    for name, g in acc.items():
        w = math.sqrt(g.w)
        out["weight_norm"][name] = w
        if g.has_g:
            out["grad_norm"][name] = math.sqrt(g.g)
            out["grad_weight_ratio"][name] = math.sqrt(g.g) / w if w > 0 else math.nan
            out["grad_nonfinite"][name] = g.bad
        if g.has_u:
            out["update_ratio"][name] = math.sqrt(g.u) / w if w > 0 else math.nan
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _extreme(table: dict[str, float], highest: bool) -> str | None:
    items = [(v, k) for k, v in table.items() if math.isfinite(v)]
    if not items:
        return None
    v, k = max(items) if highest else min(items)
    return f"`{k}` ({_fmt(v)})"


def summary_markdown(last: Frame | None, alerts: Sequence[Alert]) -> str:
    """A Markdown summary of a run: alert counts by kind and the worst layers at the last frame.

    Example::

        >>> print(summary_markdown(None, []).splitlines()[0])
        ## initwatch summary
    """
    lines = ["## initwatch summary", ""]
    new = [a for a in alerts if not a.repeat]
    if new:
        counts = Counter(a.kind for a in new)
        lines += [f"**{len(new)} alerts**", "", "| kind | count | first step | layers |"]
        lines.append("|---|---|---|---|")
        for kind, n in counts.most_common():
            these = [a for a in new if a.kind == kind]
            layers = ", ".join(sorted({f"`{a.layer}`" for a in these})[:5])
            lines.append(f"| {kind} | {n} | {min(a.step for a in these)} | {layers} |")
    else:
        lines.append("No alerts.")
    if last is not None:
        lines += ["", f"Worst layers at step {last.step}:", ""]
        params = aggregate_params(last)
        checks = [
            ("lowest dL/d(output) RMS", last.values.get("out_grad_rms", {}), False),
            ("largest activation |max|", last.values.get("act_absmax", {}), True),
            ("largest activation RMS", last.values.get("act_rms", {}), True),
            ("most non-finite activations", last.values.get("act_nonfinite", {}), True),
            ("largest grad norm", params["grad_norm"], True),
            ("smallest grad norm", params["grad_norm"], False),
            ("largest update ratio", params["update_ratio"], True),
            ("smallest update ratio", params["update_ratio"], False),
        ]
        for label, table, highest in checks:
            found = _extreme(table, highest)
            if found:
                lines.append(f"- {label}: {found}")
    return "\n".join(lines)


# A 9-stop approximation of matplotlib's viridis, for when matplotlib is not installed.
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 44, 122],
        [59, 81, 139],
        [44, 113, 142],
        [33, 144, 141],
        [39, 173, 129],
        [92, 200, 99],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


def _numpy_heatmap(values: np.ndarray, cell: int = 8) -> np.ndarray:
    finite = np.isfinite(values)
    img = np.full(values.shape + (3,), 128.0)
    if finite.any():
        lo, hi = values[finite].min(), values[finite].max()
        t = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        pos = np.clip(np.nan_to_num(t), 0, 1) * (len(_VIRIDIS) - 1)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, len(_VIRIDIS) - 1)
        frac = (pos - i0)[..., None]
        colours = _VIRIDIS[i0] * (1 - frac) + _VIRIDIS[i1] * frac
        img = np.where(finite[..., None], colours, img)
    img = np.repeat(np.repeat(img, cell, axis=0), cell, axis=1)
    return img.astype(np.uint8)


def heatmap_image(
    values: np.ndarray,
    rows: Sequence[str],
    steps: Sequence[int],
    title: str,
    use_matplotlib: bool = True,
) -> np.ndarray:
    """Render a depth × step matrix as an RGB image (H, W, 3, uint8); NaN cells are grey.

    Uses matplotlib (labelled axes and a colour bar) when installed, else a plain numpy
    viridis colour map with 8-pixel cells (row 0 at the top).

    Example::

        >>> heatmap_image(np.array([[0.0, 1.0], [2.0, np.nan]]), ["b0", "b1"], [0, 10], "t",
        ...               use_matplotlib=False).shape
        (16, 16, 3)
    """
    values = np.asarray(values, dtype=np.float64)
    if use_matplotlib:
        try:
            import matplotlib
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            use_matplotlib = False
    if not use_matplotlib:
        return _numpy_heatmap(values)
    fig = Figure(figsize=(8, max(2.5, 0.22 * len(rows) + 1.5)), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#808080")
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", interpolation="nearest", cmap=cmap)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("layer")
    ticks = range(0, len(rows), max(1, len(rows) // 24))
    ax.set_yticks(list(ticks), [rows[i] for i in ticks], fontsize=7)
    xt = range(0, len(steps), max(1, len(steps) // 8))
    ax.set_xticks(list(xt), [str(steps[i]) for i in xt], fontsize=7)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
