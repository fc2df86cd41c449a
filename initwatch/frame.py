"""A frame: the statistics of one logging step, as host data (step x layer x statistic)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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


@dataclass
class Frame:
    """Statistics of one logging step.

    Args:
        step: the training step.
        layers: every activation source and parameter that has statistics, in depth order.
        values: ``values[stat][layer_name] -> float`` (NaN where not measured).
        globals: ``globals[stat] -> float`` for run-wide values (``grad_norm_global``, ``lr``...).
        histograms: ``histograms[stat][layer] -> counts`` on histogram steps: ``"act_hist"``
            (block outputs) and ``"out_grad_hist"`` (dL/d(block output)), one count per bin
            of :mod:`initwatch.histograms`.

    Example::

        >>> f = Frame(step=5, layers=[], values={"act_rms": {"encoder.0": 1.0}}, globals={})
        >>> f.get("act_rms", "encoder.0")
        1.0
    """

    step: int
    layers: list[LayerInfo]
    values: dict[str, dict[str, float]]
    globals: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # what readers derive from the frame once (initwatch.blocks.aggregate); not part of it
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def get(self, stat: str, layer: str, default: float = math.nan) -> float:
        """The value of ``stat`` for ``layer``, or ``default`` when it was not measured."""
        return self.values.get(stat, {}).get(layer, default)

    def series(self, stat: str, kind: str | None = None) -> list[tuple[LayerInfo, float]]:
        """``(layer, value)`` pairs for ``stat`` in depth order, optionally of one layer kind."""
        table = self.values.get(stat, {})
        return [
            (info, table[info.name])
            for info in self.layers
            if info.name in table and (kind is None or info.kind == kind)
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for reports and tests)."""
        return {
            "step": self.step,
            "layers": [vars(i).copy() for i in self.layers],
            "values": {k: dict(v) for k, v in self.values.items()},
            "globals": dict(self.globals),
        }


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
        flat = np.asarray(host.values, dtype=np.float64)
        values: dict[str, dict[str, float]] = {}

        def put(names: Sequence[str], derived: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
            for stat, vec, given in derived:
                if not given.any():
                    continue
                table = values.setdefault(stat, {})
                for name, value, ok in zip(names, vec.tolist(), given.tolist(), strict=True):
                    if ok:
                        table[name] = value

        if self.probes:
            act = {f: flat[idx] for f, idx in self._act.items()}
            counted = np.array([bool(p.counted) for p in self.probes], dtype=bool)
            flags = {"counted": counted, "zeros_counted": self._zeros, "bounded": self._bounded}
            put(self._act_names, catalogue.derive("activation", act, flags))
        if self._grad_names:
            sig = {f: flat[idx] for f, idx in self._grad.items()}
            put(self._grad_names, catalogue.derive("output_grad", sig))
        if self._att_names:
            att = {f: flat[idx] for f, idx in self._att.items()}
            put(self._att_names, catalogue.derive("attention", att))
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
            put(self._measured_names, catalogue.derive("param", par, flags))
            if has.any():
                grad_sq = sum(par["grad_sumsq"][has].tolist())
                glob["grad_norm_global"] = math.sqrt(grad_sq) if grad_sq >= 0 else math.nan
        layers: list[LayerInfo] = [p.target.info for p in self.probes]
        has_list = has.tolist()
        for t, i in zip(self.param_targets, self._param_rows, strict=True):
            info = t.info
            if i is not None and grads_read and not has_list[i]:
                info = replace(info, zero_by_construction=True)  # no gradient: rules skip it
            layers.append(info)
        for name, stats in (lora or {}).items():  # judged in place of lora_A / lora_B
            info = LayerInfo(f"{name}.lora", "param", len(layers), f"{name}.lora", role="lora")
            layers.append(info)
            for stat, value in stats.items():
                values.setdefault(stat, {})[info.name] = value
        _unclip(values, glob, preclip)
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
        return Frame(step=step, layers=layers, values=values, globals=glob, histograms=hists)


def _unclip(values: dict[str, dict[str, float]], glob: dict[str, float], pre: Any) -> None:
    """Gradient norms as they were before clipping (the framework passed the pre-clip norm)."""
    clipped = glob.get("grad_norm_global")
    if pre is None or clipped is None:
        return
    pre = float(pre)
    if not math.isfinite(pre) or not math.isfinite(clipped):
        return
    glob["grad_norm_global"], glob["grad_norm_clipped"] = pre, clipped
    if clipped > 0 and pre > clipped:
        scale = pre / clipped
        for stat in ("grad_norm", "grad_weight_ratio"):
            values[stat] = {k: v * scale for k, v in values.get(stat, {}).items()}
