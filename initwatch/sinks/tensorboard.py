"""TensorBoard sink: scalars, the custom-scalars dashboard, depth x step heatmaps, alert text."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from initwatch.alerts import Alert
from initwatch.frame import ACT_STATS, BACKWARD_STATS, PARAM_STATS, Frame
from initwatch.sinks import (
    Sink,
    aggregate_params,
    heatmap_image,
    heatmap_png,
    summary_markdown,
    warm_renderer,
)

PREFIX = "initwatch"
DETAILS = ("default", "all")
# The default tag budget: which statistics get a tag for which kind of layer.
DEFAULT_TAGS = {
    "block": ("act_rms", "act_absmax", "out_grad_rms"),
    "module": ("act_rms", "act_absmax", "out_grad_rms"),
    "attn": ("act_rms",),
    "cross": ("act_rms",),
    "ffn": ("act_rms",),
    "linear": ("act_rms",),
    "act": ("act_zero_frac", "act_sat_frac"),
}
PARAM_TAGS = ("grad_norm", "weight_norm", "grad_weight_ratio", "update_ratio")
HEATMAPS = ("grad_norm", "act_rms", "out_grad_rms")


def layout(stats: Sequence[str] | None = None) -> dict[str, dict[str, list]]:
    """The custom-scalars layout: category ``initwatch``, one multiline chart per statistic
    across depth (regex ``initwatch/<stat>/.*``), one for global signals, one for alerts.

    Args:
        stats: the statistics that get a chart (default: all); the sink passes those it writes,
            so the dashboard shows no empty charts.

    Example::

        >>> layout()["initwatch"]["act_rms"]
        ['Multiline', ['initwatch/act_rms/.*']]
        >>> list(layout(["act_rms", "grad_norm"])["initwatch"])
        ['act_rms', 'grad_norm', 'global', 'alerts']
    """
    every = ACT_STATS + BACKWARD_STATS + PARAM_STATS
    chosen = every if stats is None else [s for s in every if s in set(stats)]
    charts = {s: ["Multiline", [f"{PREFIX}/{s}/.*"]] for s in chosen}
    charts["global"] = ["Multiline", [f"{PREFIX}/global/.*"]]
    charts["alerts"] = ["Multiline", [f"{PREFIX}/alerts/count"]]
    return {PREFIX: charts}


def alert_markdown(alerts: Sequence[Alert]) -> str:
    """Alerts as Markdown (:func:`initwatch.alert_text.markdown`): a new alert with its
    evidence and remedy, a "still" update as one line; separated by rules.

    Example::

        >>> a = Alert(3, "nonfinite", "encoder.1", float("nan"), 0.0, "error", "NaN", "lower lr")
        >>> print(alert_markdown([a]))
        **error · nonfinite** at `encoder.1` (step 3): non-finite values: some
        <BLANKLINE>
        NaN
        <BLANKLINE>
        **What to do:**
        <BLANKLINE>
        - lower lr
    """
    from initwatch.alert_text import markdown

    return "\n\n---\n\n".join(markdown(a) for a in alerts)


class TensorBoardSink(Sink):
    """Writes frames and alerts to a ``SummaryWriter``.

    Tags: ``initwatch/<stat>/<layer>`` per layer, ``initwatch/global/<stat>`` for run-wide
    values, ``initwatch/alerts/count`` (new alerts so far), text ``initwatch/alerts`` and
    ``initwatch/summary``, images ``initwatch/heatmap/<stat>``. The default tag budget is about
    10 tags per block (see docs/dashboards.md): block outputs get RMS, abs-max and output-gradient
    RMS; sublayer outputs RMS; activation functions their zero / saturation fractions; parameter
    statistics are aggregated per block (or per module outside blocks). ``detail="all"`` also
    writes every statistic of every layer and every parameter tensor.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``.
        detail: ``"default"`` (bounded tag budget) or ``"all"``.
        heatmap_every: write each heatmap image every this many logging steps (and at close);
            the images take turns, so a logging step renders at most one.
        heatmap_steps: columns kept for the heatmaps (the most recent logging steps).
        heatmap_budget: the largest fraction of wall time heatmap rendering may take: a due
            heatmap is skipped until ``last render time / heatmap_budget`` seconds have passed
            since the last one (a numpy / Pillow render takes a few ms per image).

    Example::

        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> sink = TensorBoardSink(SummaryWriter(tempfile.mkdtemp()))
        >>> sink.write_frame(Frame(step=0, layers=[], values={}, globals={"loss": 2.5}))
        >>> sink.close(None, [])
    """

    def __init__(
        self,
        writer: object,
        detail: str = "default",
        heatmap_every: int = 10,
        heatmap_steps: int = 256,
        heatmap_budget: float = 0.01,
    ) -> None:
        if detail not in DETAILS:
            raise ValueError(f"detail={detail!r}: expected one of {DETAILS}")
        self.writer = writer
        self.detail = detail
        self.heatmap_every = max(1, int(heatmap_every))
        self._history: deque[tuple[int, dict[str, dict[str, float]]]] = deque(maxlen=heatmap_steps)
        self._rows: dict[str, list[str]] = {s: [] for s in HEATMAPS}
        self.heatmap_budget = float(heatmap_budget)
        self._next_heatmap = 0.0  # time.monotonic() before which a due heatmap is skipped
        self._frames = 0
        self._closed = False
        self._pending: tuple[int, dict[str, float]] | None = None
        self._layout_written = False
        self._due: list[str] = []  # heatmaps due, rendered one per logging step
        warm_renderer()  # Pillow's imports and font now, not at the first image (~20 ms)

    def _flush(self) -> None:
        if self._pending is not None:
            step, values = self._pending
            self._pending = None
            if not self._layout_written:  # charts for the statistics this run writes
                self.writer.add_custom_scalars(layout({t.split("/", 1)[0] for t in values}))
                self._layout_written = True
            self._scalars(values, step)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        """Write many scalars as one event (10x faster than one ``add_scalar`` each)."""
        file_writer = getattr(self.writer, "_get_file_writer", None)
        if file_writer is None:  # a duck-typed writer
            for tag, value in values.items():
                self.writer.add_scalar(f"{PREFIX}/{tag}", float(value), step)
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(
            value=[
                Summary.Value(tag=f"{PREFIX}/{tag}", simple_value=float(value))
                for tag, value in values.items()
            ]
        )
        file_writer().add_summary(summary, step)

    def write_frame(self, frame: Frame) -> None:
        """Scalars of one frame (within the tag budget), and the heatmaps every N frames."""
        step = frame.step
        params = aggregate_params(frame)
        values = {
            f"{stat}/{layer}": value
            for stat, table in self._layer_tables(frame, params).items()
            for layer, value in table.items()
        }
        values.update({f"global/{k}": v for k, v in self._globals(frame, params).items()})
        self._flush()
        self._pending = (step, values)  # written with the alert count: one event per step
        self._remember(frame, params)
        self._frames += 1
        every, n = self.heatmap_every, len(HEATMAPS)
        # the images take turns (stat i is offset by i/n of the interval); those due wait in
        # a queue and a logging step renders at most one (heatmap_every < 3 makes several due)
        for i, st in enumerate(HEATMAPS):
            due = (self._frames - i * every // n) % every == 0
            if due and self._rows[st] and st not in self._due:
                self._due.append(st)
        if self._due and time.monotonic() >= self._next_heatmap:
            self.write_heatmaps(step, [self._due.pop(0)])

    def _layer_tables(
        self, frame: Frame, params: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for info in frame.layers:
            for stat in DEFAULT_TAGS.get(info.kind, ()):
                if info.name in frame.values.get(stat, {}):
                    out.setdefault(stat, {})[info.name] = frame.values[stat][info.name]
        for stat in PARAM_TAGS:
            out.setdefault(stat, {}).update(params[stat])
        if self.detail == "all":
            for stat, table in frame.values.items():
                out.setdefault(stat, {}).update(table)
            out.setdefault("grad_nonfinite", {}).update(params["grad_nonfinite"])
        return out

    @staticmethod
    def _globals(frame: Frame, params: dict[str, dict[str, float]]) -> dict[str, float]:
        out = dict(frame.globals)
        out["act_nonfinite"] = sum(frame.values.get("act_nonfinite", {}).values())
        out["grad_nonfinite"] = sum(params["grad_nonfinite"].values())
        return out

    def _remember(self, frame: Frame, params: dict[str, dict[str, float]]) -> None:
        depth_kinds = {"block", "module"}
        rows = {
            "grad_norm": params["grad_norm"],
            "act_rms": {
                i.name: frame.get("act_rms", i.name) for i in frame.layers if i.kind in depth_kinds
            },
            "out_grad_rms": {
                i.name: frame.get("out_grad_rms", i.name)
                for i in frame.layers
                if i.kind in depth_kinds
            },
        }
        for stat, table in rows.items():
            known = self._rows[stat]
            known.extend(k for k in table if k not in known)
        self._history.append((frame.step, rows))

    def write_heatmaps(self, step: int, stats: Sequence[str] = HEATMAPS) -> None:
        """Depth × step images of log10 grad norm (per block / module group), and log10
        activation RMS and output-gradient RMS per block (those of ``stats``)."""
        if not self._history:
            return
        start = time.monotonic()
        steps = [s for s, _ in self._history]
        for stat in stats:
            rows = self._rows[stat]
            if not rows:
                continue
            m = np.array(
                [[table[stat].get(r, math.nan) for _, table in self._history] for r in rows],
                dtype=np.float64,
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                m = np.where(m > 0, np.log10(np.where(m > 0, m, 1.0)), np.nan)
            self._image(f"{PREFIX}/heatmap/{stat}", m, rows, steps, step)
        took = time.monotonic() - start
        self._next_heatmap = time.monotonic() + took / max(self.heatmap_budget, 1e-9)

    def _image(
        self, tag: str, values: np.ndarray, rows: list[str], steps: list[int], step: int
    ) -> None:
        """One heatmap image event: a palette PNG from :func:`heatmap_png` written as is
        (``add_image`` would take an RGB array and re-encode it at a slower level)."""
        title = f"log10 {tag.rsplit('/', 1)[-1]}"
        file_writer = getattr(self.writer, "_get_file_writer", None)
        try:
            if file_writer is None:
                raise ImportError  # a duck-typed writer gets the RGB array
            png, h, w = heatmap_png(values, rows, steps, title)
        except ImportError:  # no Pillow
            img = heatmap_image(values, rows, steps, title)
            self.writer.add_image(tag, img, step, dataformats="HWC")
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=png)
        file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def write_alerts(self, alerts: Sequence[Alert], step: int, total: int) -> None:
        """``initwatch/alerts/count`` (new alerts so far) and the alerts as Markdown text: new
        alerts under ``initwatch/alerts``, "still" updates (one line each) under
        ``initwatch/alerts/updates``."""
        if self._pending is None or self._pending[0] != step:
            self._flush()
            self._pending = (step, {})
        self._pending[1]["alerts/count"] = total
        self._flush()
        # New alerts and their "still" updates go to two tags, so the Text tab shows the
        # original alert (with its remedy) first, not under a pile of one-line updates.
        new = [a for a in alerts if not a.repeat]
        updates = [a for a in alerts if a.repeat]
        if new:
            self.writer.add_text(f"{PREFIX}/alerts", alert_markdown(new), step)
        if updates:
            self.writer.add_text(f"{PREFIX}/alerts/updates", alert_markdown(updates), step)

    def close(self, last: Frame | None, alerts: Sequence[Alert]) -> None:
        """Final heatmaps and the ``initwatch/summary`` text; flushes (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._flush()
        step = last.step if last is not None else 0
        self.write_heatmaps(step)
        self.writer.add_text(f"{PREFIX}/summary", summary_markdown(last, alerts), step)
        self.writer.flush()
