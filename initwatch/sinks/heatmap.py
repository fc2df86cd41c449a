"""Depth x step heatmap images, drawn with numpy and Pillow (no matplotlib on the training thread).

A heatmap is a log10 matrix (rows = layers in depth order, columns = logging steps) painted on a
fixed, labelled colour scale (``scale=(lo, hi)`` in log10 units, one decade per tick on the
colour bar), so that images of one statistic are comparable across steps and runs and a few
per cent of variation is not painted as the whole colour range. Images are sized for
TensorBoard's image cards (about 400 pixels wide for 256 steps), where they are shown unscaled.
A render costs a few milliseconds and holds no state between calls (no figure; one bitmap font
loaded once).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image, ImageFont

__all__ = ["heatmap_image", "heatmap_png", "warm_renderer"]

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
_LEVELS = 250  # palette entries of the colour map; then grey, white, black, red
_P_GREY, _P_WHITE, _P_BLACK, _P_RED = _LEVELS, _LEVELS + 1, _LEVELS + 2, _LEVELS + 3
_FONT: list[ImageFont.ImageFont | ImageFont.FreeTypeFont] = []  # the label font, loaded once
_LINE = 11  # height of a text line of the bitmap font
GRID_W = 256  # target width of the cell grid in pixels (one pixel a step at 256 steps)
GRID_H = 288  # target height of the cell grid


def _viridis(t: np.ndarray) -> np.ndarray:
    pos = np.clip(t, 0, 1) * (len(_VIRIDIS) - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(_VIRIDIS) - 1)
    frac = (pos - i0)[..., None]
    return _VIRIDIS[i0] * (1 - frac) + _VIRIDIS[i1] * frac


_PALETTE = np.concatenate(
    [
        _viridis(np.linspace(0, 1, _LEVELS)),
        [[_GREY] * 3, [255.0] * 3, [0.0] * 3, [220.0, 30.0, 30.0]],
    ]
).round()


def _levels(
    values: np.ndarray, scale: tuple[float, float] | None = None
) -> tuple[np.ndarray, float, float]:
    """Palette index of every cell, grey for NaN / Inf cells, and the (lo, hi) the colours
    span: ``scale`` when given (values beyond it take the end colours), else the finite min and
    max."""
    finite = np.isfinite(values)
    idx = np.full(values.shape, _P_GREY, dtype=np.uint8)
    if scale is not None:
        lo, hi = float(scale[0]), float(scale[1])
    elif finite.any():
        lo, hi = float(values[finite].min()), float(values[finite].max())
    else:
        return idx, math.nan, math.nan
    if finite.any():
        with np.errstate(invalid="ignore"):
            t = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        level = np.clip(np.nan_to_num(t), 0, 1) * (_LEVELS - 1)
        idx = np.where(finite, np.rint(level), _P_GREY).astype(np.uint8)
    return idx, lo, hi


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
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


def decade(k: float) -> str:
    """A power of ten as a colour-bar label.

    Example::

        >>> decade(-3), decade(0), decade(1), decade(2), decade(-0.5)
        ('1e-3', '1', '10', '1e2', '0.316')
    """
    if k != int(k):
        return f"{10.0**k:.3g}"
    k = int(k)
    return {0: "1", 1: "10"}.get(k, f"1e{k}")


def heatmap_png(
    values: np.ndarray,
    rows: Sequence[str],
    steps: Sequence[int],
    title: str,
    scale: tuple[float, float] | None = None,
    marks: Sequence[tuple[float, str]] = (),
    note: str = "",
) -> tuple[bytes, int, int]:
    """The labelled heatmap of :func:`heatmap_image` as a palette PNG: ``(bytes, height,
    width)``. One byte per pixel and a fast compression level: a few ms for a 400 x 350 image.

    Example::

        >>> png, h, w = heatmap_png(np.array([[0.0, 1.0]]), ["b0"], [0, 10], "t", scale=(-2, 2))
        >>> png[:4], h > 1 and w > 2
        (b'\\x89PNG', True)
    """
    out = io.BytesIO()
    image = _labelled(np.asarray(values, dtype=np.float64), rows, steps, title, scale, marks, note)
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue(), image.height, image.width


def _labelled(
    values: np.ndarray,
    rows: Sequence[str],
    steps: Sequence[int],
    title: str,
    scale: tuple[float, float] | None,
    marks: Sequence[tuple[float, str]],
    note: str,
) -> Image.Image:
    """The labelled picture of :func:`heatmap_image` / :func:`heatmap_png` (their arguments)."""
    from PIL import Image, ImageDraw

    idx, lo, hi = _levels(values, scale)
    n_rows, n_cols = values.shape
    cw = max(1, min(16, GRID_W // max(n_cols, 1)))
    ch = max(6, min(24, GRID_H // max(n_rows, 1)))
    font = _font()
    label_w = max((int(font.getlength(str(r))) for r in rows), default=0)
    top = 4 + _LINE * (2 if note else 1) + 4
    left, bottom = min(label_w, 160) + 6, _LINE + 4
    grid_w, grid_h = n_cols * cw, n_rows * ch
    bar_x = left + grid_w + 8
    ticks = [(v, text, _P_BLACK) for v, text in _ticks(lo, hi, grid_h)]
    for v, text in marks:  # a threshold: a red line across the bar, its label in red
        if math.isfinite(lo) and lo <= v <= hi:
            ticks = [t for t in ticks if abs(t[0] - v) * grid_h > (hi - lo) * _LINE]
            ticks.append((v, f"{decade(v)} {text}", _P_RED))
    labels = [text for _, text, _ in ticks]
    bar_w = 10 + 4 + max((int(font.getlength(t)) for t in labels), default=0) + 4
    width = max(bar_x + bar_w, int(font.getlength(title)) + 8, int(font.getlength(note)) + 8)
    height = top + grid_h + bottom
    canvas = np.full((height, width), _P_WHITE, dtype=np.uint8)
    canvas[top : top + grid_h, left : left + grid_w] = np.repeat(
        np.repeat(idx, ch, axis=0), cw, axis=1
    )
    ramp = np.rint(np.linspace(_LEVELS - 1, 0, max(grid_h, 1))).astype(np.uint8)
    canvas[top : top + grid_h, bar_x : bar_x + 10] = ramp[:, None]  # the colour bar: top = hi

    def bar_y(v: float) -> int:
        return top + int(round((hi - v) / (hi - lo) * (grid_h - 1))) if hi > lo else top

    for v, _, colour in ticks:
        if colour == _P_RED:
            canvas[bar_y(v), bar_x - 3 : bar_x + 12] = _P_RED
    image = Image.fromarray(canvas)
    image.putpalette(_PALETTE.astype(np.uint8).tobytes())
    draw = ImageDraw.Draw(image)
    draw.text((4, 3), title, fill=_P_BLACK, font=font)
    if note:
        draw.text((4, 3 + _LINE), note, fill=_P_BLACK, font=font)
    every = max(1, math.ceil(n_rows * _LINE / max(grid_h, 1)))
    for i in range(0, n_rows, every):
        label = str(rows[i])
        y = top + i * ch + ch // 2 - 6
        draw.text((left - 3 - font.getlength(label), y), label, fill=_P_BLACK, font=font)
    every = max(1, math.ceil(64 / cw))  # a step label every ~64 pixels
    for j in range(0, n_cols, every):
        draw.text((left + j * cw, top + grid_h + 2), str(steps[j]), fill=_P_BLACK, font=font)
    for v, text, colour in ticks:
        y = min(max(bar_y(v) - 6, top - 4), top + grid_h - _LINE + 2)
        draw.text((bar_x + 14, y), text, fill=colour, font=font)
    return image


def _ticks(lo: float, hi: float, grid_h: int) -> list[tuple[float, str]]:
    """Colour-bar ticks: every decade within the range (every other one when crowded), or
    just the two ends for a range narrower than a decade."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [(lo, f"{10.0**lo:.3g}")] if math.isfinite(lo) else []
    ks = list(range(math.ceil(lo), math.floor(hi) + 1))
    if len(ks) < 2:
        return [(hi, decade(hi)), (lo, decade(lo))]
    step = max(1, math.ceil(len(ks) * (_LINE + 2) / max(grid_h, 1)))
    return [(float(k), decade(k)) for k in ks[::-1][::step]]


def heatmap_image(
    values: np.ndarray,
    rows: Sequence[str],
    steps: Sequence[int],
    title: str,
    labels: bool = True,
    scale: tuple[float, float] | None = None,
    marks: Sequence[tuple[float, str]] = (),
    note: str = "",
) -> np.ndarray:
    """Render a depth × step matrix of log10 values as an RGB image (H, W, 3, uint8); NaN cells
    are grey.

    A numpy viridis map (row 0 at the top) drawn with Pillow: the title (and a ``note`` line),
    row labels, step labels and a colour bar with a tick per decade of ``scale`` (``(lo, hi)``
    in log10 units, fixed so images are comparable; None: the data's range) and red ``marks``
    (``(log10 value, label)``: thresholds). No matplotlib: it costs a few milliseconds and holds
    no state between calls, so it does not stall training and memory does not grow with
    renders. Without Pillow, or with ``labels=False``, the plain map with 8-pixel cells.
    :func:`heatmap_png` gives the same picture PNG-encoded (what the TensorBoard sink writes).

    Example::

        >>> heatmap_image(np.array([[0.0, 1.0], [2.0, np.nan]]), ["b0", "b1"], [0, 10], "t",
        ...               labels=False).shape
        (16, 16, 3)
        >>> img = heatmap_image(np.array([[0.0, 1.0], [2.0, np.nan]]), ["b0", "b1"], [0, 10], "t",
        ...                     scale=(-3.0, 3.0), marks=[(-2.0, "alert")])
        >>> img.dtype, img.shape[0] > 16 and img.shape[1] > 16
        (dtype('uint8'), True)
    """
    values = np.asarray(values, dtype=np.float64)
    if labels:
        try:
            image = _labelled(values, rows, steps, title, scale, marks, note)
            return np.asarray(image.convert("RGB"))
        except ImportError:
            pass
    return _plain(_levels(values, scale)[0])
