"""A frame: the statistics of one logging step, as host data (step x layer x statistic)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from initwatch import catalogue

# Statistic names, per source, read from the catalogue (initwatch.catalogue). Activation
# statistics are keyed by monitored module (LayerInfo.kind in "block", "attn", "cross", "ffn",
# "act", "linear", "module"); parameter statistics by parameter name.
ACT_STATS = catalogue.names("activation")
BACKWARD_STATS = catalogue.names("output_grad")  # dL/d(output) of each block
PARAM_STATS = catalogue.names("param")
GLOBAL_STATS = catalogue.GLOBALS


@dataclass
class LayerInfo:
    """A monitored layer or parameter, in depth order.

    Args:
        name: display name used in tags, e.g. ``"encoder.3"`` or ``"encoder.3.attn"`` or a
            module path for models the anatomy does not read.
        kind: ``"block"``, ``"attn"``, ``"cross"``, ``"ffn"``, ``"act"``, ``"linear"``,
            ``"module"`` (activation sources) or ``"param"``.
        depth: position in forward order among layers of the same kind (0 = closest to input).
        path: module path (for parameters: the parameter name).
        stack: ``"encoder"``, ``"decoder"`` or None.
        block: index of the block within its stack, or None.
        role: for parameters, the anatomy role (``"q"``, ``"k"``, ``"ffn_out"``, ...) or None.
        zero_by_construction: True for parameters whose gradient is identically zero by design
            (attention key biases), which rules must never flag.
        trainable: False for frozen parameters.

    Example::

        >>> LayerInfo(name="encoder.0", kind="block", depth=0, path="layers.0").kind
        'block'
    """

    name: str
    kind: str
    depth: int
    path: str
    stack: str | None = None
    block: int | None = None
    role: str | None = None
    zero_by_construction: bool = False
    trainable: bool = True


_COLS: dict[int, tuple[list[str], dict[str, int]]] = {}  # column maps of shared name lists


class Table:
    """A frame's per-layer statistics as arrays: ``data[row of stat, column of layer]``.

    Columns are the frame's layer names in depth order, then any name that has values but no
    :class:`LayerInfo` (an attention sublayer that is not monitored itself); ``given`` says
    which cells were measured (a measured value may itself be NaN).

    Args:
        rows: ``{stat: row}``.
        names: the column names.
        data: ``(len(rows), len(names))`` float64 values.
        given: the same shape, bool: which values were measured.

    Example::

        >>> t = Table.from_values({"act_rms": {"b0": 2.0}}, ["b0", "b1"])
        >>> t.get("act_rms", "b0"), t.get("act_rms", "b1", -1.0), t.to_values()
        (2.0, -1.0, {'act_rms': {'b0': 2.0}})
    """

    def __init__(
        self, rows: dict[str, int], names: list[str], data: np.ndarray, given: np.ndarray
    ) -> None:
        self.rows = rows
        self.names = names
        found = _COLS.get(id(names))
        if found is None or found[0] is not names:
            found = (names, {n: i for i, n in enumerate(names)})
            if len(_COLS) > 64:
                _COLS.clear()
            _COLS[id(names)] = found
        self.cols = found[1]
        self.data = data
        self.given = given

    @classmethod
    def empty(cls, stats: Sequence[str], names: Sequence[str], unique: bool = False) -> Table:
        """A table with no value measured yet (``unique``: ``names`` is a list without
        repeats, kept as it is)."""
        names = names if unique and isinstance(names, list) else list(dict.fromkeys(names))
        shape = (len(stats), len(names))
        rows = {s: i for i, s in enumerate(stats)}
        return cls(rows, names, np.full(shape, math.nan), np.zeros(shape, dtype=bool))

    @classmethod
    def from_values(cls, values: dict[str, dict[str, float]], names: Sequence[str]) -> Table:
        """The table of ``values[stat][layer]`` (columns: ``names``, then the other layers)."""
        extra = [n for table in values.values() for n in table]
        table = cls.empty(list(values), [*names, *extra])
        for stat, by_layer in values.items():
            r = table.rows[stat]
            cols = [table.cols[n] for n in by_layer]
            table.data[r, cols] = list(by_layer.values())
            table.given[r, cols] = True
        return table

    def row(self, stat: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(values, given)`` over the columns, or None when ``stat`` has no row."""
        r = self.rows.get(stat)
        return None if r is None else (self.data[r], self.given[r])

    def put(self, stat: str, cols: np.ndarray, values: np.ndarray, given: np.ndarray) -> None:
        """Write ``values`` where ``given`` into columns ``cols`` of ``stat``'s row."""
        r = self.rows[stat]
        self.data[r, cols] = values
        self.given[r, cols] = given

    def get(self, stat: str, name: str, default: float = math.nan) -> float:
        """One value, or ``default`` when it was not measured."""
        r, c = self.rows.get(stat), self.cols.get(name)
        if r is None or c is None or not self.given[r, c]:
            return default
        return float(self.data[r, c])

    def stat(self, stat: str) -> dict[str, float]:
        """``{layer: value}`` of one statistic, in column order."""
        r = self.rows.get(stat)
        if r is None:
            return {}
        cols = np.flatnonzero(self.given[r]).tolist()
        names, vals = self.names, self.data[r].tolist()
        return {names[c]: vals[c] for c in cols}

    def to_values(self) -> dict[str, dict[str, float]]:
        """``values[stat][layer]`` of every measured value (statistics in row order)."""
        out = {}
        for stat in self.rows:
            found = self.stat(stat)
            if found:
                out[stat] = found
        return out


class Frame:
    """Statistics of one logging step.

    Per-layer values are held as arrays (:class:`Table`, ``frame.table``); ``frame.values``
    gives them as ``values[stat][layer]`` dictionaries. A frame built from dictionaries
    (``Frame(step, layers, values)``) makes its table when first read by array; a frame built
    by the Watch makes its dictionaries only when ``values`` is read. A frame is read-only once
    it reached the rules and sinks.

    Args:
        step: the training step.
        layers: every activation source and parameter that has statistics, in depth order.
        values: ``values[stat][layer_name] -> float`` (NaN where not measured).
        globals: ``globals[stat] -> float`` for run-wide values (``grad_norm_global``, ``lr``...).
        histograms: ``histograms[stat][layer] -> counts`` on histogram steps: ``"act_hist"``
            (block outputs) and ``"out_grad_hist"`` (dL/d(block output)), one count per bin
            of :mod:`initwatch.histograms`.
        table: the per-layer values as a :class:`Table` (instead of ``values``).

    Example::

        >>> f = Frame(step=5, layers=[], values={"act_rms": {"encoder.0": 1.0}}, globals={})
        >>> f.get("act_rms", "encoder.0")
        1.0
    """

    def __init__(
        self,
        step: int,
        layers: list[LayerInfo],
        values: dict[str, dict[str, float]] | None = None,
        globals: dict[str, float] | None = None,
        histograms: dict[str, dict[str, list[float]]] | None = None,
        table: Table | None = None,
    ) -> None:
        self.step = step
        self.layers = layers
        self.globals = {} if globals is None else globals
        self.histograms = {} if histograms is None else histograms
        self._values = values if values is not None or table is not None else {}
        self._table = table
        self._seen: tuple | None = None  # the shape of ``values`` the table was made from
        # what readers derive from the frame once (initwatch.blocks.aggregate); not part of it
        self.cache: dict[Any, Any] = {}  # what readers derive from this frame (by key)

    def __repr__(self) -> str:
        return f"Frame(step={self.step}, layers={len(self.layers)}, globals={self.globals!r})"

    @property
    def values(self) -> dict[str, dict[str, float]]:
        """``values[stat][layer] -> float`` of every measured value."""
        if self._values is None:
            assert self._table is not None  # a frame holds its values one way or the other
            self._values = self._table.to_values()
        return self._values

    @property
    def table(self) -> Table:
        """The per-layer values as arrays (made once from ``values`` for a frame built from
        dictionaries, and again if entries were added to them)."""
        if self._values is not None and self._seen is not None or self._table is None:
            values = self.values
            shape = tuple((s, len(t)) for s, t in values.items())
            if self._table is None or shape != self._seen:
                self._table = Table.from_values(values, [i.name for i in self.layers])
                self._seen = shape
                self.cache.clear()
        return self._table

    def index(self) -> LayerIndex:
        """Arrays over ``layers`` (kinds, columns), shared by frames of one Watch."""
        table = self.table
        found = self.cache.get("index")
        if found is None or found.names is not table.names:
            found = self.cache["index"] = LayerIndex(self.layers, table)
        return found

    def get(self, stat: str, layer: str, default: float = math.nan) -> float:
        """The value of ``stat`` for ``layer``, or ``default`` when it was not measured."""
        return self.table.get(stat, layer, default)

    def stat(self, stat: str) -> dict[str, float]:
        """``{layer: value}`` of one statistic (the layers that have it, in column order).

        Example::

            >>> Frame(0, [], {"act_rms": {"b0": 1.0}}).stat("act_rms")
            {'b0': 1.0}
        """
        return self.table.stat(stat)

    def column(self, stat: str) -> np.ndarray:
        """``stat`` for every layer in ``layers`` order, as an array (NaN where not measured).

        Example::

            >>> ls = [LayerInfo("b0", "block", 0, "b0"), LayerInfo("b1", "block", 1, "b1")]
            >>> Frame(0, ls, {"act_rms": {"b1": 2.0}}).column("act_rms").tolist()
            [nan, 2.0]
        """
        cols = self.index().cols
        row = self.table.row(stat)
        if row is None:
            return np.full(len(cols), math.nan)
        vals, given = row
        return np.where(given[cols], vals[cols], math.nan)

    def series(
        self, stat: str, kind: str | tuple[str, ...] | None = None
    ) -> list[tuple[LayerInfo, float]]:
        """``(layer, value)`` pairs for ``stat`` in depth order, optionally of one layer kind
        (or of any of a tuple of kinds).

        Example::

            >>> ls = [LayerInfo("b0", "block", 0, "b0"), LayerInfo("r", "act", 0, "r")]
            >>> f = Frame(0, ls, {"act_rms": {"b0": 1.0, "r": 2.0}})
            >>> [(i.name, v) for i, v in f.series("act_rms", kind=("act", "ffn"))]
            [('r', 2.0)]
        """
        row = self.table.row(stat)
        if row is None:
            return []
        vals, given = row
        ix = self.index()
        mask = given[ix.cols]
        if kind is not None:
            mask = mask & ix.of_kind(kind)
        where = np.flatnonzero(mask).tolist()
        picked = vals[ix.cols[where]].tolist()
        layers = self.layers
        return [(layers[i], v) for i, v in zip(where, picked, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for reports and tests)."""
        return {
            "step": self.step,
            "layers": [vars(i).copy() for i in self.layers],
            "values": {k: dict(v) for k, v in self.values.items()},
            "globals": dict(self.globals),
        }


class LayerIndex:
    """Arrays over a frame's layers: each layer's column in the :class:`Table` and its kind.

    Args:
        layers: the frame's layers.
        table: its table.

    Example::

        >>> ls = [LayerInfo("b0", "block", 0, "b0"), LayerInfo("w", "param", 0, "w")]
        >>> ix = LayerIndex(ls, Table.empty(["act_rms"], ["b0", "w"]))
        >>> ix.cols.tolist(), ix.kinds.tolist()
        ([0, 1], ['block', 'param'])
    """

    def __init__(self, layers: Sequence[LayerInfo], table: Table) -> None:
        self.names = table.names
        self.cols = np.array([table.cols[i.name] for i in layers], dtype=np.int64)
        self.kinds = np.array([i.kind for i in layers], dtype=object)
        self.is_param = self.kinds == "param"
        self.cache: dict[Any, Any] = {}  # what readers derive from the layers (blocks.py)

    def of_kind(self, kind: str | tuple[str, ...]) -> np.ndarray:
        """Which layers are of ``kind`` (or of any of a tuple of kinds), as a bool array."""
        found = self.cache.get(("kind", kind))
        if found is None:
            kinds = (kind,) if isinstance(kind, str) else tuple(kind)
            found = self.cache[("kind", kind)] = np.isin(self.kinds, kinds)
        return found


# ---- building a frame from the host copy of the statistics buffer --------------------------


def _offsets(groups: Sequence[Any], fields: Sequence[str]) -> dict[str, np.ndarray]:
    return {f: np.array([g.offset(f) for g in groups], dtype=np.int64) for f in fields}


class FrameBuilder:
    """Turns the one host copy of the statistics buffer into a :class:`Frame`.

    Every statistic is derived by its catalogue formula (:mod:`initwatch.catalogue`) over all
    the rows of its source at once: the builder gathers each reduced field of every monitored
    module (every parameter tensor, every attention probe) from the host copy with one index
    array, computed once, and applies the formulas to those vectors.

    Args:
        probes: the activation probes (``.group``, ``.grad_group``, ``.zeros``, ``.band``,
            ``.counted``, ``.target.info``), in forward order.
        attention: the attention probes (``.name``, ``.group``).
        params: the parameter probe (``.targets``, ``.group``, ``.numel``, ``.sampled``).
        param_targets: every parameter target (frozen ones too), in model order.
        loss: the loss group.

    Example::

        >>> import torch.nn as nn
        >>> from initwatch.probes import ParamProbe, ProbeSet
        >>> from initwatch.selection import select_layers, select_parameters
        >>> from initwatch.stats import LOSS_FIELDS, StatBuffer
        >>> model, buf = nn.Sequential(nn.Linear(2, 2), nn.ReLU()), StatBuffer()
        >>> probes, targets = ProbeSet(select_layers(model), buf), select_parameters(model)
        >>> params, loss = ParamProbe(targets, buf), buf.add("loss", LOSS_FIELDS)
        >>> buf.allocate()
        >>> builder = FrameBuilder(probes.probes, [], params, targets, loss)
        >>> frame = builder.build(buf.read(), step=0)
        >>> [i.name for i in frame.layers], frame.values  # no forward, no gradient yet
        (['0', '1', '0.weight', '0.bias'], {'weight_norm': {'0.weight': 0.0, '0.bias': 0.0}})
    """

    def __init__(
        self,
        probes: Sequence[Any],
        attention: Sequence[Any],
        params: Any,
        param_targets: Sequence[Any],
        loss: Any,
    ) -> None:
        self.probes = list(probes)
        self.attention = list(attention)
        self.params = params
        self.param_targets = list(param_targets)
        self.loss = loss
        self._ready = False

    def _prepare(self) -> None:
        """Index arrays into the host copy (the buffer's offsets are fixed at allocate)."""
        from initwatch.attention import ATTENTION_FIELDS
        from initwatch.stats import ACTIVATION_FIELDS, GRAD_SIGNAL_FIELDS, PARAM_FIELDS

        probes = self.probes
        self._act_names = [p.target.info.name for p in probes]
        self._act = _offsets([p.group for p in probes], [f.name for f in ACTIVATION_FIELDS])
        self._zeros = np.array([bool(p.zeros) for p in probes], dtype=bool)
        self._bounded = np.array([p.band is not None for p in probes], dtype=bool)
        grad = [p for p in probes if p.grad_group is not None]
        self._grad_names = [p.target.info.name for p in grad]
        self._grad = _offsets([p.grad_group for p in grad], [f.name for f in GRAD_SIGNAL_FIELDS])
        self._att_names = [a.name for a in self.attention]
        self._att = _offsets([a.group for a in self.attention], [f.name for f in ATTENTION_FIELDS])
        p = self.params
        rows = np.arange(p.group.size, dtype=np.int64)
        self._param = {f.name: p.group.offset(f.name) + rows for f in PARAM_FIELDS}
        self._numel = np.array(p.numel, dtype=np.float64)
        self._sampled = np.array(p.sampled, dtype=np.float64)
        measured = {id(t): i for i, t in enumerate(p.targets)}
        self._param_rows = [measured.get(id(t)) for t in self.param_targets]
        self._measured_names = [t.info.name for t in p.targets]
        self._hist = [
            (q.target.info.name, q.hist_group, q.grad_hist_group)
            for q in probes
            if getattr(q, "hist_group", None) is not None
        ]
        self._stats = catalogue.names()  # the table's rows: every per-layer statistic
        base = [*self._act_names, *(t.info.name for t in self.param_targets)]
        self._base = list(dict.fromkeys([*base, *self._att_names]))
        col = {n: i for i, n in enumerate(self._base)}
        self._act_cols = np.array([col[n] for n in self._act_names], dtype=np.int64)
        self._grad_cols = np.array([col[n] for n in self._grad_names], dtype=np.int64)
        self._att_cols = np.array([col[n] for n in self._att_names], dtype=np.int64)
        self._param_cols = np.array([col[n] for n in self._measured_names], dtype=np.int64)
        self._shape: tuple = ()  # the LoRA names of the last frame: its columns and index
        self._names: list[str] = []
        self._index: LayerIndex | None = None
        self._layers: list[LayerInfo] = []
        self._layers_key: tuple | None = None
        self._ready = True

    def build(
        self,
        host: Any,
        step: int,
        skipped: bool = False,
        grads_read: bool = True,
        lora: dict[str, dict[str, float]] | None = None,
        lr: float | None = None,
        preclip: Any = None,
    ) -> Frame:
        """The frame of one logging step.

        Args:
            host: the host copy (:class:`~initwatch.stats.HostValues`).
            step: the training step.
            skipped: an AMP scaler skipped the optimizer step (no update ratio).
            grads_read: gradients were read this step (else no parameter statistics).
            lora: host-measured LoRA statistics, ``{adapted weight: {stat: value}}``.
            lr: the learning rate (``globals["lr"]``).
            preclip: the global gradient norm before clipping, when the framework clipped:
                ``grad_norm_global`` and the per-tensor ``grad_norm`` / ``grad_weight_ratio``
                are scaled back to it (``grad_norm_clipped`` keeps the clipped norm).
        """
        if not self._ready:
            self._prepare()
        with np.errstate(**catalogue.QUIET):
            return self._build(host, step, skipped, grads_read, lora or {}, lr, preclip)

    def _build(
        self,
        host: Any,
        step: int,
        skipped: bool,
        grads_read: bool,
        lora: dict[str, dict[str, float]],
        lr: float | None,
        preclip: Any,
    ) -> Frame:
        lora_names = tuple(f"{name}.lora" for name in lora)
        if lora_names != self._shape or not self._names:
            self._names = [*self._base, *(n for n in lora_names if n not in self._base)]
            self._shape, self._index = lora_names, None
        table = Table.empty(self._stats, self._names, unique=True)
        flat = np.asarray(host.values, dtype=np.float64)

        def put(cols: np.ndarray, derived: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
            for stat, vec, given in derived:
                table.put(stat, cols, vec, given)

        if self.probes:
            act = {f: flat[idx] for f, idx in self._act.items()}
            counted = np.array([bool(p.counted) for p in self.probes], dtype=bool)
            flags = {"counted": counted, "zeros_counted": self._zeros, "bounded": self._bounded}
            put(self._act_cols, catalogue.derive("activation", act, flags))
        if self._grad_names:
            sig = {f: flat[idx] for f, idx in self._grad.items()}
            put(self._grad_cols, catalogue.derive("output_grad", sig))
        if self._att_names:
            att = {f: flat[idx] for f, idx in self._att.items()}
            put(self._att_cols, catalogue.derive("attention", att))
        glob: dict[str, float] = {"skipped_step": 1.0 if skipped else 0.0}
        has = np.zeros(len(self._measured_names), dtype=bool)
        if grads_read and self._measured_names:
            par = {f: flat[idx] for f, idx in self._param.items()}
            has = par["grad_present"] > 0  # on some rank (FSDP1: not on every rank)
            flags = {
                "has_grad": has,
                "updated": has & (not skipped) & (self._sampled > 0),
                "numel": self._numel,
                "sampled": self._sampled,
            }
            put(self._param_cols, catalogue.derive("param", par, flags))
            if has.any():
                grad_sq = sum(par["grad_sumsq"][has].tolist())
                glob["grad_norm_global"] = math.sqrt(grad_sq) if grad_sq >= 0 else math.nan
        key = (grads_read, has.tobytes())
        if key != self._layers_key:  # which tensors had no gradient changed: rebuild the list
            self._layers = [p.target.info for p in self.probes]
            has_list = has.tolist()
            for t, i in zip(self.param_targets, self._param_rows, strict=True):
                info = t.info
                if i is not None and grads_read and not has_list[i]:
                    info = replace(info, zero_by_construction=True)  # no gradient: rules skip it
                self._layers.append(info)
            self._layers_key = key
        layers = list(self._layers)
        for name, stats in lora.items():  # judged in place of lora_A / lora_B
            info = LayerInfo(f"{name}.lora", "param", len(layers), f"{name}.lora", role="lora")
            layers.append(info)
            c = np.array([table.cols[info.name]])
            for stat, value in stats.items():
                table.put(stat, c, np.array([value]), np.array([True]))
        _unclip(table, glob, preclip)
        if lr is not None:
            glob["lr"] = float(lr)
        loss = {f: flat[[off]] for f, off in self.loss.offsets().items()}
        for stat, vec, given in catalogue.derive("run", loss):
            if given[0]:
                glob[stat] = float(vec[0])
        hists: dict[str, dict[str, list[float]]] = {}
        for name, *groups in self._hist:  # counted on histogram steps only
            for stat, g in zip(("act_hist", "out_grad_hist"), groups, strict=True):
                start = g.offset("count")
                c = flat[start : start + g.size]
                if c.any():
                    hists.setdefault(stat, {})[name] = c.tolist()
        frame = Frame(step=step, layers=layers, globals=glob, histograms=hists, table=table)
        if self._index is None:
            self._index = LayerIndex(layers, table)
        frame.cache["index"] = self._index  # the same columns and kinds every frame
        return frame


SAME_NORM = 1e-5  # relative difference below which the pre-clip and measured norms are one norm


def _unclip(table: Table, glob: dict[str, float], pre: Any) -> None:
    """Gradient norms as they were before clipping (the framework passed the pre-clip norm)."""
    clipped = glob.get("grad_norm_global")
    if pre is None or clipped is None:
        return
    pre = float(pre)
    if not math.isfinite(pre) or not math.isfinite(clipped):
        return
    if abs(pre - clipped) <= SAME_NORM * max(pre, clipped):
        clipped = pre  # not clipped: one norm computed twice, differing by rounding only
    glob["grad_norm_global"], glob["grad_norm_clipped"] = pre, clipped
    if clipped > 0 and pre > clipped:
        scale = pre / clipped
        for stat in ("grad_norm", "grad_weight_ratio"):
            r = table.rows[stat]
            table.data[r] = np.where(table.given[r], table.data[r] * scale, table.data[r])
