"""Sinks: where frames and alerts go, plus what every sink shares (aggregation, summary, images)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from initwatch.alerts import Alert
from initwatch.blocks import STATS as BLOCK_STATS
from initwatch.blocks import aggregate, param_group
from initwatch.catalogue import STATISTICS, worst_checks
from initwatch.frame import Frame, LayerInfo  # noqa: F401 (the doctests use LayerInfo)

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

    thresholds: object = None  # the rules' Thresholds (set by bind)
    context: object = None  # the run's RunContext (set by bind)

    def bind(self, thresholds: object = None, context: object = None) -> None:
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


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _extreme(table: dict[str, float], highest: bool) -> str | None:
    items = [(v, k) for k, v in table.items() if math.isfinite(v)]
    if not items:
        return None
    v, k = max(items) if highest else min(items)
    return f"`{k}` ({_fmt(v)})"


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
            table = params[stat] if stat in params else last.values.get(stat, {})
            if STATISTICS[stat].unit == "count":
                table = {k: v for k, v in table.items() if v > 0}  # none: nothing to name
            found = _extreme(table, highest)
            if found:
                lines.append(f"- {label}: {found}")
    return "\n".join(lines)


# A 9-stop approximation of matplotlib's viridis.
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
_GREY = 128.0
_LEVELS = 250  # palette entries of the colour map; then grey, white, black
_P_GREY, _P_WHITE, _P_BLACK = _LEVELS, _LEVELS + 1, _LEVELS + 2
_FONT: list = []  # the label font, loaded once


def _viridis(t: np.ndarray) -> np.ndarray:
    pos = np.clip(t, 0, 1) * (len(_VIRIDIS) - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(_VIRIDIS) - 1)
    frac = (pos - i0)[..., None]
    return _VIRIDIS[i0] * (1 - frac) + _VIRIDIS[i1] * frac


_PALETTE = np.concatenate(
    [_viridis(np.linspace(0, 1, _LEVELS)), [[_GREY] * 3, [255.0] * 3, [0.0] * 3]]
).round()


def _levels(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Palette index of every cell: the viridis level between the finite min and max, grey for
    NaN / Inf cells. Returns the indices (uint8) and the (min, max) the map spans."""
    finite = np.isfinite(values)
    idx = np.full(values.shape, _P_GREY, dtype=np.uint8)
    lo = hi = math.nan
    if finite.any():
        lo, hi = float(values[finite].min()), float(values[finite].max())
        t = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        level = np.clip(np.nan_to_num(t), 0, 1) * (_LEVELS - 1)
        idx = np.where(finite, np.rint(level), _P_GREY).astype(np.uint8)
    return idx, lo, hi


def _font() -> object:
    """Pillow's built-in bitmap font (~50 µs a label; its FreeType default takes ~10x that)."""
    if not _FONT:
        from PIL import ImageFont

        load = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
        _FONT.append(load())
    return _FONT[0]


def warm_renderer() -> bool:
    """Import what :func:`heatmap_png` needs and load its font, once per process (~20 ms the
    first time: Pillow's image plugins), so that the first heatmap of a run does not pay it on
    the training thread. Returns whether Pillow is available.

    Example::

        >>> warm_renderer() in (True, False)
        True
    """
    if _FONT:
        return True
    try:
        heatmap_png(np.zeros((1, 1)), ["0"], [0], "")
    except Exception:  # no Pillow (heatmap_image falls back to the plain map)
        return False
    return True


def _plain(idx: np.ndarray, cell: int = 8) -> np.ndarray:
    return _PALETTE[np.repeat(np.repeat(idx, cell, axis=0), cell, axis=1)].astype(np.uint8)


def heatmap_png(
    values: np.ndarray, rows: Sequence[str], steps: Sequence[int], title: str
) -> tuple[bytes, int, int]:
    """The labelled heatmap of :func:`heatmap_image` as a palette PNG: ``(bytes, height,
    width)``. One byte per pixel and a fast compression level: a few ms for a 650 x 250 image.

    Example::

        >>> png, h, w = heatmap_png(np.array([[0.0, 1.0]]), ["b0"], [0, 10], "t")
        >>> png[:4], h > 1 and w > 2
        (b'\\x89PNG', True)
    """
    import io

    out = io.BytesIO()
    image = _labelled(np.asarray(values, dtype=np.float64), rows, steps, title)
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue(), image.height, image.width


def _labelled(values: np.ndarray, rows: Sequence[str], steps: Sequence[int], title: str):
    from PIL import Image, ImageDraw

    idx, lo, hi = _levels(values)
    n_rows, n_cols = values.shape
    cw = max(2, min(40, 560 // max(n_cols, 1)))
    ch = max(6, min(40, 420 // max(n_rows, 1)))
    font = _font()
    label_w = max((int(font.getlength(str(r))) for r in rows), default=0)
    left, top, bottom, bar = min(label_w, 200) + 8, 20, 18, 70
    grid_w, grid_h = n_cols * cw, n_rows * ch
    width, height = left + grid_w + bar, top + grid_h + bottom
    canvas = np.full((height, width), _P_WHITE, dtype=np.uint8)
    canvas[top : top + grid_h, left : left + grid_w] = np.repeat(
        np.repeat(idx, ch, axis=0), cw, axis=1
    )
    bar_x = left + grid_w + 10  # the colour bar: top = max
    ramp = np.rint(np.linspace(_LEVELS - 1, 0, max(grid_h, 1))).astype(np.uint8)
    canvas[top : top + grid_h, bar_x : bar_x + 10] = ramp[:, None]
    image = Image.fromarray(canvas)
    image.putpalette(_PALETTE.astype(np.uint8).tobytes())
    draw = ImageDraw.Draw(image)
    draw.text((left, 3), title, fill=_P_BLACK, font=font)
    every = max(1, math.ceil(n_rows / 24))
    for i in range(0, n_rows, every):
        label = str(rows[i])
        y = top + i * ch + ch // 2 - 5
        draw.text((left - 4 - font.getlength(label), y), label, fill=_P_BLACK, font=font)
    every = max(1, math.ceil(n_cols / 8))
    for j in range(0, n_cols, every):
        draw.text((left + j * cw, top + grid_h + 3), str(steps[j]), fill=_P_BLACK, font=font)
    if math.isfinite(lo):
        draw.text((bar_x + 13, top), f"{hi:.3g}", fill=_P_BLACK, font=font)
        draw.text((bar_x + 13, top + grid_h - 11), f"{lo:.3g}", fill=_P_BLACK, font=font)
    return image


def heatmap_image(
    values: np.ndarray,
    rows: Sequence[str],
    steps: Sequence[int],
    title: str,
    labels: bool = True,
) -> np.ndarray:
    """Render a depth × step matrix as an RGB image (H, W, 3, uint8); NaN cells are grey.

    A numpy viridis map (row 0 at the top) drawn with Pillow: the title, row labels (at most
    ~24), step labels (at most ~8) and a colour bar with its range. No matplotlib: it costs a
    few milliseconds and holds no state between calls (no figure; one bitmap font loaded
    once), so it does not stall training and memory does not grow with renders. Without
    Pillow, or with ``labels=False``, the plain map with 8-pixel cells.
    :func:`heatmap_png` gives the same picture PNG-encoded (what the TensorBoard sink writes).

    Example::

        >>> heatmap_image(np.array([[0.0, 1.0], [2.0, np.nan]]), ["b0", "b1"], [0, 10], "t",
        ...               labels=False).shape
        (16, 16, 3)
        >>> img = heatmap_image(np.array([[0.0, 1.0], [2.0, np.nan]]), ["b0", "b1"], [0, 10], "t")
        >>> img.dtype, img.shape[0] > 16 and img.shape[1] > 16
        (dtype('uint8'), True)
    """
    values = np.asarray(values, dtype=np.float64)
    if labels:
        try:
            return np.asarray(_labelled(values, rows, steps, title).convert("RGB"))
        except ImportError:
            pass
    return _plain(_levels(values)[0])
