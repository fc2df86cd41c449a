"""TensorBoard sink: scalars, the custom-scalars dashboard, depth x step heatmaps, alert text."""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from initwatch import catalogue
from initwatch.alerts import Alert
from initwatch.frame import PARAM_STATS, Frame
from initwatch.histograms import NAN_BIN, tensorboard_histogram
from initwatch.rules.depth import depth_ratios, top_reference
from initwatch.rules.thresholds import Thresholds
from initwatch.sinks import (
    Sink,
    aggregate_params,
    heatmap_image,
    heatmap_png,
    summary_markdown,
    warm_renderer,
)
from initwatch.sinks.heatmap import decade
from initwatch.sinks.layout import LOG10_STATS, PREFIX, TagNames, layer_class, layout, layout_proto
from initwatch.vocabulary import SummaryWriterLike

if TYPE_CHECKING:
    from tensorboard.compat.proto.summary_pb2 import Summary

DETAILS = ("default", "all")
# The default tag budget, read from the catalogue: which statistics get a tag for which kind
# of layer; parameter statistics get one per block (or module), aggregated.
LAYER_KINDS = ("block", "module", "attn", "cross", "ffn", "linear", "act")
DEFAULT_TAGS = {kind: catalogue.names(tags=kind) for kind in LAYER_KINDS}
PARAM_TAGS = catalogue.names(tags="param")
# The heatmap images, in the order they take turns: the catalogue's heatmap statistics, each
# followed by its "_vs_top" variant when vanishing_gradient compares it across depth: the same
# divided by the top blocks' (initwatch.rules.depth.top_reference, per stack and step: the ratio
# the rule tests).
VS_TOP = ("grad_norm", "out_grad_rms")
HEATMAPS = tuple(
    image
    for stat in catalogue.HEATMAPS
    for image in ((stat, f"{stat}_vs_top") if stat in VS_TOP else (stat,))
)
# Fixed log10 colour scales, the same for every run (values beyond take the end colours).
HEATMAP_SCALES = {
    "grad_norm": (-7.0, 1.0),
    "grad_norm_vs_top": (-6.0, 1.0),
    "out_grad_rms": (-9.0, -1.0),
    "out_grad_rms_vs_top": (-6.0, 1.0),
    "act_rms": (-3.0, 3.0),
}
_HEATMAP_TITLES = {
    "grad_norm": "grad_norm: gradient L2 norm per block",
    "grad_norm_vs_top": "grad_norm / the top blocks' (vanishing_gradient's ratio)",
    "out_grad_rms": "out_grad_rms: RMS of dL/d(block output)",
    "out_grad_rms_vs_top": "out_grad_rms / the top blocks' (vanishing_gradient's ratio)",
    "act_rms": "act_rms: RMS of each block's output",
}
# The images an alert of a kind writes at once (nonfinite: all of them).
ALERT_HEATMAPS = {
    "vanishing_gradient": ("grad_norm_vs_top", "out_grad_rms_vs_top", "grad_norm", "out_grad_rms"),
    "exploding_gradient": ("grad_norm", "grad_norm_vs_top"),
    "vanishing_activation": ("act_rms",),
    "exploding_activation": ("act_rms",),
    "nonfinite": HEATMAPS,
}
# each statistic with default tags: the layer kinds that get one
_TAGGED = {
    stat: tuple(k for k in LAYER_KINDS if stat in DEFAULT_TAGS[k])
    for stat in dict.fromkeys(s for k in LAYER_KINDS for s in DEFAULT_TAGS[k])
}
# Each alert is also written as plain data: one JSON object (``Alert.to_dict()``) per string of a
# tensor event under this tag, with this plugin name (TensorBoard shows no dashboard for it;
# ``initwatch report`` reads it, so the Markdown's wording can change freely).
ALERT_DATA_TAG = f"{PREFIX}/alert_data"
ALERT_DATA_PLUGIN = "initwatch_alerts"
ALERT_DATA_VERSION = 1


# The RMS that goes with each histogram (its sum of squares).
HIST_RMS = {"act_hist": "act_rms", "out_grad_hist": "out_grad_rms"}


def _base(image: str) -> str:
    return image.removesuffix("_vs_top")


class _EventFile(Protocol):
    """``SummaryWriter._get_file_writer()``: writes summary protos as events of the run."""

    def add_summary(self, summary: Any, global_step: int | None = None) -> Any: ...


def _string_tensor(
    tag: str, plugin: str, strings: list[bytes], shape: tuple[int, ...], content: bytes = b""
) -> Summary.Value:
    """A summary value holding a tensor of byte strings for a TensorBoard plugin (the custom
    scalars' layout, the alert data), ``content`` its plugin data."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=plugin, content=content)
    )
    dims = [TensorShapeProto.Dim(size=n) for n in shape]
    tensor = TensorProto(
        dtype="DT_STRING", string_val=strings, tensor_shape=TensorShapeProto(dim=dims)
    )
    return Summary.Value(tag=tag, metadata=meta, tensor=tensor)


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


def alert_records(alerts: Sequence[Alert]) -> list[str]:
    """Each alert as one line of JSON: the fields of :class:`~initwatch.alerts.Alert`
    (``Alert.to_dict()``; a non-finite value is written as ``NaN`` / ``Infinity``, as Python's
    ``json`` reads it).

    Example::

        >>> a = Alert(3, "nonfinite", "encoder.1", float("nan"), 0.0, "error", "NaN", "lower lr")
        >>> record = json.loads(alert_records([a])[0])
        >>> record["kind"], record["layer"], record["step"], Alert.from_dict(record).remedy
        ('nonfinite', 'encoder.1', 3, 'lower lr')
    """
    return [json.dumps(a.to_dict(), sort_keys=True, default=str) for a in alerts]


class TensorBoardSink(Sink):
    """Writes frames and alerts to a ``SummaryWriter``.

    Tags: ``initwatch/<stat>/<layer>`` per layer, ``initwatch/global/<stat>`` for run-wide
    values, ``initwatch/alerts/count`` (new alerts so far), text ``initwatch/alerts`` and
    ``initwatch/summary``, images ``initwatch/heatmap/<stat>``; each alert also as plain data
    (one JSON object per alert, :func:`alert_records`) under ``initwatch/alert_data``. The default tag budget is about
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
        heatmap_scales: ``{image: (lo, hi)}`` log10 colour scales replacing those of
            :data:`HEATMAP_SCALES` (fixed, so that runs are comparable).

    Example::

        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> sink = TensorBoardSink(SummaryWriter(tempfile.mkdtemp()))
        >>> sink.write_frame(Frame(step=0, layers=[], values={}, globals={"loss": 2.5}))
        >>> sink.close(None, [])
    """

    def __init__(
        self,
        writer: SummaryWriterLike,
        detail: str = "default",
        heatmap_every: int = 10,
        heatmap_steps: int = 256,
        heatmap_budget: float = 0.01,
        heatmap_scales: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        if detail not in DETAILS:
            raise ValueError(f"detail={detail!r}: expected one of {DETAILS}")
        self.writer = writer
        self.detail = detail
        self.heatmap_every = max(1, int(heatmap_every))
        self._history: deque[tuple[int, dict[str, dict[str, float]]]] = deque(maxlen=heatmap_steps)
        self._rows: dict[str, list[str]] = {s: [] for s in catalogue.HEATMAPS}
        self.heatmap_budget = float(heatmap_budget)
        self.heatmap_scales = {**HEATMAP_SCALES, **(heatmap_scales or {})}
        self._stacks: dict[str, str] = {}  # block row -> its stack (the _vs_top reference)
        self._next_heatmap = 0.0  # time.monotonic() before which a due heatmap is skipped
        self._frames = 0
        self._closed = False
        self._pending: tuple[int, dict[str, float]] | None = None
        self._due: list[str] = []  # heatmaps due, rendered one per logging step
        self._names: TagNames | None = None
        self._classes: dict[str, dict[str, list[str]]] = {}  # stat -> class -> tag layer names
        self._depth: set[str] = set()  # depth-ratio series written
        self._layout_due = False
        warm_renderer()  # Pillow's imports and font now, not at the first image (~20 ms)

    def _thresholds(self) -> Thresholds:
        """The thresholds the Watch's rules use (the default ones when not bound)."""
        return self.thresholds if self.thresholds is not None else Thresholds()

    def _events(self) -> _EventFile | None:
        """The writer's event file, to write summary protos directly (many scalars as one event,
        palette PNGs as they are); None for a duck-typed writer, which gets ``add_*`` calls."""
        get = getattr(self.writer, "_get_file_writer", None)
        return get() if get is not None else None

    def _flush(self) -> None:
        if self._pending is not None:
            step, values = self._pending
            self._pending = None
            if self._layout_due:  # charts for what this run writes (again if it grew)
                self._write_layout()
                self._layout_due = False
            self._scalars(values, step)

    def _write_layout(self) -> None:
        stats = [s for s in self._classes if not s.startswith("log10_")]
        lay = layout(stats, self._classes, self._depth)
        events = self._events()
        if events is None:  # a duck-typed writer: the dict form (no collapsed category)
            self.writer.add_custom_scalars({k: v for k, v in lay.items() if v})
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        config = layout_proto(lay).SerializeToString()
        value = _string_tensor("custom_scalars__config__", "custom_scalars", [config], ())
        events.add_summary(Summary(value=[value]))

    def _classify(
        self,
        frame: Frame,
        tables: dict[str, dict[str, float]],
        params: dict[str, dict[str, float]],
        names: TagNames,
    ) -> None:
        """Record the layer class of every tag written (the layout splits charts by it)."""
        infos = {i.name: i for i in frame.layers}
        for stat, table in tables.items():
            for layer in table:
                if stat.startswith("log10_"):
                    cls = "blocks"
                elif stat in PARAM_STATS:
                    cls = "groups" if layer in params.get(stat, {}) else "tensors"
                else:
                    info = infos.get(layer)
                    cls = layer_class(info) if info is not None else "other"
                known = self._classes.setdefault(stat, {}).setdefault(cls, [])
                tag = names(layer)
                if tag not in known:
                    known.append(tag)
                    self._layout_due = True

    def _scalars(self, values: dict[str, float], step: int) -> None:
        """Write many scalars as one event (10x faster than one ``add_scalar`` each)."""
        events = self._events()
        if events is None:  # a duck-typed writer
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
        events.add_summary(summary, step)

    def write_frame(self, frame: Frame) -> None:
        """Scalars of one frame (within the tag budget), and the heatmaps every N frames."""
        step = frame.step
        if self._names is None:
            self._names = TagNames(frame.layers)
        names = self._names
        params = aggregate_params(frame)
        tables = self._layer_tables(frame, params)
        tables.update(self._log10_tables(frame, params, names))
        self._classify(frame, tables, params, names)
        values = {
            f"{stat}/{names(layer)}": value
            for stat, table in tables.items()
            for layer, value in table.items()
        }
        values.update(self._depth_values(frame, params))
        values.update({f"global/{k}": v for k, v in self._globals(frame, params).items()})
        self._flush()
        self._pending = (step, values)  # written with the alert count: one event per step
        if frame.histograms:
            self._write_histograms(frame, names)
        self._remember(frame, params)
        self._frames += 1
        every, n = self.heatmap_every, len(HEATMAPS)
        # the images take turns (stat i is offset by i/n of the interval); those due wait in
        # a queue and a logging step renders at most one (heatmap_every < 3 makes several due)
        for i, st in enumerate(HEATMAPS):
            due = (self._frames - i * every // n) % every == 0
            if due and self._rows[_base(st)] and st not in self._due:
                self._due.append(st)
        if self._due and time.monotonic() >= self._next_heatmap:
            self.write_heatmaps(step, [self._due.pop(0)])

    def _layer_tables(
        self, frame: Frame, params: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stat, kinds in _TAGGED.items():
            found = {i.name: v for i, v in frame.series(stat, kinds)}
            if found:
                out[stat] = found
        for stat in PARAM_TAGS:
            out.setdefault(stat, {}).update(params[stat])
        if self.detail == "all":
            for stat, table in frame.values.items():
                out.setdefault(stat, {}).update(table)
            out.setdefault("grad_nonfinite", {}).update(params["grad_nonfinite"])
        return out

    def _write_histograms(self, frame: Frame, names: TagNames) -> None:
        """``initwatch/act_hist/<block>`` and ``initwatch/out_grad_hist/<block>``: the bins
        counted on the device (:mod:`initwatch.histograms`), as TensorBoard histograms."""
        events = self._events()
        if events is None:  # a duck-typed writer: no histograms
            return
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

        out = []
        for stat, table in frame.histograms.items():
            for layer, bins in table.items():
                rms, mean = frame.get(HIST_RMS[stat], layer), frame.get("act_mean", layer)
                n = sum(bins[:NAN_BIN])
                fields = tensorboard_histogram(
                    bins,
                    absmax=frame.get("act_absmax", layer) if stat == "act_hist" else None,
                    total=mean * n if stat == "act_hist" and math.isfinite(mean) else 0.0,
                    sumsq=rms * rms * n if math.isfinite(rms) else 0.0,
                )
                if fields is not None:
                    tag = f"{PREFIX}/{stat}/{names(layer)}"
                    out.append(Summary.Value(tag=tag, histo=HistogramProto(**fields)))
        if out:
            events.add_summary(Summary(value=out), frame.step)

    def _log10_tables(
        self, frame: Frame, params: dict[str, dict[str, float]], names: TagNames
    ) -> dict[str, dict[str, float]]:
        """log10 of the statistics that span decades (:data:`LOG10_STATS`), for the blocks
        (modules and parameter groups of models without blocks); zero and non-finite values
        have no log10 and are left out (the linear tag still has them)."""
        out: dict[str, dict[str, float]] = {}
        for stat in LOG10_STATS:
            if stat in params:
                table = params[stat]
                if any(names.is_block(k) for k in table):
                    table = {k: v for k, v in table.items() if names.is_block(k)}
            else:
                table = {i.name: v for i, v in frame.series(stat, ("block", "module"))}
            logs = {k: math.log10(v) for k, v in table.items() if math.isfinite(v) and v > 0}
            if logs:
                out[f"log10_{stat}"] = logs
        return out

    def _depth_values(self, frame: Frame, params: dict[str, dict[str, float]]) -> dict[str, float]:
        """log10 of the depth ratios the depth rules test (:mod:`initwatch.rules.depth`), and
        the thresholds they are tested against, as lines of their own; the update ratio band."""
        th = self._thresholds()
        out: dict[str, float] = {}
        for d in depth_ratios(frame, th):
            if math.isfinite(d.ratio) and d.ratio > 0:
                out[f"log10_depth_ratio/{d.stat}/{d.stack}"] = math.log10(d.ratio)
                out[f"threshold/log10_depth_ratio/{d.stat}"] = math.log10(d.threshold)
                if d.stat not in self._depth:
                    self._depth.add(d.stat)
                    self._layout_due = True
        if params.get("update_ratio"):
            tuned = bool(getattr(self.context, "pretrained", False))
            high = th.update_ratio_high_pretrained if tuned else th.update_ratio_high
            low = th.update_ratio_low_pretrained if tuned else th.update_ratio_low
            for name, v in (("target", th.update_ratio_target), ("high", high), ("low", low)):
                out[f"threshold/log10_update_ratio/{name}"] = math.log10(v)
        return out

    @staticmethod
    def _globals(frame: Frame, params: dict[str, dict[str, float]]) -> dict[str, float]:
        out = dict(frame.globals)
        out["act_nonfinite"] = sum(frame.stat("act_nonfinite").values())
        out["grad_nonfinite"] = sum(params["grad_nonfinite"].values())
        return out

    def _remember(self, frame: Frame, params: dict[str, dict[str, float]]) -> None:
        # heatmap rows: blocks (or top-level modules), NaN where not measured
        depth = np.flatnonzero(frame.index().of_kind(("block", "module"))).tolist()
        names = [frame.layers[i].name for i in depth]
        rows = {
            stat: params[stat]
            if stat in params
            else dict(zip(names, frame.column(stat)[depth].tolist(), strict=True))
            for stat in catalogue.HEATMAPS
        }
        for stat, table in rows.items():  # rows once measured (no all-grey images)
            known = self._rows[stat]
            known.extend(k for k, v in table.items() if k not in known and math.isfinite(v))
        if not self._stacks:
            self._stacks = {
                f"{i.stack}.{i.block}": i.stack
                for i in frame.layers
                if i.kind == "block" and i.stack is not None and i.block is not None
            }
        self._history.append((frame.step, rows))

    def write_heatmaps(self, step: int, stats: Sequence[str] = HEATMAPS) -> None:
        """Depth × step images (those of ``stats``, of :data:`HEATMAPS`): log10 grad norm per
        block / module group, log10 output-gradient RMS and activation RMS per block, and the
        ``_vs_top`` ratios to the top blocks, on the fixed colour scales of ``heatmap_scales``."""
        if not self._history:
            return
        start = time.monotonic()
        steps = [s for s, _ in self._history]
        for image in stats:
            stat = _base(image)
            rows = self._rows.get(stat, [])
            if image != stat:  # the ratio the rule tests: blocks only, per stack
                rows = [r for r in rows if r in self._stacks] or rows
            if not rows:
                continue
            m = np.array(
                [[table[stat].get(r, math.nan) for _, table in self._history] for r in rows],
                dtype=np.float64,
            )
            if image != stat:
                m = self._vs_top(m, rows)
            with np.errstate(divide="ignore", invalid="ignore"):
                m = np.where(m > 0, np.log10(np.where(m > 0, m, 1.0)), np.nan)
            self._image(image, m, rows, steps, step)
        took = time.monotonic() - start
        self._next_heatmap = time.monotonic() + took / max(self.heatmap_budget, 1e-9)

    def _vs_top(self, m: np.ndarray, rows: list[str]) -> np.ndarray:
        """Each column divided by its stack's :func:`~initwatch.rules.depth.top_reference`
        over the finite values in depth order (the reference vanishing_gradient uses)."""
        out = np.full_like(m, np.nan)
        stacks: dict[str, list[int]] = {}
        for k, r in enumerate(rows):
            stacks.setdefault(self._stacks.get(r, "model"), []).append(k)
        for idx in stacks.values():
            sub = m[idx]
            for j in range(sub.shape[1]):
                col = sub[:, j]
                ok = np.isfinite(col)
                if ok.any():
                    ref = top_reference(col[ok].tolist())
                    if ref > 0:
                        out[idx, j] = col / ref
        return out

    def _image(
        self, image: str, values: np.ndarray, rows: list[str], steps: list[int], step: int
    ) -> None:
        """One heatmap image event: a palette PNG from :func:`heatmap_png` written as is
        (``add_image`` would take an RGB array and re-encode it at a slower level)."""
        tag = f"{PREFIX}/heatmap/{image}"
        title = _HEATMAP_TITLES.get(image, f"log10 {image}")
        scale = self.heatmap_scales.get(image)
        marks: list[tuple[float, str]] = []
        th = self._thresholds()
        if image.endswith("_vs_top"):
            marks.append((math.log10(th.grad_depth_ratio), "alert"))
        elif image == "grad_norm":
            marks.append((math.log10(th.grad_floor), "floor"))
        span = f"{decade(scale[0])} to {decade(scale[1])}" if scale else "the data's range"
        note = f"colour: log10, {span} for every run; grey: not measured"
        events = self._events()
        try:
            if events is None:
                raise ImportError  # a duck-typed writer gets the RGB array
            png, h, w = heatmap_png(values, rows, steps, title, scale=scale, marks=marks, note=note)
        except ImportError:  # no Pillow
            img = heatmap_image(values, rows, steps, title, scale=scale, marks=marks, note=note)
            self.writer.add_image(tag, img, step, dataformats="HWC")
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        encoded = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=png)
        events.add_summary(Summary(value=[Summary.Value(tag=tag, image=encoded)]), step)

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
            # the pictures of the cause, at the step it was raised (not only at the next turn)
            shown = [h for h in HEATMAPS if any(h in ALERT_HEATMAPS.get(a.kind, ()) for a in new)]
            if shown:
                self.write_heatmaps(step, shown)
                self._due = [h for h in self._due if h not in shown]
        if updates:
            self.writer.add_text(f"{PREFIX}/alerts/updates", alert_markdown(updates), step)
        if alerts:
            self._alert_data(alerts, step)

    def _alert_data(self, alerts: Sequence[Alert], step: int) -> None:
        """The alerts as plain data (:data:`ALERT_DATA_TAG`), next to their Markdown."""
        events = self._events()
        if events is None:  # a duck-typed writer: the Markdown only
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        records = [r.encode("utf-8") for r in alert_records(alerts)]
        content = json.dumps({"version": ALERT_DATA_VERSION}).encode()
        value = _string_tensor(ALERT_DATA_TAG, ALERT_DATA_PLUGIN, records, (len(records),), content)
        events.add_summary(Summary(value=[value]), step)

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
