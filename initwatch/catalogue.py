"""The statistics catalogue: every statistic initwatch reports, declared once.

Each :class:`Statistic` says where it is measured (its *source*), which reduced buffer fields it
is derived from and by what formula (vectorized over every layer of a source at once), when it
is bad (low, high), which layers get a TensorBoard tag for it by default (the tag budget), how
parameter tensors combine into a block, whether TensorBoard draws it as a depth × step heatmap,
and its display title and unit. Frame building (:mod:`initwatch.frame`), the derived-statistic
helpers of :mod:`initwatch.stats`, the sinks, the rules, ``initwatch report`` and
``initwatch check`` read it; adding a statistic is one entry here (plus the buffer field it
needs in :mod:`initwatch.stats` when it is a new one).

Example::

    >>> STATISTICS["act_rms"].title, STATISTICS["act_rms"].bad
    ('activation RMS', 'both')
    >>> names(source="output_grad")
    ('out_grad_rms',)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Source = Literal["activation", "output_grad", "param", "attention", "adapter", "optimizer", "run"]
Bad = Literal["low", "high", "both"]
BlockRule = Literal["norm", "ratio", "sum"]
Arrays = Mapping[str, np.ndarray]
Formula = Callable[[Arrays], np.ndarray]

# What each source's buffer fields are (their reductions are declared in initwatch.stats and
# initwatch.attention), plus the per-row flags the frame builder passes to the formulas.
SOURCES: dict[str, str] = {
    "activation": "a monitored module's output (initwatch.stats.ACTIVATION_FIELDS)",
    "output_grad": "dL/d(output) of a block (initwatch.stats.GRAD_SIGNAL_FIELDS)",
    "param": "a parameter tensor's gradient, weight and update (initwatch.stats.PARAM_FIELDS)",
    "attention": "a self-attention's sampled probabilities (initwatch.attention.ATTENTION_FIELDS)",
    "adapter": "a LoRA-adapted weight's effective update (initwatch.adapters, host values)",
    "optimizer": "the optimizer step (host values)",
    "run": "the training run (the loss, initwatch.stats.LOSS_FIELDS)",
}


# The formulas run under np.errstate(**QUIET) (division by zero, NaN and overflow are values
# here, not warnings).


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b``, NaN where ``b`` is 0 (like the scalar helpers always did)."""
    out = a / b
    out[b == 0] = math.nan
    return out


def _sqrt(x: np.ndarray) -> np.ndarray:
    """``sqrt(x)``, NaN for negative (or NaN) ``x``."""
    return np.sqrt(x)  # NaN for negative x


def _std(v: Arrays) -> np.ndarray:
    mean = v["sum"] / v["count"]
    var = v["sumsq"] / v["count"] - mean * mean
    out = np.sqrt(np.maximum(var, 0.0))
    out[~np.isfinite(var)] = math.nan
    return out


def _nonfinite(v: Arrays) -> np.ndarray:
    # counted: the number of NaN / Inf elements; otherwise inf when the sum says some are
    # present ("present, not counted": a NaN or Inf element makes the sum non-finite), else 0
    present = np.where(np.isfinite(v["sum"]), 0.0, math.inf)
    return np.where(v["counted"], v["nonfinite"], present)


def _update_ratio(v: Arrays) -> np.ndarray:
    # ||dW|| ~ sqrt(numel / sampled * sum over the sample of dW^2), over the exact ||W||
    delta = np.sqrt(v["update_sumsq"] * v["numel"] / np.maximum(v["sampled"], 1))
    return _div(delta, np.sqrt(v["weight_sumsq"]))


@dataclass(frozen=True)
class Statistic:
    """One reported statistic.

    Args:
        name: the key in frames and the ``<stat>`` of ``initwatch/<stat>/<layer>`` tags (stable:
            part of what users see).
        source: where it is measured (a key of :data:`SOURCES`).
        title: what dashboards, reports and the summary call it (``"activation RMS"``).
        unit: ``""`` (a plain number), ``"fraction"``, ``"count"`` or ``"flag"``.
        fields: the reduced buffer fields (or host values) it is derived from.
        formula: the derivation, vectorized: arrays of ``fields`` (one entry per layer of the
            source) in, the statistic out. None for host values taken as they are.
        only: a per-layer flag the statistic is only given for (``"zeros_counted"``: ReLU-family
            outputs whose zeros are counted, ``"bounded"``: tanh / sigmoid outputs,
            ``"has_grad"``: tensors with a gradient, ``"updated"``: tensors the optimizer
            stepped). None: every measured layer of the source.
        bad: when a value is bad: ``"low"``, ``"high"`` or ``"both"`` (None: not judged alone).
        tags: the layer kinds that get a TensorBoard tag by default (the tag budget);
            ``"param"`` means one tag per block (or module), aggregated by ``block``.
        block: how parameter tensors combine into a block: ``"norm"`` (the L2 norm over the
            tensors), ``"ratio"`` (a ratio of such norms), ``"sum"``.
        heatmap: TensorBoard draws it as a depth × step image (``initwatch/heatmap/<stat>``):
            its turn among the images (they take turns, one render per logging step); 0: none.
        depth_profile: it is meaningful as a per-block profile over depth and steps (what
            ``initwatch report --heatmap`` can draw).
        worst: the run summary and ``initwatch report`` list its worst layers (smallest and / or
            largest, from ``bad``).
        doc: one line on what it measures (the dashboard's chart title).

    Example::

        >>> s = STATISTICS["update_ratio"]
        >>> s.source, s.block, s.reductions()
        ('param', 'ratio', {'update_sumsq': 'sum', 'weight_sumsq': 'sum'})
    """

    name: str
    source: Source
    title: str
    unit: str = ""
    fields: tuple[str, ...] = ()
    formula: Formula | None = None
    only: str | None = None
    bad: Bad | None = None
    tags: tuple[str, ...] = ()
    block: BlockRule | None = None
    heatmap: int = 0
    depth_profile: bool = False
    worst: bool = False
    doc: str = ""

    def reductions(self) -> dict[str, str]:
        """``{field: "sum" | "max"}``: how each buffer field it reads combines over
        micro-batches and ranks (declared once, in the source's field list)."""
        declared = {f.name: f.reduce.value for f in _source_fields(self.source)}
        return {f: declared[f] for f in self.fields if f in declared}

    def labels(self) -> list[tuple[str, bool]]:
        """``(label, highest)`` of each "worst layers" line: ``("smallest gradient norm",
        False)``... from ``bad`` (``"most"`` for counts)."""
        big = "most" if self.unit == "count" else "largest"
        sides = {"low": [False], "high": [True], "both": [False, True]}.get(self.bad or "", [])
        return [(f"{big if high else 'smallest'} {self.title}", high) for high in sides]

    def derive(self, arrays: Arrays) -> np.ndarray:
        """The statistic for every row of ``arrays`` (NaN where it cannot be computed)."""
        if self.formula is None:
            return np.asarray(arrays[self.name], dtype=np.float64)
        return np.asarray(self.formula(arrays), dtype=np.float64)


def _source_fields(source: str) -> tuple:
    from initwatch import stats

    if source == "attention":
        from initwatch.attention import ATTENTION_FIELDS

        return ATTENTION_FIELDS
    return {
        "activation": stats.ACTIVATION_FIELDS,
        "output_grad": stats.GRAD_SIGNAL_FIELDS,
        "param": stats.PARAM_FIELDS,
        "run": stats.LOSS_FIELDS,
    }.get(source, ())


_DEPTH = ("block", "module")  # the residual stream: block outputs (or top-level modules)
_SUB = ("block", "module", "attn", "cross", "ffn", "linear")

CATALOGUE: tuple[Statistic, ...] = (
    # ---- activations: one monitored module's output, over every element -----------------
    Statistic(
        "act_rms",
        "activation",
        "activation RMS",
        fields=("sumsq", "count"),
        formula=lambda v: _sqrt(v["sumsq"] / v["count"]),
        bad="both",
        tags=_SUB,
        heatmap=2,
        depth_profile=True,
        worst=True,
        doc="output RMS",
    ),
    Statistic(
        "act_mean",
        "activation",
        "activation mean",
        fields=("sum", "count"),
        formula=lambda v: v["sum"] / v["count"],
        doc="output mean",
    ),
    Statistic(
        "act_std",
        "activation",
        "activation std",
        fields=("sum", "sumsq", "count"),
        formula=_std,
        doc="output standard deviation",
    ),
    Statistic(
        "act_absmax",
        "activation",
        "activation |max|",
        fields=("absmax",),
        formula=lambda v: v["absmax"],
        bad="high",
        tags=_DEPTH,
        worst=True,
        doc="output |max|",
    ),
    Statistic(
        "act_zero_frac",
        "activation",
        "zero fraction",
        "fraction",
        fields=("zeros", "count"),
        formula=lambda v: v["zeros"] / v["count"],
        only="zeros_counted",
        bad="high",
        tags=("act",),
        doc="fraction of exact zeros in the output (dead ReLU units)",
    ),
    Statistic(
        "act_sat_frac",
        "activation",
        "saturated fraction",
        "fraction",
        fields=("saturated", "count"),
        formula=lambda v: v["saturated"] / v["count"],
        only="bounded",
        bad="high",
        tags=("act",),
        doc="fraction of the output in the saturation band",
    ),
    Statistic(
        "act_nonfinite",
        "activation",
        "non-finite activations",
        "count",
        fields=("nonfinite", "sum"),
        formula=_nonfinite,
        bad="high",
        worst=True,
        doc="NaN / Inf elements in the output",
    ),
    # ---- the backward signal of the residual stream ----------------------------------------
    Statistic(
        "out_grad_rms",
        "output_grad",
        "backward-signal RMS",
        fields=("sumsq", "count"),
        formula=lambda v: _sqrt(v["sumsq"] / v["count"]),
        bad="low",
        tags=_DEPTH,
        heatmap=3,
        depth_profile=True,
        worst=True,
        doc="backward signal: RMS of dL/d(output)",
    ),
    # ---- attention probabilities rebuilt from q and k (initwatch.attention) ----------------
    Statistic(
        "attn_onehot_frac",
        "attention",
        "one-hot attention rows",
        "fraction",
        fields=("onehot", "rows"),
        formula=lambda v: v["onehot"] / v["rows"],
        bad="high",
        doc="attention rows with a probability above 0.99",
    ),
    Statistic(
        "attn_pmax",
        "attention",
        "largest attention probability",
        fields=("pmax", "rows"),
        formula=lambda v: v["pmax"] / v["rows"],
        doc="mean largest attention probability",
    ),
    Statistic(
        "attn_entropy",
        "attention",
        "attention entropy",
        "fraction",
        fields=("entropy", "rows"),
        formula=lambda v: v["entropy"] / v["rows"],
        bad="low",
        doc="attention entropy / a uniform row's",
    ),
    Statistic(
        "attn_logit_absmax",
        "attention",
        "attention logit |max|",
        fields=("logit_absmax",),
        formula=lambda v: v["logit_absmax"],
        bad="high",
        doc="largest |q·k/sqrt(d)|",
    ),
    # ---- parameters: per tensor, aggregated per block for tags and rules -------------------
    Statistic(
        "grad_norm",
        "param",
        "gradient norm",
        fields=("grad_sumsq",),
        formula=lambda v: _sqrt(v["grad_sumsq"]),
        only="has_grad",
        bad="both",
        tags=("param",),
        block="norm",
        heatmap=1,
        depth_profile=True,
        worst=True,
        doc="gradient L2 norm",
    ),
    Statistic(
        "weight_norm",
        "param",
        "weight norm",
        fields=("weight_sumsq",),
        formula=lambda v: _sqrt(v["weight_sumsq"]),
        tags=("param",),
        block="norm",
        doc="weight L2 norm",
    ),
    Statistic(
        "grad_weight_ratio",
        "param",
        "gradient/weight ratio",
        fields=("grad_sumsq", "weight_sumsq"),
        formula=lambda v: _div(_sqrt(v["grad_sumsq"]), _sqrt(v["weight_sumsq"])),
        only="has_grad",
        tags=("param",),
        block="ratio",
        doc="gradient norm / weight norm",
    ),
    Statistic(
        "update_ratio",
        "param",
        "update/weight ratio",
        fields=("update_sumsq", "weight_sumsq"),
        formula=_update_ratio,
        only="updated",
        bad="both",
        tags=("param",),
        block="ratio",
        depth_profile=True,
        worst=True,
        doc="update/weight ratio ||ΔW|| / ||W|| of the optimizer step",
    ),
    Statistic(
        "grad_nonfinite",
        "param",
        "non-finite gradient",
        "flag",
        fields=("grad_nonfinite",),
        formula=lambda v: v["grad_nonfinite"],
        only="has_grad",
        bad="high",
        block="sum",
        doc="tensors whose gradient holds NaN / Inf",
    ),
    # ---- a LoRA-adapted weight (initwatch.adapters): judged in place of lora_A / lora_B ----
    Statistic(
        "adapter_norm",
        "adapter",
        "adapter norm",
        doc="||s B A|| of a LoRA adapter (its update_ratio / weight_norm are the adapted weight's)",
    ),
    # ---- run-wide values (frame.globals, tags initwatch/global/<stat>) ---------------------
    Statistic(
        "grad_norm_global",
        "param",
        "global gradient norm",
        fields=("grad_sumsq",),
        bad="both",
        doc="L2 norm over every gradient (before clipping when the clip norm is known)",
    ),
    Statistic(
        "grad_norm_clipped",
        "optimizer",
        "clipped global gradient norm",
        doc="the global gradient norm after clipping (when clipping was seen)",
    ),
    Statistic("lr", "optimizer", "learning rate", doc="the first param group's learning rate"),
    Statistic(
        "loss",
        "run",
        "loss",
        fields=("sum", "count"),
        formula=lambda v: v["sum"] / v["count"],
        bad="high",
        doc="the step's loss, averaged over ranks",
    ),
    Statistic(
        "skipped_step",
        "optimizer",
        "skipped step",
        "flag",
        doc="1 when an AMP scaler skipped the optimizer step",
    ),
)

STATISTICS: dict[str, Statistic] = {s.name: s for s in CATALOGUE}
_BY_SOURCE: dict[str, tuple[Statistic, ...]] = {}
for _s in CATALOGUE:
    if _s.formula is not None:
        _BY_SOURCE[_s.source] = (*_BY_SOURCE.get(_s.source, ()), _s)
QUIET: dict[str, Any] = {"divide": "ignore", "invalid": "ignore", "over": "ignore"}  # np.errstate
# The field whose being > 0 says a row of a source was measured at all (None: always).
MEASURED_BY = {"activation": "count", "output_grad": "count", "attention": "rows", "run": "count"}
# the depth x step images TensorBoard draws, in their turns
HEATMAPS = tuple(s.name for s in sorted(CATALOGUE, key=lambda s: s.heatmap) if s.heatmap)
# frame.globals keys (everything else is per layer)
GLOBALS = ("grad_norm_global", "grad_norm_clipped", "lr", "loss", "skipped_step")
# written under initwatch/global/ by the TensorBoard sink: totals over every layer
TOTALS = ("act_nonfinite", "grad_nonfinite")


def names(source: str | None = None, *, tags: str | None = None) -> tuple[str, ...]:
    """Per-layer statistic names in catalogue order, optionally of one ``source`` or with a
    default tag for layer kind ``tags``.

    Example::

        >>> names("param")
        ('grad_norm', 'weight_norm', 'grad_weight_ratio', 'update_ratio', 'grad_nonfinite')
        >>> names(tags="block")
        ('act_rms', 'act_absmax', 'out_grad_rms')
    """
    return tuple(
        s.name
        for s in CATALOGUE
        if s.name not in GLOBALS
        and (source is None or s.source == source)
        and (tags is None or tags in s.tags)
    )


def of(source: str) -> tuple[Statistic, ...]:
    """The per-layer statistics of one source, in catalogue order.

    Example::

        >>> [s.name for s in of("output_grad")]
        ['out_grad_rms']
    """
    return tuple(STATISTICS[n] for n in names(source))


def title(name: str) -> str:
    """The display title of a statistic (the name itself for one not in the catalogue).

    Example::

        >>> title("out_grad_rms"), title("my_stat")
        ('backward-signal RMS', 'my_stat')
    """
    found = STATISTICS.get(name)
    return found.title if found is not None else name


def derive(
    source: str, arrays: Arrays, flags: Mapping[str, np.ndarray] | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every per-layer statistic of ``source`` for all its rows at once.

    ``arrays`` holds the reduced fields (one entry per row: per monitored module, per
    parameter tensor...) and the per-row flags the formulas and ``only`` conditions read
    (``counted``, ``zeros_counted``, ``bounded``, ``has_grad``, ``updated``, ``numel``, ``sampled``).
    Returns ``(name, values, given)`` per statistic in catalogue order: ``given`` says which
    rows have the statistic (measured, and meeting its ``only`` condition). Call it under
    ``np.errstate(divide="ignore", invalid="ignore", over="ignore")`` (:data:`QUIET`): a
    division by zero or a NaN is a value here, not a warning.

    Example::

        >>> a = {"sumsq": np.array([4.0, 0.0]), "count": np.array([4.0, 0.0])}
        >>> with np.errstate(**QUIET):
        ...     name, values, given = derive("output_grad", a)[0]
        >>> name, values[given].tolist()
        ('out_grad_rms', [1.0])
    """
    flags = arrays if flags is None else {**arrays, **flags}
    key = MEASURED_BY.get(source)
    rows = len(next(iter(arrays.values()))) if arrays else 0
    measured = flags[key] > 0 if key is not None else np.ones(rows, dtype=bool)
    out = []
    for stat in _BY_SOURCE.get(source, ()):
        given = measured if stat.only is None else measured & np.asarray(flags[stat.only], bool)
        out.append((stat.name, stat.derive(flags), given))
    return out


def derive_one(source: str, row: Mapping[str, float], **flags: float) -> dict[str, float]:
    """:func:`derive` for one row given as ``{field: value}``: ``{stat: value}`` of the
    statistics it has (``{}`` when the row was not measured).

    Example::

        >>> derive_one("output_grad", {"sumsq": 8.0, "count": 2.0})
        {'out_grad_rms': 2.0}
    """
    arrays = {k: np.array([float(v)]) for k, v in {**row, **flags}.items()}
    with np.errstate(**QUIET):
        derived = derive(source, arrays)
    return {name: float(v[0]) for name, v, given in derived if given[0]}


def worst_checks() -> list[tuple[str, str, bool]]:
    """``(stat, label, highest)`` of every "worst layers" line, in catalogue order (the run
    summary and ``initwatch report`` both list these).

    Example::

        >>> worst_checks()[0]
        ('act_rms', 'smallest activation RMS', False)
    """
    return [(s.name, label, high) for s in CATALOGUE if s.worst for label, high in s.labels()]


__all__ = [
    "CATALOGUE",
    "GLOBALS",
    "HEATMAPS",
    "QUIET",
    "SOURCES",
    "STATISTICS",
    "TOTALS",
    "Statistic",
    "derive",
    "derive_one",
    "names",
    "of",
    "title",
    "worst_checks",
]
