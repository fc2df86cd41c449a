"""The statistics buffer: fields declared once with their reduction, kept on the device.

Every quantity a probe measures is a *field* that declares how partial values combine
(:class:`Reduce`), the way torchmetrics' ``add_state(..., dist_reduce_fx=...)`` does. All fields
live in one preallocated device tensor laid out as ``[SUM section | MAX section]``, so that

* accumulating over micro-batches is one generic in-place update (:meth:`StatBuffer.accumulate`),
* the DDP reduction is one collective (an ``all_gather`` of the buffer, then the sum of the SUM
  section and the max of the MAX section over ranks, on the device), independent of the number
  of layers (:meth:`StatBuffer.reduce_across_ranks`),
* reading the results is exactly one device-to-host copy (:func:`to_host`).

Derived statistics (RMS, mean, std, fractions, norms, ratios) are computed on the host from the
reduced sums by the ``derive_*`` functions below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import torch


class Reduce(str, Enum):
    """How partial values of a field combine, across micro-batches and across ranks.

    ``SUM`` for sums, sums of squares and counts (partial sums over the elements each rank
    owns). ``MAX`` for maxima and flags.

    Example::

        >>> Reduce("sum") is Reduce.SUM
        True
    """

    SUM = "sum"
    MAX = "max"


@dataclass(frozen=True)
class Field:
    """One declared quantity of a statistic group.

    Args:
        name: field name, unique in its group (``"sumsq"``, ``"absmax"``...).
        reduce: how partial values combine (:class:`Reduce`).
        default: the identity of the reduction, written at every reset (0 for sums and for
            maxima of non-negative values).

    Example::

        >>> Field("sumsq", Reduce.SUM).default
        0.0
    """

    name: str
    reduce: Reduce
    default: float = 0.0


# Activations of one module, summed over every element (and micro-batch, and rank).
ACTIVATION_FIELDS = (
    Field("count", Reduce.SUM),  # number of elements
    Field("sum", Reduce.SUM),  # sum (NaN / Inf when a non-finite element is present)
    Field("sumsq", Reduce.SUM),  # sum of squares
    Field("zeros", Reduce.SUM),  # number of exact zeros
    Field("saturated", Reduce.SUM),  # number inside the saturation band (bounded activations)
    Field("nonfinite", Reduce.SUM),  # number of NaN / Inf elements
    Field("absmax", Reduce.MAX),  # largest |x|
)
# dL/d(output) of one block: the backward signal of the residual stream.
GRAD_SIGNAL_FIELDS = (Field("sumsq", Reduce.SUM), Field("count", Reduce.SUM))
# Per parameter tensor (one group whose size is the number of parameters). Each rank adds the
# sums over the elements it owns (initwatch.sharding: under DDP rank 0 owns every replicated
# tensor, under FSDP each rank its shard), so the SUM over ranks is the full tensor's.
PARAM_FIELDS = (
    Field("grad_sumsq", Reduce.SUM),
    Field("weight_sumsq", Reduce.SUM),
    Field("update_sumsq", Reduce.SUM),  # sum of squared changes over the sampled coordinates
    Field("grad_nonfinite", Reduce.MAX),  # 1 when the gradient holds a NaN / Inf
    Field("grad_present", Reduce.MAX),  # 1 when some rank holds a gradient of the tensor
)
# The loss passed to end_step, averaged over ranks.
LOSS_FIELDS = (Field("sum", Reduce.SUM), Field("count", Reduce.SUM))


@dataclass(eq=False)
class Group:
    """A handle on the fields of one statistic source inside a :class:`StatBuffer`.

    A group holds ``size`` rows of its fields; rows of one field are contiguous (field-major),
    so a per-parameter field is one slice. Offsets are set by :meth:`StatBuffer.allocate`.

    Args:
        name: a label for error messages.
        fields: the declared fields.
        size: number of rows.

    Example::

        >>> buf = StatBuffer()
        >>> g = buf.add("layer0", GRAD_SIGNAL_FIELDS)
        >>> g.field_names
        ('sumsq', 'count')
    """

    name: str
    fields: tuple[Field, ...]
    size: int = 1
    sum_start: int = -1
    max_start: int = -1
    sum_fields: tuple[str, ...] = field(init=False)
    max_fields: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.sum_fields = tuple(f.name for f in self.fields if f.reduce is Reduce.SUM)
        self.max_fields = tuple(f.name for f in self.fields if f.reduce is Reduce.MAX)

    @property
    def field_names(self) -> tuple[str, ...]:
        """Names of the fields in declaration order."""
        return tuple(f.name for f in self.fields)

    @property
    def sum_stop(self) -> int:
        """End (exclusive) of the group's SUM block in the buffer."""
        return self.sum_start + len(self.sum_fields) * self.size

    @property
    def max_stop(self) -> int:
        """End (exclusive) of the group's MAX block in the buffer."""
        return self.max_start + len(self.max_fields) * self.size

    def offset(self, name: str) -> int:
        """Buffer offset of row 0 of field ``name``."""
        if name in self.sum_fields:
            return self.sum_start + self.sum_fields.index(name) * self.size
        if name in self.max_fields:
            return self.max_start + self.max_fields.index(name) * self.size
        raise KeyError(f"group {self.name!r} has no field {name!r}; fields: {self.field_names}")


def to_host(tensor: torch.Tensor) -> list[float]:
    """The one device-to-host transfer of a logging step.

    Every value initwatch reads from the device goes through this function, once per logging
    step (tests count its calls).

    Example::

        >>> to_host(torch.tensor([1.0, 2.0]))
        [1.0, 2.0]
    """
    return tensor.detach().to("cpu").tolist()


class StatBuffer:
    """A preallocated device buffer of declared fields: ``[SUM section | MAX section]``.

    Declare every group with :meth:`add`, call :meth:`allocate` once, then let probes update it
    in place. At a logging step call :meth:`reduce_across_ranks` and :meth:`read` (one host
    copy), then :meth:`reset`.

    Args:
        device: where the buffer lives (the model's device).

    Example::

        >>> buf = StatBuffer()
        >>> g = buf.add("block0", GRAD_SIGNAL_FIELDS)
        >>> buf.allocate()
        >>> buf.accumulate(g, torch.tensor([4.0, 2.0]))
        >>> buf.accumulate(g, torch.tensor([5.0, 3.0]))
        >>> buf.read().row(g)
        {'sumsq': 9.0, 'count': 5.0}
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.groups: list[Group] = []
        self.data: torch.Tensor | None = None
        self.n_sum = 0
        self._defaults: torch.Tensor | None = None

    def add(self, name: str, fields: Sequence[Field], size: int = 1) -> Group:
        """Declare a group of ``size`` rows of ``fields``; returns its handle."""
        if self.data is not None:
            raise RuntimeError("StatBuffer.add() after allocate(): declare every group first")
        group = Group(name, tuple(fields), size)
        self.groups.append(group)
        return group

    def allocate(self) -> None:
        """Assign offsets and allocate the device tensor (filled with each field's default)."""
        n_sum = 0
        for g in self.groups:
            g.sum_start = n_sum
            n_sum += len(g.sum_fields) * g.size
        n_max = n_sum
        for g in self.groups:
            g.max_start = n_max
            n_max += len(g.max_fields) * g.size
        defaults = torch.zeros(n_max, dtype=torch.float32)
        for g in self.groups:
            for f in g.fields:
                start = g.offset(f.name)
                defaults[start : start + g.size] = f.default
        self.n_sum = n_sum
        self._defaults = defaults.to(self.device)
        self.data = self._defaults.clone()

    def accumulate(
        self, group: Group, sums: torch.Tensor | None = None, maxs: torch.Tensor | None = None
    ) -> None:
        """Fold partial values into the group: ``+=`` for SUM fields, ``max`` for MAX fields.

        ``sums`` holds the group's SUM fields in declaration order (field-major when size > 1),
        ``maxs`` its MAX fields. Works on the device, never syncs, and is the only update path,
        so micro-batches accumulate the same way ranks reduce.
        """
        data = self.data
        if sums is not None:
            data[group.sum_start : group.sum_stop] += sums.to(data.device, data.dtype)
        if maxs is not None:
            view = data[group.max_start : group.max_stop]
            view.copy_(torch.maximum(view, maxs.to(data.device, data.dtype)))

    def reduce_across_ranks(self) -> int:
        """Reduce the buffer across ranks with one collective.

        One ``all_gather`` brings every rank's buffer (a few floats per layer, so the world-size
        copy is small); each field is then combined by its declared reduction on the device:
        the SUM section summed over ranks, the MAX section maxed.

        Does nothing unless ``torch.distributed`` is initialized with more than one rank.
        Returns the number of collectives issued (0 or 1).
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return 0
        parts = [torch.empty_like(self.data) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, self.data)
        stacked = torch.stack(parts)
        self.data[: self.n_sum] = stacked[:, : self.n_sum].sum(0)
        self.data[self.n_sum :] = stacked[:, self.n_sum :].amax(0)
        return 1

    def read(self) -> HostValues:
        """Copy the buffer to the host in one transfer (:func:`to_host`)."""
        return HostValues(to_host(self.data))

    def reset(self) -> None:
        """Write every field's default back, on the device."""
        self.data.copy_(self._defaults)


class HostValues:
    """The buffer's values on the host, readable by group.

    Example::

        >>> buf = StatBuffer(); g = buf.add("p", PARAM_FIELDS, size=2); buf.allocate()
        >>> buf.read().column(g, "grad_sumsq")
        [0.0, 0.0]
    """

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def column(self, group: Group, name: str) -> list[float]:
        """The ``size`` values of field ``name``."""
        start = group.offset(name)
        return self.values[start : start + group.size]

    def row(self, group: Group, index: int = 0) -> dict[str, float]:
        """``{field: value}`` of one row of the group."""
        return {n: self.values[group.offset(n) + index] for n in group.field_names}


# ---- derived statistics (host side) -------------------------------------------------------


def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        return math.nan


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0 else math.nan


def derive_activation(v: dict[str, float], bounded: bool = False) -> dict[str, float]:
    """Activation statistics from reduced :data:`ACTIVATION_FIELDS`.

    Mean, RMS, std (population) and abs-max are over all elements, so they are NaN (or Inf)
    when a non-finite element was present; ``act_nonfinite`` counts those. The zero and
    saturation fractions are over all elements; ``act_sat_frac`` is only given for bounded
    activations. Returns ``{}`` when nothing was measured.

    Example::

        >>> derive_activation({"count": 4, "sum": 0, "sumsq": 4, "zeros": 0, "saturated": 0,
        ...                    "nonfinite": 0, "absmax": 1})["act_rms"]
        1.0
    """
    n = v["count"]
    if n <= 0:
        return {}
    mean = v["sum"] / n
    meansq = v["sumsq"] / n
    var = meansq - mean * mean
    out = {
        "act_rms": _sqrt(meansq),
        "act_mean": mean,
        "act_std": math.sqrt(max(var, 0.0)) if math.isfinite(var) else math.nan,
        "act_absmax": v["absmax"],
        "act_zero_frac": v["zeros"] / n,
        "act_nonfinite": v["nonfinite"],
    }
    if bounded:
        out["act_sat_frac"] = v["saturated"] / n
    return out


def derive_grad_signal(v: dict[str, float]) -> dict[str, float]:
    """``out_grad_rms`` from reduced :data:`GRAD_SIGNAL_FIELDS` (``{}`` if no backward ran).

    Example::

        >>> derive_grad_signal({"sumsq": 8.0, "count": 2.0})
        {'out_grad_rms': 2.0}
    """
    if v["count"] <= 0:
        return {}
    return {"out_grad_rms": _sqrt(v["sumsq"] / v["count"])}


def derive_param(
    v: dict[str, float], numel: int, sampled: int, has_grad: bool = True, updated: bool = False
) -> dict[str, float]:
    """Parameter statistics from reduced :data:`PARAM_FIELDS` of one tensor.

    The update ratio ``||ΔW|| / ||W||`` uses the sampled estimate
    ``||ΔW|| ≈ sqrt(numel / sampled · Σ_sample Δ²)`` over the exact pre-step ``||W||``
    (exact when ``sampled == numel``).

    Example::

        >>> d = derive_param({"grad_sumsq": 1.0, "weight_sumsq": 100.0, "grad_nonfinite": 0.0,
        ...                   "update_sumsq": 0.01}, numel=4, sampled=4, updated=True)
        >>> d["grad_weight_ratio"], d["update_ratio"]
        (0.1, 0.01)
    """
    w = _sqrt(v["weight_sumsq"])
    out = {"weight_norm": w}
    if has_grad:
        g = _sqrt(v["grad_sumsq"])
        out.update(grad_norm=g, grad_weight_ratio=_div(g, w), grad_nonfinite=v["grad_nonfinite"])
    if updated and sampled > 0:
        out["update_ratio"] = _div(_sqrt(v["update_sumsq"] * numel / sampled), w)
    return out


def derive_loss(v: dict[str, float]) -> dict[str, float]:
    """The mean loss over ranks (``{}`` when no loss was given).

    Example::

        >>> derive_loss({"sum": 3.0, "count": 2.0})
        {'loss': 1.5}
    """
    return {"loss": v["sum"] / v["count"]} if v["count"] > 0 else {}
