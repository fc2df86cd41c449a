"""The TensorBoard dashboard: tag names (zero-padded block indices) and the custom-scalars layout.

The layout answers "which layer, since when" at TensorBoard's default (linear) axis: the first
category holds the run-wide signals one per chart and the depth ratios the rules test, drawn
with their threshold lines (in log10, so a five-decade collapse is a line falling five units);
the second the log10 statistics of every block, one line per block; branches and activation
functions have their own category; the linear values of every statistic come last, closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from initwatch.catalogue import CATALOGUE, names
from initwatch.frame import LayerInfo

if TYPE_CHECKING:
    from tensorboard.plugins.custom_scalar.layout_pb2 import Layout as LayoutProto

PREFIX = "initwatch"
PAD = 2  # block indices are written with at least this many digits: encoder.03

# What each per-layer statistic is, as a chart title says it (the catalogue's one-line doc).
TITLES = {s.name: s.doc for s in CATALOGUE if s.name in names() and s.source != "adapter"}
# The layer classes a statistic's lines are split into, with the noun a chart title uses.
CLASSES = {
    "blocks": "per block",
    "branches": "per attention / feed-forward branch (before the residual add)",
    "activations": "per activation function",
    "groups": "per block (parameters aggregated)",
    "tensors": "per parameter tensor",
    "other": "per layer",
}
_KIND_CLASS = {"block": "blocks", "module": "blocks", "act": "activations"}
_KIND_CLASS.update(attn="branches", cross="branches", ffn="branches", linear="branches")
# Log10 copies of the statistics that span decades, for the block lines.
LOG10_STATS = tuple(s.name for s in CATALOGUE if s.depth_profile)
# The depth ratios of initwatch.rules.depth, grouped into charts.
DEPTH_CHARTS = {
    "grad_norm": (
        "Depth ratio of the gradient norm: log10(lowest block / top blocks), one line per "
        "stack; vanishing_gradient below the threshold line",
        ("grad_norm",),
    ),
    "out_grad_rms": (
        "Depth ratio of the backward signal: log10(lowest block's RMS dL/d(output) / top "
        "blocks'); vanishing_gradient below the threshold line",
        ("out_grad_rms",),
    ),
    "act_rms": (
        "Depth ratio of the block output RMS: log10(largest and smallest block / lowest block); "
        "exploding / vanishing_activation beyond the threshold lines",
        ("act_rms_growth", "act_rms_decay"),
    ),
}
OVERVIEW = f"{PREFIX}"
BLOCKS = f"{PREFIX}: blocks, log10"
BRANCHES = f"{PREFIX}: branches and activation functions"
LINEAR = f"{PREFIX}: every statistic, linear"
CLOSED = frozenset({LINEAR})  # categories drawn collapsed


def layer_class(info: LayerInfo) -> str:
    """The chart class of a layer: ``blocks``, ``branches``, ``activations`` or ``tensors``.

    Example::

        >>> layer_class(LayerInfo("encoder.0.attn", "attn", 0, "layers.0.self_attn"))
        'branches'
    """
    if info.kind == "param":
        return "tensors"
    return _KIND_CLASS.get(info.kind, "other")


class TagNames:
    """Layer names as written in tags: block indices zero-padded (``encoder.3`` ->
    ``encoder.03``; at least :data:`PAD` digits, more for a stack of 100 blocks or more), so
    TensorBoard's alphabetical lists and tooltips follow depth. Frames, alerts and
    ``initwatch.inspect`` keep the plain names.

    Args:
        layers: the frame's layers (blocks and what is inside them carry ``stack`` and
            ``block``).

    Example::

        >>> ls = [LayerInfo(f"encoder.{i}", "block", i, f"l.{i}", "encoder", i) for i in range(12)]
        >>> names = TagNames(ls)
        >>> names("encoder.3"), names("encoder.3.attn"), names("encoder.11"), names("lm_head")
        ('encoder.03', 'encoder.03.attn', 'encoder.11', 'lm_head')
    """

    def __init__(self, layers: Iterable[LayerInfo]) -> None:
        depth: dict[str, int] = {}
        for i in layers:
            if i.stack is not None and i.block is not None:
                depth[i.stack] = max(depth.get(i.stack, 0), int(i.block))
        self._prefixes = {
            f"{stack}.{b}": f"{stack}.{b:0{max(PAD, len(str(n)))}d}"
            for stack, n in depth.items()
            for b in range(n + 1)
        }
        self._cache: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        found = self._cache.get(name)
        if found is None:
            parts = name.split(".", 2)
            head = ".".join(parts[:2])
            padded = self._prefixes.get(head)
            found = name if padded is None else padded + name[len(head) :]
            self._cache[name] = found
        return found

    @staticmethod
    def plain(tag_name: str) -> str:
        """The layer's own name back from its tag name (``encoder.03.attn`` ->
        ``encoder.3.attn``), as frames, alerts and ``initwatch.inspect`` write it.

        Example::

            >>> TagNames.plain("encoder.03.attn"), TagNames.plain("decoder.11"), TagNames.plain("lm_head")
            ('encoder.3.attn', 'decoder.11', 'lm_head')
        """
        parts = tag_name.split(".", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return tag_name
        parts[1] = str(int(parts[1]))
        return ".".join(parts)

    def is_block(self, name: str) -> bool:
        """Whether ``name`` is a block (``encoder.3``, a parameter group of one)."""
        return name in self._prefixes


def _exact(stat: str, names: Sequence[str]) -> str:
    return f"{PREFIX}/{stat}/(?:{'|'.join(re.escape(n) for n in names)})$"


def _title(stat: str) -> str:
    return TITLES.get(stat, stat)


def layout(
    stats: Iterable[str] | None = None,
    classes: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    depth: Iterable[str] = (),
) -> dict[str, dict[str, list]]:
    """The custom-scalars layout, ``{category: {chart title: ["Multiline", [tag regexes]]}}``.

    Categories, in order: ``initwatch`` (alerts, loss, learning rate, gradient norm and health
    counters, one chart each; the depth ratios with their thresholds; the update/weight ratio
    per block in log10 with its band), ``initwatch: blocks, log10`` (one line per block),
    ``initwatch: branches and activation functions`` and ``initwatch: every statistic, linear``
    (every statistic, split by layer class; drawn collapsed).

    Args:
        stats: the statistics written (default: every one in :data:`TITLES`).
        classes: ``{stat: {class: [tag layer names]}}`` (see :data:`CLASSES`): splits a
            statistic's lines by layer class, and ``{"log10_<stat>": {"blocks": [...]}}``
            names the block lines of the log10 charts; None: one chart per statistic for every
            layer.
        depth: the depth-ratio series written (``grad_norm``, ``act_rms_growth``...).

    Example::

        >>> lay = layout(["act_rms"], {"act_rms": {"blocks": ["encoder.00"],
        ...                                       "branches": ["encoder.00.attn"]},
        ...                           "log10_act_rms": {"blocks": ["encoder.00"]}})
        >>> [c for c in lay]
        ['initwatch', 'initwatch: blocks, log10', 'initwatch: branches and activation functions', 'initwatch: every statistic, linear']
        >>> lay["initwatch: blocks, log10"]["Block output RMS, log10, one line per block"]
        ['Multiline', ['initwatch/log10_act_rms/(?:encoder\\\\.00)$']]
    """
    chosen = [s for s in TITLES if stats is None or s in set(stats)]
    chosen += [s for s in (stats or ()) if s not in chosen]
    classes = classes or {}
    depth = set(depth)
    over: dict[str, list] = {
        "Alerts raised so far (new alerts, not 'still' updates)": [
            "Multiline",
            [f"{PREFIX}/alerts/count"],
        ],
        "Training loss": ["Multiline", [f"{PREFIX}/global/loss"]],
        "Learning rate (parameter group 0)": ["Multiline", [f"{PREFIX}/global/lr"]],
        "Global gradient norm: grad_norm_global (before clipping), grad_norm_clipped (after "
        "it), grad_norm_preclip (the Hugging Face Trainer's own pre-clip norm)": [
            "Multiline",
            [f"{PREFIX}/global/grad_norm_(?:global|clipped|preclip)$"],
        ],
        "Health counters: NaN / Inf activations and gradients, steps the AMP scaler skipped": [
            "Multiline",
            [f"{PREFIX}/global/(?:act_nonfinite|grad_nonfinite|skipped_step)$"],
        ],
    }
    for title, series in DEPTH_CHARTS.values():
        shown = [s for s in series if s in depth]
        if shown:
            tags = [f"{PREFIX}/log10_depth_ratio/{s}/.*" for s in shown]
            tags += [f"{PREFIX}/threshold/log10_depth_ratio/{s}$" for s in shown]
            over[title] = ["Multiline", tags]
    blocks: dict[str, list] = {}
    for stat in LOG10_STATS:
        key = f"log10_{stat}"
        if classes:  # the block lines the sink wrote
            names = classes.get(key, {}).get("blocks")
            if not names:
                continue
            regex = _exact(key, names)
        elif stat in chosen:
            regex = f"{PREFIX}/{key}/.*"
        else:
            continue
        if stat == "update_ratio":
            over[
                "Update/weight ratio per block, log10: healthy near -3 (1e-3, the target line); "
                "update_ratio_high / _low beyond the band lines"
            ] = ["Multiline", [regex, f"{PREFIX}/threshold/log10_update_ratio/.*"]]
        else:
            blocks[f"Block {_title(stat)}, log10, one line per block"] = ["Multiline", [regex]]
    branches: dict[str, list] = {}
    linear: dict[str, list] = {}
    for stat in chosen:
        split = classes.get(stat)
        if not split:
            linear[f"{_title(stat)} ({stat})"] = ["Multiline", [f"{PREFIX}/{stat}/.*"]]
            continue
        for cls, names in split.items():
            if not names:
                continue
            title = f"{_title(stat)} {CLASSES.get(cls, cls)} ({stat})"
            chart = ["Multiline", [_exact(stat, names)]]
            (branches if cls in ("branches", "activations") else linear)[title] = chart
    linear["Every run-wide value (initwatch/global/*)"] = ["Multiline", [f"{PREFIX}/global/.*"]]
    return {OVERVIEW: over, BLOCKS: blocks, BRANCHES: branches, LINEAR: linear}


def layout_proto(lay: Mapping[str, Mapping[str, list]]) -> LayoutProto:
    """The layout as a ``tensorboard`` ``Layout`` proto, :data:`CLOSED` categories collapsed
    and empty categories left out.

    Example::

        >>> proto = layout_proto(layout(["act_rms"]))
        >>> [(c.title, c.closed) for c in proto.category][-1]
        ('initwatch: every statistic, linear', True)
    """
    from tensorboard.plugins.custom_scalar import layout_pb2

    categories = []
    for title, charts in lay.items():
        if not charts:
            continue
        cs = [
            layout_pb2.Chart(title=t, multiline=layout_pb2.MultilineChartContent(tag=c[1]))
            for t, c in charts.items()
        ]
        categories.append(layout_pb2.Category(title=title, chart=cs, closed=title in CLOSED))
    return layout_pb2.Layout(category=categories)
