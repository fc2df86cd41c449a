"""The statistics buffer: fields declared once with their reduction, kept on the device.

Every quantity a probe measures is a *field* that declares how partial values combine
(:class:`Reduce`), the way torchmetrics' ``add_state(..., dist_reduce_fx=...)`` does. All fields
live in one preallocated device tensor laid out as ``[SUM section | MAX section]``, so that

* accumulating over micro-batches is one generic in-place update (:meth:`StatBuffer.accumulate`),
* the DDP reduction is one collective (an ``all_gather`` of the buffer, then the sum of the SUM
  section and the max of the MAX section over ranks, on the device), independent of the number
  of layers (:meth:`StatBuffer.reduce_across_ranks`),
* reading the results is exactly one device-to-host copy (:func:`to_host`).

Hooks of an eager model *stage* their partial results (:meth:`StatBuffer.stage`: a few 0-d
tensors and a precomputed plan saying which field each one folds into, and how) instead of
updating the buffer one field at a time; :meth:`StatBuffer.flush` folds everything staged in a
logging step with a handful of ops (one stack, then one ``index_add_`` per SUM transform and one
``scatter_reduce_(amax)`` per MAX transform), so the device work per monitored output is its
reductions and nothing else.

Derived statistics (RMS, mean, std, fractions, norms, ratios) are computed on the host from the
reduced sums by the ``derive_*`` functions below.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, TypeVar

import torch

_K = TypeVar("_K")
_V = TypeVar("_V")


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

    def offsets(self) -> dict[str, int]:
        """``{field: offset of row 0}`` in declaration order (computed once, after allocate)."""
        found = self.__dict__.get("_offsets")
        if found is None or found[0] != (self.sum_start, self.max_start):
            found = (
                (self.sum_start, self.max_start),
                {n: self.offset(n) for n in self.field_names},
            )
            self.__dict__["_offsets"] = found
        return found[1]

    def offset(self, name: str) -> int:
        """Buffer offset of row 0 of field ``name``."""
        if name in self.sum_fields:
            return self.sum_start + self.sum_fields.index(name) * self.size
        if name in self.max_fields:
            return self.max_start + self.max_fields.index(name) * self.size
        raise KeyError(f"group {self.name!r} has no field {name!r}; fields: {self.field_names}")


# How a staged value folds into its field (see StatBuffer.stage): summed as is, subtracted (a
# count of non-zeros from the host-known element count), squared then summed (a norm into a
# sum of squares), maxed as is, |.| then maxed (aminmax ends into an abs-max), or 1.0 if
# non-finite else 0.0 then maxed (a non-finite flag from a norm).
STAGE_OPS = ("sum", "sub", "sumsq", "max", "absmax", "flag")
_STAGE_REDUCE = {"sum": Reduce.SUM, "sub": Reduce.SUM, "sumsq": Reduce.SUM, "max": Reduce.MAX}
_STAGE_REDUCE.update(absmax=Reduce.MAX, flag=Reduce.MAX)
_PLAN_CACHE = 8  # staged sequences whose index tensors are kept (one per distinct step shape)
# Per stage op of a flushed sequence of plans: (op, positions in the flushed values, offsets).
_OpIndices = list[tuple[str, torch.Tensor, torch.Tensor]]


def _bounded_get(cache: dict[_K, _V], key: _K, build: Callable[[], _V]) -> _V:
    """``cache[key]``, built on a miss; the oldest entry goes once :data:`_PLAN_CACHE` are kept."""
    found = cache.get(key)
    if found is None:
        if len(cache) >= _PLAN_CACHE:
            cache.pop(next(iter(cache)))
        found = cache[key] = build()
    return found


class Deferred(Protocol):
    """What :meth:`StatBuffer.defer` takes: ``flush()`` stages the values kept so far into the
    buffer, ``discard()`` drops them.

    Example::

        >>> class Later:
        ...     def __init__(self, buf, group):
        ...         self.buf, self.plan, self.kept = buf, buf.plan(group, [("sum", "sumsq", 0)]), []
        ...     def flush(self):
        ...         if self.kept:
        ...             self.buf.stage(self.plan, torch.stack(self.kept).sum().reshape(1))
        ...         self.kept = []
        ...     def discard(self):
        ...         self.kept = []
        >>> buf = StatBuffer(); g = buf.add("g", GRAD_SIGNAL_FIELDS); buf.allocate()
        >>> later = Later(buf, g); buf.defer(later); later.kept += [torch.tensor(2.0)] * 3
        >>> buf.read().row(g)["sumsq"]
        6.0
    """

    def flush(self) -> None: ...

    def discard(self) -> None: ...


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
        self._plans: list[tuple[tuple[str, int], ...]] = []
        self._plan_ids: dict[tuple[tuple[str, int], ...], int] = {}
        self._staged: list[torch.Tensor] = []  # 0-d values, in staging order
        self._staged_vectors: list[torch.Tensor] = []  # 1-d values, in staging order
        self._staged_plans: list[tuple[int, bool]] = []  # (plan, is a vector)
        self._staged_counts: dict[int, float] = {}  # offset -> host-known sums (element counts)
        self._staged_host_max: dict[int, float] = {}  # offset -> host-known maxima (flags)
        # Index tensors of host-known values, by (reduction, offsets, values), and of staged
        # plans, by the sequence of plans staged (see flush).
        self._host_index_cache: dict[
            tuple[str, tuple[int, ...], tuple[float, ...]], tuple[torch.Tensor, torch.Tensor]
        ] = {}
        self._plan_index_cache: dict[tuple[tuple[int, bool], ...], _OpIndices] = {}
        self._deferred: list[Deferred] = []

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

    def _allocated(self) -> torch.Tensor:
        """The device tensor; a clear error when :meth:`allocate` was not called yet."""
        if self.data is None:
            raise RuntimeError(
                "StatBuffer used before allocate(): declare every group with add(), then call "
                "allocate() once"
            )
        return self.data

    def accumulate(
        self, group: Group, sums: torch.Tensor | None = None, maxs: torch.Tensor | None = None
    ) -> None:
        """Fold partial values into the group: ``+=`` for SUM fields, ``max`` for MAX fields.

        ``sums`` holds the group's SUM fields in declaration order (field-major when size > 1),
        ``maxs`` its MAX fields. Works on the device, never syncs, and is the only update path,
        so micro-batches accumulate the same way ranks reduce.
        """
        data = self._allocated()
        if sums is not None:
            data[group.sum_start : group.sum_stop] += sums.to(data.device, data.dtype)
        if maxs is not None:
            view = data[group.max_start : group.max_stop]
            view.copy_(torch.maximum(view, maxs.to(data.device, data.dtype)))

    def plan(self, group: Group, entries: Sequence[tuple[str, str, int]]) -> int:
        """Declare how a sequence of staged values folds into ``group``; returns the plan id.

        ``entries`` are ``(op, field, row)`` triples, one per staged value, with ``op`` in
        :data:`STAGE_OPS`; the op must suit the field's declared reduction (``sum``/``sumsq`` a
        SUM field, ``max``/``absmax``/``flag`` a MAX field). Plans are deduplicated.

        Example::

            >>> buf = StatBuffer(); g = buf.add("g", GRAD_SIGNAL_FIELDS); buf.allocate()
            >>> buf.plan(g, [("sumsq", "sumsq", 0)]) == buf.plan(g, [("sumsq", "sumsq", 0)])
            True
        """
        return self.plan_across([(group, op, name, row) for op, name, row in entries])

    def plan_across(self, entries: Sequence[tuple[Group, str, str, int]]) -> int:
        """:meth:`plan` for values that fold into several groups: ``(group, op, field, row)``
        quadruples, one per staged value (one staged vector for many layers).

        Example::

            >>> buf = StatBuffer(); a = buf.add("a", GRAD_SIGNAL_FIELDS)
            >>> b = buf.add("b", GRAD_SIGNAL_FIELDS); buf.allocate()
            >>> buf.stage(buf.plan_across([(a, "sum", "sumsq", 0), (b, "sum", "sumsq", 0)]),
            ...           torch.tensor([1.0, 2.0]))
            >>> buf.read().row(b)["sumsq"]
            2.0
        """
        resolved = []
        for group, op, name, row in entries:
            kind = _STAGE_REDUCE.get(op)
            if kind is None:
                raise ValueError(f"stage op {op!r}: expected one of {STAGE_OPS}")
            declared = Reduce.SUM if name in group.sum_fields else Reduce.MAX
            if kind is not declared:
                raise ValueError(
                    f"stage op {op!r} reduces by {kind.value}, but field {name!r} of group "
                    f"{group.name!r} is declared {declared.value}"
                )
            resolved.append((op, group.offset(name) + int(row)))
        key = tuple(resolved)
        if key not in self._plan_ids:
            self._plan_ids[key] = len(self._plans)
            self._plans.append(key)
        return self._plan_ids[key]

    def defer(self, reducer: Deferred) -> None:
        """Register a reducer that stages its values at :meth:`flush` (work batched over a
        logging step, e.g. every attention probe's in one set of ops) and drops them at
        :meth:`reset` (see :class:`Deferred`)."""
        self._deferred.append(reducer)

    def stage(self, plan: int, values: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """Keep partial values for :meth:`flush`: a 1-d tensor or a sequence of 0-d tensors,
        one per entry of ``plan`` (from :meth:`plan`). No device op, no sync."""
        if isinstance(values, torch.Tensor) and values.dim() == 1:
            self._staged_vectors.append(values)
            self._staged_plans.append((plan, True))
        else:
            self._staged.extend(values)
            self._staged_plans.append((plan, False))

    def stage_host(self, group: Group, name: str, value: float, row: int = 0) -> None:
        """Fold a value known on the host (an element count, a presence flag) into a field at
        :meth:`flush`, by the field's declared reduction."""
        self.stage_host_rows(group, name, (row,), value)

    def stage_counts(self, offsets: Sequence[int], value: float) -> None:
        """Add a host-known value (an element count) to SUM fields at ``offsets``
        (:meth:`Group.offset`): the hooks' path, with the offsets resolved once.

        Example::

            >>> buf = StatBuffer(); g = buf.add("g", GRAD_SIGNAL_FIELDS); buf.allocate()
            >>> buf.stage_counts([g.offset("count")], 8)
            >>> buf.read().row(g)["count"]
            8.0
        """
        counts = self._staged_counts
        for off in offsets:
            counts[off] = counts.get(off, 0.0) + value

    def stage_host_rows(self, group: Group, name: str, rows: Sequence[int], value: float) -> None:
        """:meth:`stage_host` of one value into several rows of a field (one call, not one per
        row: a flag for every parameter tensor).

        Example::

            >>> buf = StatBuffer(); g = buf.add("p", PARAM_FIELDS, size=3); buf.allocate()
            >>> buf.stage_host_rows(g, "grad_present", [0, 2], 1.0)
            >>> buf.read().column(g, "grad_present")
            [1.0, 0.0, 1.0]
        """
        start = group.offset(name)
        offsets = [start + int(r) for r in rows]
        value = float(value)
        if name in group.sum_fields:
            self.stage_counts(offsets, value)
        else:
            maxima = self._staged_host_max
            for off in offsets:
                maxima[off] = max(maxima.get(off, -math.inf), value)

    def _host_tensors(
        self, offs: tuple[int, ...], vals: tuple[float, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        data = self._allocated()
        dev = data.device
        return torch.tensor(offs, device=dev), torch.tensor(vals, device=dev, dtype=data.dtype)

    def _indices(self, plans: tuple[tuple[int, bool], ...]) -> _OpIndices:
        """Per stage op: (op, positions in the flushed values, buffer offsets). The values are
        every staged scalar in order, then every staged vector in order."""
        by_op: dict[str, tuple[list[int], list[int]]] = {}
        n_scalar = sum(len(self._plans[p]) for p, vec in plans if not vec)
        pos = [0, n_scalar]
        for pid, vec in plans:
            for op, off in self._plans[pid]:
                where, dest = by_op.setdefault(op, ([], []))
                where.append(pos[vec])
                dest.append(off)
                pos[vec] += 1
        dev = self.device
        return [
            (op, torch.tensor(w, device=dev), torch.tensor(d, device=dev))
            for op, (w, d) in by_op.items()
        ]

    @torch.no_grad()
    def flush(self) -> None:
        """Fold everything staged into the buffer, by each field's declared reduction.

        One ``stack`` of the staged scalars (and one ``cat`` with staged vectors), then per
        stage op present one ``index_select``, its transform and one ``index_add_`` (SUM) or
        ``scatter_reduce_(amax)`` (MAX, NaN-propagating like :func:`torch.maximum`); host-known
        values (counts, flags) are one more op each. Index tensors are cached by the sequence of plans
        staged (the same every logging step). Called by :meth:`reduce_across_ranks` and
        :meth:`read`; never syncs.
        """
        for reducer in self._deferred:
            reducer.flush()
        data = self._allocated()
        for kind, host in (("sum", self._staged_counts), ("max", self._staged_host_max)):
            if not host:
                continue
            offs, vals = tuple(host), tuple(host.values())
            idx, src = _bounded_get(
                self._host_index_cache,
                (kind, offs, vals),
                functools.partial(self._host_tensors, offs, vals),
            )
            if kind == "sum":
                data.index_add_(0, idx, src)
            else:
                data.scatter_reduce_(0, idx, src, "amax")
        self._staged_counts, self._staged_host_max = {}, {}
        if not self._staged_plans:
            return
        scalars, vectors = self._staged, self._staged_vectors
        plans = tuple(self._staged_plans)
        self._staged, self._staged_vectors, self._staged_plans = [], [], []
        parts = ([torch.stack(scalars)] if scalars else []) + vectors
        values = parts[0] if len(parts) == 1 else torch.cat(parts)
        if values.dtype != data.dtype or values.device != data.device:
            values = values.to(data.device, data.dtype)
        indices = _bounded_get(self._plan_index_cache, plans, lambda: self._indices(plans))
        for op, where, dest in indices:
            v = values.index_select(0, where)
            if op == "sumsq":
                v = v.square()
            elif op == "absmax":
                v = v.abs()
            elif op == "flag":
                v = torch.isfinite(v).logical_not().to(data.dtype)
            if op in ("sum", "sumsq", "sub"):
                data.index_add_(0, dest, v, alpha=-1 if op == "sub" else 1)
            else:
                data.scatter_reduce_(0, dest, v, "amax")

    def reduce_across_ranks(self) -> int:
        """Reduce the buffer across ranks with one collective.

        One ``all_gather`` brings every rank's buffer (a few floats per layer, so the world-size
        copy is small); each field is then combined by its declared reduction on the device:
        the SUM section summed over ranks, the MAX section maxed.

        Does nothing unless ``torch.distributed`` is initialized with more than one rank.
        Returns the number of collectives issued (0 or 1).
        """
        self.flush()
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return 0
        data = self._allocated()
        parts = [torch.empty_like(data) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, data)
        stacked = torch.stack(parts)
        data[: self.n_sum] = stacked[:, : self.n_sum].sum(0)
        data[self.n_sum :] = stacked[:, self.n_sum :].amax(0)
        return 1

    def read(self) -> HostValues:
        """Copy the buffer to the host in one transfer (:func:`to_host`), after :meth:`flush`."""
        self.flush()
        return HostValues(to_host(self._allocated()))

    def reset(self) -> None:
        """Write every field's default back, on the device, and drop anything staged."""
        for reducer in self._deferred:
            reducer.discard()
        self._staged, self._staged_vectors, self._staged_plans = [], [], []
        self._staged_counts, self._staged_host_max = {}, {}
        data, defaults = self._allocated(), self._defaults
        assert defaults is not None  # allocate() sets both together
        data.copy_(defaults)


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
        values = self.values
        return {n: values[off + index] for n, off in group.offsets().items()}


# ---- derived statistics (host side) -------------------------------------------------------
# The formulas live in the statistics catalogue (initwatch.catalogue), vectorized over every
# layer of a source; these are their one-row forms.


def derive_activation(
    v: dict[str, float], bounded: bool = False, zeros: bool = True, counted: bool = True
) -> dict[str, float]:
    """Activation statistics from reduced :data:`ACTIVATION_FIELDS`.

    Mean, RMS, std (population) and abs-max are over all elements, so they are NaN (or Inf)
    when a non-finite element was present. ``act_nonfinite`` is the number of those elements
    when they were ``counted``; otherwise it is ``inf`` when the sum says some are present
    ("present, not counted": a NaN or Inf element makes the sum non-finite) and 0 when it is
    finite. The zero fraction is only given when ``zeros`` were counted (ReLU-family outputs)
    and the saturation fraction only for ``bounded`` activations. Returns ``{}`` when nothing
    was measured.

    Example::

        >>> derive_activation({"count": 4, "sum": 0, "sumsq": 4, "zeros": 0, "saturated": 0,
        ...                    "nonfinite": 0, "absmax": 1})["act_rms"]
        1.0
        >>> derive_activation({"count": 4, "sum": math.nan, "sumsq": 4, "zeros": 0,
        ...                    "saturated": 0, "nonfinite": 0, "absmax": 1},
        ...                   counted=False)["act_nonfinite"]
        inf
    """
    from initwatch.catalogue import derive_one

    return derive_one("activation", v, bounded=bounded, zeros_counted=zeros, counted=counted)


def derive_grad_signal(v: dict[str, float]) -> dict[str, float]:
    """``out_grad_rms`` from reduced :data:`GRAD_SIGNAL_FIELDS` (``{}`` if no backward ran).

    Example::

        >>> derive_grad_signal({"sumsq": 8.0, "count": 2.0})
        {'out_grad_rms': 2.0}
    """
    from initwatch.catalogue import derive_one

    return derive_one("output_grad", v)


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
    from initwatch.catalogue import derive_one

    flags = dict(numel=numel, sampled=sampled, has_grad=has_grad)
    return derive_one("param", v, updated=updated and sampled > 0, **flags)


def derive_loss(v: dict[str, float]) -> dict[str, float]:
    """The mean loss over ranks (``{}`` when no loss was given).

    Example::

        >>> derive_loss({"sum": 3.0, "count": 2.0})
        {'loss': 1.5}
    """
    from initwatch.catalogue import derive_one

    return derive_one("run", v)
