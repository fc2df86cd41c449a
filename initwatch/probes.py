"""Probes: hooks and gradient reads that reduce tensors on the device into the stats buffer.

A :class:`Gate` that every hook reads turns measuring on for logging steps only. For an eager
model the forward hooks are attached for logging steps only (:meth:`ProbeSet.attach` /
:meth:`ProbeSet.idle`), so other steps pay nothing; once a hook has run under
``torch.compile`` they stay attached (detaching would recompile) and return at their first line
when the gate is off. A hook never calls ``.item()`` and keeps no reference to the tensor it
reduced; in eager mode it stages its few 0-d results in the buffer (:meth:`StatBuffer.stage`),
under ``torch.compile`` it folds them into the buffer in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from initwatch import zero
from initwatch.histograms import BINS, HISTOGRAM_FIELDS
from initwatch.histograms import counts as histogram_counts
from initwatch.selection import ParamTarget, Target, counts_zeros
from initwatch.sharding import (
    Layout,
    is_dtensor,
    layout,
    layouts,
    local_grad,
    local_param,
    local_tensor,
)
from initwatch.stats import (
    ACTIVATION_FIELDS,
    GRAD_SIGNAL_FIELDS,
    PARAM_FIELDS,
    Group,
    StatBuffer,
)

# Parameter tensors up to this many elements get an exact update ratio from a full snapshot
# (three torch._foreach calls for all of them together); larger ones are sampled. On one CPU
# thread the two cost the same near 16k elements (bench/overhead.py --param-crossover).
EXACT_UPDATE_NUMEL = 16384


def _compiling() -> bool:
    return torch.compiler.is_compiling()


class Gate:
    """The switch every hook reads: hooks stay attached, measuring is turned on by data.

    Under ``torch.compile`` each value of ``on`` gets its own graph (two in all), so toggling it
    causes no recompile after both have been seen.

    Example::

        >>> g = Gate(); g.on = True; g.on
        True
    """

    def __init__(self) -> None:
        self.on = False
        self.histograms = False  # count the histograms too (a histogram step; eager hooks)
        self.eager = False  # a hook ran eagerly
        self.compiled = False  # a hook ran inside a torch.compile graph: never detach


def first_tensor(output: object) -> torch.Tensor | None:
    """The tensor a module returned (element 0 of a tuple or list), or None.

    Example::

        >>> first_tensor((torch.ones(2), None)).shape
        torch.Size([2])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _norm32(x: torch.Tensor) -> torch.Tensor:
    """The L2 norm of ``x`` as a float32 0-d tensor, whatever ``x``'s dtype (float32 input skips
    ``dtype=``, whose path is slower on CPU).

    Example::

        >>> _norm32(torch.tensor([3.0, 4.0], dtype=torch.bfloat16))
        tensor(5.)
    """
    if x.dtype == torch.float32:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dtype=torch.float32)


def reduce_activation(
    x: torch.Tensor, band: tuple[float, float, bool] | None = None, zeros: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial sums of one activation tensor, in the order of :data:`ACTIVATION_FIELDS`.

    Returns ``(sums, maxs)``: ``sums`` = [element count, sum, sum of squares, exact zeros,
    saturated count, non-finite count] and ``maxs`` = [abs-max], all float32 on ``x``'s device.
    Sums are accumulated in float32 whatever ``x``'s dtype. A NaN or Inf element makes the sum,
    sum of squares and abs-max non-finite (the derived RMS, mean and std become NaN: data, not
    an error) and is counted; computing finite-only moments would cost two more passes over
    every tensor. ``band = (centre, half_width, inclusive)`` counts ``|x - centre| > half_width``;
    ``zeros=False`` skips the zero count (0). The reference reduction, and the one used inside
    ``torch.compile`` graphs (where the passes fuse); eager hooks use :func:`activation_partials`.

    Example::

        >>> sums, maxs = reduce_activation(torch.tensor([0.0, 3.0, -4.0, 1.0]))
        >>> sums.tolist(), maxs.tolist()
        ([4.0, 0.0, 26.0, 1.0, 0.0, 0.0], [4.0])
    """
    x = x.detach()
    numel = x.numel()
    total = x.sum(dtype=torch.float32)
    sumsq = _norm32(x).square()
    lo, hi = torch.aminmax(x)  # much faster than an inf-norm or abs().amax() on CPU
    absmax = torch.maximum(-lo, hi).to(torch.float32)
    n_zeros = numel - torch.count_nonzero(x).to(torch.float32) if zeros else torch.zeros_like(total)
    nonfinite = torch.count_nonzero(x - x).to(torch.float32)  # inf - inf and NaN give NaN
    if band is None:
        saturated = torch.zeros_like(total)
    else:
        centre, half, inclusive = band
        dev = (x - centre).abs()
        saturated = (dev >= half if inclusive else dev > half).sum(dtype=torch.float32)
    sums = torch.stack([torch.full_like(total, numel), total, sumsq, n_zeros, saturated, nonfinite])
    return sums, absmax.reshape(1)


def activation_partials(
    x: torch.Tensor,
    band: tuple[float, float, bool] | None = None,
    zeros: bool = False,
    nonfinite: bool = False,
) -> list[torch.Tensor]:
    """The lean eager reduction of one activation tensor: 0-d partials for the buffer.

    Three passes over ``x``: its float32 sum, its L2 norm and ``aminmax``, returned as
    ``[sum, norm, min, max]``; then the number of non-zeros when ``zeros`` (ReLU-family outputs),
    the saturated count when ``band`` is given, and the finite count when ``nonfinite`` (a
    layer whose sum was non-finite at an earlier logging step). The element count is known on
    the host. :meth:`ActivationProbe.plan` says where each value goes.

    Example::

        >>> [round(v.item(), 3) for v in activation_partials(torch.tensor([0.0, 3.0, -4.0]),
        ...                                                  zeros=True)]
        [-1.0, 5.0, -4.0, 3.0, 2.0]
    """
    total = x.sum() if x.dtype == torch.float32 else x.sum(dtype=torch.float32)
    norm = _norm32(x)
    lo, hi = torch.aminmax(x)
    out = [total, norm, lo, hi]
    if zeros:  # the non-zeros: sum |sign(x)| is ~10x faster than count_nonzero on CPU
        out.append(torch.sign(x).abs_().sum(dtype=torch.float32))
    if band is not None:
        centre, half, inclusive = band
        dev = (x - centre).abs_()
        out.append((dev >= half if inclusive else dev > half).sum())
    if nonfinite:
        out.append(torch.isfinite(x).sum())
    return out


def reduce_grad_signal(g: torch.Tensor) -> torch.Tensor:
    """[sum of squares, count] of a gradient tensor (:data:`GRAD_SIGNAL_FIELDS`).

    Example::

        >>> reduce_grad_signal(torch.tensor([3.0, 4.0])).tolist()
        [25.0, 2.0]
    """
    sumsq = _norm32(g.detach()).square()
    return torch.stack([sumsq, torch.full_like(sumsq, g.numel())])


class ActivationProbe:
    """The forward hook of one monitored module (and its output-gradient hook).

    On a logging step it reduces the module output into its buffer group; for targets with
    ``grad_signal`` it registers a tensor hook on that output which reduces ``dL/d(output)``
    during backward. A tensor hook registered inside the forward hook works under
    ``torch.compile`` (a full module backward hook does not), and it fires once per backward
    through the output, so micro-batches accumulate.

    Zeros are counted only on ReLU-family outputs (:func:`~initwatch.selection.counts_zeros`).
    Non-finite elements are counted only once ``count_nonfinite`` is set (the Watch sets it for
    a layer whose sum was non-finite: a NaN / Inf makes the sum non-finite, so the flag costs
    nothing); until then ``act_nonfinite`` says "present" (inf) or 0.

    Args:
        target: what to measure.
        buffer: the stats buffer (groups are declared here; allocate afterwards).
        gate: the switch read at each call.
        histograms: declare the histogram groups of a block output (counted on the logging
            steps the Watch sets ``gate.histograms``, eager hooks only).

    Example::

        >>> from initwatch.selection import select_layers
        >>> buf, gate = StatBuffer(), Gate()
        >>> probe = ActivationProbe(select_layers(nn.Sequential(nn.ReLU()))[0], buf, gate)
        >>> buf.allocate(); gate.on = True
        >>> _ = probe.target.module.register_forward_hook(probe)
        >>> _ = probe.target.module(torch.tensor([-1.0, 2.0]))
        >>> buf.read().row(probe.group)["zeros"]
        1.0
    """

    def __init__(
        self, target: Target, buffer: StatBuffer, gate: Gate, histograms: bool = False
    ) -> None:
        self.target = target
        self.buffer = buffer
        self.gate = gate
        self.band = target.band
        self.zeros = counts_zeros(target.module)
        self.count_nonfinite = False
        self.group = buffer.add(f"act:{target.info.name}", ACTIVATION_FIELDS)
        self.grad_group: Group | None = None
        if target.grad_signal:
            self.grad_group = buffer.add(f"grad:{target.info.name}", GRAD_SIGNAL_FIELDS)
        # histograms of the output and of dL/d(output), for blocks (modules of unreadable
        # models): BINS rows each (initwatch.histograms), counted when gate.histograms is set
        self.hist_group: Group | None = None
        self.grad_hist_group: Group | None = None
        if histograms and target.grad_signal:
            name = target.info.name
            self.hist_group = buffer.add(f"hist:{name}", HISTOGRAM_FIELDS, size=BINS)
            self.grad_hist_group = buffer.add(f"grad_hist:{name}", HISTOGRAM_FIELDS, size=BINS)
        self._hist_plans: dict[str, int] = {}
        self.error: str | None = None
        self._plans: dict[bool, tuple[int, tuple[int, ...]]] = {}
        self._grad_plan: int | None = None

    @property
    def counted(self) -> bool:
        """Whether ``nonfinite`` holds a count (else only the sum says whether any exist)."""
        return self.count_nonfinite or self.gate.compiled

    def plan(self) -> tuple[int, tuple[int, ...]]:
        """The staging plan of :func:`activation_partials`' values and the offsets of the
        host-known element counts (declared once per mode)."""
        mode = self.count_nonfinite
        found = self._plans.get(mode)
        if found is None:
            entries = [("sum", "sum", 0), ("sumsq", "sumsq", 0)]
            entries += [("absmax", "absmax", 0), ("absmax", "absmax", 0)]
            counts = ["count"]
            if self.zeros:  # zeros = n - non-zeros
                entries.append(("sub", "zeros", 0))
                counts.append("zeros")
            if self.band is not None:
                entries.append(("sum", "saturated", 0))
            if mode:  # non-finite = n - finite
                entries.append(("sub", "nonfinite", 0))
                counts.append("nonfinite")
            offsets = tuple(self.group.offset(c) for c in counts)
            found = self._plans[mode] = (self.buffer.plan(self.group, entries), offsets)
        return found

    def __call__(self, module: nn.Module, args: object, output: object) -> None:
        if not self.gate.on:
            return None
        try:
            x = first_tensor(output)
            if x is None or not x.is_floating_point() or x.numel() == 0:
                return None
            if _compiling():
                self.gate.compiled = True
                sums, maxs = reduce_activation(x, self.band, self.zeros)
                self.buffer.accumulate(self.group, sums, maxs)
            else:
                self.gate.eager = True
                self._stage(x)
            if self.grad_group is not None and x.requires_grad:
                x.register_hook(self._on_grad)
        except Exception as exc:  # a probe must never break the forward pass
            self.error = repr(exc)
        return None

    def _stage(self, x: torch.Tensor) -> None:
        grad = torch.is_grad_enabled()  # no_grad() as a context costs ~2 µs a hook
        torch._C._set_grad_enabled(False)
        try:
            values = activation_partials(x, self.band, self.zeros, self.count_nonfinite)
            plan, counts = self.plan()
            self.buffer.stage(plan, values)
            self.buffer.stage_counts(counts, x.numel())
            if self.gate.histograms and self.hist_group is not None:
                self._stage_histogram(self.hist_group, x)
        finally:
            torch._C._set_grad_enabled(grad)

    def _stage_histogram(self, group: Group, t: torch.Tensor) -> None:
        """Stage the bin counts of ``t`` (:func:`initwatch.histograms.counts`) into ``group``;
        a failure skips the histogram only."""
        try:
            plan = self._hist_plans.get(group.name)
            if plan is None:
                entries = [("sum", "count", i) for i in range(BINS)]
                plan = self._hist_plans[group.name] = self.buffer.plan(group, entries)
            self.buffer.stage(plan, histogram_counts(t))
        except Exception as exc:
            self.error = f"histogram: {exc!r}"

    def _on_grad(self, grad: torch.Tensor) -> None:
        group = self.grad_group
        if group is None:  # registered only on outputs whose group was declared
            return None
        try:
            if _compiling():
                self.buffer.accumulate(group, reduce_grad_signal(grad))
                return None
            with torch.no_grad():
                norm = _norm32(grad)
            if self._grad_plan is None:
                self._grad_plan = self.buffer.plan(group, [("sumsq", "sumsq", 0)])
            self.buffer.stage(self._grad_plan, (norm,))
            self.buffer.stage_host(group, "count", grad.numel())
            if self.gate.histograms and self.grad_hist_group is not None:
                self._stage_histogram(self.grad_hist_group, grad)
        except Exception as exc:
            self.error = repr(exc)
        return None


class ProbeSet:
    """All activation probes of a model.

    Hooks are attached here. Between logging steps :meth:`idle` detaches them once they have
    run eagerly (and never under ``torch.compile``, where hooks stay attached, gated), and
    :meth:`attach` puts them back for the next logging step; :meth:`remove` is final.

    Args:
        targets: from :func:`~initwatch.selection.select_layers`.
        buffer: the stats buffer.
        histograms: declare histogram groups for the blocks (see :class:`ActivationProbe`).

    Example::

        >>> from initwatch.selection import select_layers
        >>> mlp = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
        >>> buf = StatBuffer(); probes = ProbeSet(select_layers(mlp), buf); buf.allocate()
        >>> len(mlp[0]._forward_hooks), probes.remove(), len(mlp[0]._forward_hooks)
        (1, None, 0)
    """

    def __init__(
        self, targets: Sequence[Target], buffer: StatBuffer, histograms: bool = False
    ) -> None:
        self.gate = Gate()
        self.probes = [ActivationProbe(t, buffer, self.gate, histograms) for t in targets]
        self._handles: list = []
        self._removed = False
        self.attach()

    @property
    def attached(self) -> bool:
        """Whether the forward hooks are attached now."""
        return bool(self._handles)

    def attach(self) -> None:
        """Attach the forward hooks (no-op when attached or removed)."""
        if self._handles or self._removed:
            return
        self._handles = [p.target.module.register_forward_hook(p) for p in self.probes]

    def detach(self) -> None:
        """Remove the forward hooks until the next :meth:`attach`."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def idle(self) -> None:
        """Between logging steps: gate off, and hooks detached if they only ever ran eagerly."""
        self.gate.on = False
        if self.gate.eager and not self.gate.compiled:
            self.detach()

    def errors(self) -> dict[str, str]:
        """``{layer: error}`` of probes whose last call failed (and clears them)."""
        out = {p.target.info.name: p.error for p in self.probes if p.error}
        for p in self.probes:
            p.error = None
        return out

    def remove(self) -> None:
        """Remove every hook (idempotent, final)."""
        self.detach()
        self._removed = True
        self.gate.on = False


def foreach_norm(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """float32 L2 norms of ``tensors``: ``torch._foreach_norm`` with a per-tensor fallback.

    Example::

        >>> [n.item() for n in foreach_norm([torch.tensor([3.0, 4.0])])]
        [5.0]
    """
    if not tensors:
        return []
    tensors = list(tensors)
    try:
        if all(t.dtype == torch.float32 for t in tensors):  # the dtype= path is ~15 % slower
            return list(torch._foreach_norm(tensors, 2))
        return list(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    except Exception:  # private API; sparse tensors; mixed devices
        return [
            torch.linalg.vector_norm(
                t.coalesce().values() if t.is_sparse else t, dtype=torch.float32
            )
            for t in tensors
        ]


def _flags(params: list[torch.Tensor], only: Sequence[bool] | None) -> list[tuple]:
    """``(param, chosen)`` pairs (every parameter chosen when ``only`` is None)."""
    return list(zip(params, [True] * len(params) if only is None else only, strict=True))


def _long(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


class ParamProbe:
    """Gradient, weight and update statistics of the trainable parameter tensors.

    Call :meth:`read_grads` and :meth:`snapshot` after the gradients are final and before the
    optimizer step, and :meth:`measure_update` after it. Every tensor is handled in a few
    ``torch._foreach`` calls over all tensors at once (not a few ops per tensor): one
    ``_foreach_norm`` for every gradient and weight norm. Each rank measures the elements it
    owns (:mod:`initwatch.sharding`: its shard under FSDP, everything on rank 0 under DDP) and
    the one SUM reduction across ranks adds the parts.

    The update ratio ``||ΔW|| / ||W||`` is exact for tensors of at most ``exact_numel``
    elements (default :data:`EXACT_UPDATE_NUMEL`, and always when ``numel <= sample``): they
    are copied whole before the step (``_foreach_mul``), and after it
    ``_foreach_sub_`` + ``_foreach_norm`` give every ``||ΔW||``. Larger tensors are sampled,
    which costs less than copying them: a fixed random sample ``S`` of ``k = sample``
    coordinates per tensor (drawn once in global flat indices, from a seeded generator, so every
    rank draws the same) is read before and after the step, and
    ``||ΔW|| ≈ sqrt(n / k · Σ_{i∈S} ΔW_i²)`` for a tensor of ``n`` elements, divided by the
    exact pre-step ``||W||``. For update entries that behave like i.i.d. draws, the estimate of
    ``||ΔW||²`` has relative standard deviation ``sqrt(Var(Δ²) / k) / E[Δ²]``
    (= ``sqrt(2 / k)`` for Gaussian entries, less for Adam's near-constant-magnitude steps), so
    the ratio itself is off by about ``1 / sqrt(2k)``: 2.2 % at ``k = 1024``. Memory during a
    logging step: the exact tensors' copy plus ``k`` floats per sampled tensor.

    Args:
        targets: from :func:`~initwatch.selection.select_parameters`; frozen ones are skipped.
        buffer: the stats buffer.
        sample: coordinates sampled per large tensor for the update ratio (``k``).
        seed: seed of the sampling generator.
        exact_numel: tensors up to this size get an exact update ratio (0: sample every
            tensor larger than ``sample``).

    Example::

        >>> lin = nn.Linear(4, 4)
        >>> from initwatch.selection import select_parameters
        >>> buf = StatBuffer(); probe = ParamProbe(select_parameters(lin), buf); buf.allocate()
        >>> lin(torch.ones(1, 4)).sum().backward()
        >>> _ = probe.read_grads(); probe.snapshot()
        >>> with torch.no_grad():
        ...     _ = lin.bias.add_(1.0)
        >>> probe.measure_update()
        >>> round(buf.read().column(probe.group, "update_sumsq")[1], 4)
        4.0
    """

    def __init__(
        self,
        targets: Sequence[ParamTarget],
        buffer: StatBuffer,
        sample: int = 1024,
        seed: int = 0,
        exact_numel: int = EXACT_UPDATE_NUMEL,
    ) -> None:
        self.targets = [t for t in targets if t.info.trainable]
        self.params: list[torch.Tensor] = [t.param for t in self.targets]
        # DTensor parameters (FSDP2) are read through to_local(); others as they are
        self._dtensors = any(is_dtensor(p) for p in self.params)
        self._zero = False  # DeepSpeed ZeRO parameters (initwatch.zero), found at each _resolve
        self.buffer = buffer
        self.group = buffer.add("params", PARAM_FIELDS, size=len(self.targets))
        self.numel = [zero.full_numel(t.param) for t in self.targets]
        limit = max(int(sample), int(exact_numel))
        gen = torch.Generator().manual_seed(seed)
        # index[i] is None for exactly measured tensors, else the sorted sampled coordinates
        self.index = [
            None if n <= limit else self._draw(t.param, sample, gen)
            for t, n in zip(self.targets, self.numel, strict=True)
        ]
        self.sampled = [
            n if i is None else len(i) for n, i in zip(self.numel, self.index, strict=True)
        ]
        self.exact = [i for i, idx in enumerate(self.index) if idx is None]
        self.sparse = [i for i, idx in enumerate(self.index) if idx is not None]
        self.has_grad = [False] * len(self.targets)
        self._snap: list[torch.Tensor] | None = None
        self._snap_sampled: torch.Tensor | None = None
        self._layouts: list[Layout] | None = None
        self._layout_key: list[tuple[int, ...]] = []
        self._owned: list[bool] = []
        # sampled row -> its sampled coordinates in this rank's local part
        self._positions: dict[int, torch.Tensor] = {}
        self._on_buffer_device = False
        self._forget_plans()

    def _forget_plans(self) -> None:
        self._segments: torch.Tensor | None = None
        self._plans: dict[tuple, int] = {}
        self._update_plan: tuple[int, int] | None = None

    @staticmethod
    def _draw(p: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        n = zero.full_numel(p)
        if n <= 1 << 22:
            idx = torch.randperm(n, generator=gen)[:k]
        else:  # with replacement: O(k) memory; duplicates are rare and keep it unbiased
            idx = torch.randint(0, n, (k,), generator=gen)
        return idx.sort().values.to(p.device)

    def _resolve(self) -> list[Layout]:
        """This rank's part of every tensor (:mod:`initwatch.sharding`), re-read only when a
        tensor's local shape changed (e.g. an FSDP1 wrap after the Watch was created)."""
        params = self.params
        # ZeRO applies to every parameter of its optimizer (one check; an engine may be built
        # after the Watch); its partition ranges are fixed once the optimizer exists
        self._zero = bool(params) and zero.is_zero(params[0])
        if self._zero:
            key = [tuple(local_param(p).shape) for p in params]
        elif self._dtensors:
            key = [tuple(local_tensor(p).shape) for p in params]
        else:  # an FSDP1 wrap changes the shape of its views
            key = [p.shape for p in params]
        if self._layouts is None or key != self._layout_key:
            self._layouts = layouts(params)
            self._layout_key = key
            self._owned = [lay.owner for lay in self._layouts]
            self._positions = {
                row: i if lay.whole else _long(lay.local_positions(i)[1], i.device)
                for row, (lay, i) in enumerate(zip(self._layouts, self.index, strict=True))
                if i is not None
            }
            self._on_buffer_device = all(p.device == self.buffer.device for p in params)
            self._forget_plans()
        return self._layouts

    def _move(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._on_buffer_device:
            return values
        dev = self.buffer.device
        return [v if v.device == dev else v.to(dev) for v in values]

    def _local(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each tensor's local part (:func:`~initwatch.sharding.local_param`: a DTensor's
        ``to_local()``, a ZeRO partition); the tensors themselves when no parameter is a
        DTensor or a ZeRO parameter (a check per tensor costs ~1 µs)."""
        if self._zero:
            return [local_param(t) for t in tensors]
        return [local_tensor(t) for t in tensors] if self._dtensors else tensors

    @torch.no_grad()
    def read_grads(self, only: Sequence[bool] | None = None) -> list[bool]:
        """Gradient and weight norms into the buffer; returns which tensors had a gradient.

        ``only``: read just these tensors (one flag per target), the others add nothing; a
        step whose optimizers step one after another (manual optimization) reads each tensor
        once, at its own optimizer's step, and the reads add up to one step's statistics.

        Each rank adds the sums of squares over the elements it owns (:mod:`initwatch.sharding`);
        the one reduction across ranks sums them. ``grad_nonfinite`` is 1 for a tensor whose
        gradient holds a NaN or Inf, read from its norm at no extra cost (an exact element
        count would be one more pass over every gradient; a squared norm that overflows
        float32, |g| above ~1e19, also counts). ``grad_present`` is 1 when any rank holds a
        gradient of the tensor (FSDP1 leaves ``grad=None`` on ranks that hold none of it).
        """
        if not self.targets:
            return []
        self._resolve()
        params = self.params
        if self._zero:  # DeepSpeed keeps this rank's gradient outside p.grad
            grads = [local_grad(p) if c else None for p, c in _flags(params, only)]
        else:
            grads = [p.grad for p in params]
        if only is None:
            seen = [g is not None for g in grads]
            self.has_grad = seen
            chosen = None
        else:
            chosen = [bool(c) for c in only]
            seen = [g is not None and c for g, c in zip(grads, chosen, strict=True)]
            self.has_grad = [a or b for a, b in zip(self.has_grad, seen, strict=True)]
        owned = self._owned
        if self._dtensors:  # a gradient DTensor's placements may differ from its parameter's
            held = [g is not None and (not is_dtensor(g) or layout(g).owner) for g in grads]
        else:
            held = seen if chosen is None else [g is not None for g in grads]
        read = [
            (i, g)  # held implies g is not None; the test narrows the type
            for i, (g, h) in enumerate(zip(grads, held, strict=True))
            if h and g is not None and owned[i] and (chosen is None or chosen[i])
        ]
        g_rows = [i for i, _ in read]
        w_rows = [i for i, o in enumerate(owned) if o and (chosen is None or chosen[i])]
        self.buffer.stage_host_rows(
            self.group, "grad_present", [i for i, h in enumerate(seen) if h], 1.0
        )
        if not (g_rows or w_rows):  # this rank owns nothing (a non-zero DDP rank)
            return seen
        key = (tuple(g_rows), tuple(w_rows))
        plan = self._plans.get(key)
        if plan is None:
            # the norms of [gradients, weights] squared into the sums, then the gradient norms
            # again (a slice, no op on the device) for the non-finite flags
            entries = [("sumsq", "grad_sumsq", i) for i in g_rows]
            entries += [("sumsq", "weight_sumsq", i) for i in w_rows]
            entries += [("flag", "grad_nonfinite", i) for i in g_rows]
            plan = self._plans[key] = self.buffer.plan(self.group, entries)
        tensors = self._local([g for _, g in read] + [params[i] for i in w_rows])
        values = torch.stack(self._move(foreach_norm(tensors)))
        self.buffer.stage(plan, torch.cat([values, values[: len(g_rows)]]))
        return seen

    def _exact_rows(self) -> list[int]:
        return [i for i in self.exact if self._owned[i]]

    def _sparse_rows(self) -> list[int]:
        return [i for i in self.sparse if self._owned[i]]

    def _sampled_values(self, params: list[torch.Tensor], rows: list[int]) -> torch.Tensor:
        """float32 values at the sampled coordinates of ``rows`` (sampled rows this rank owns)."""
        local = self._local([params[i] for i in rows])
        parts = [torch.take(t, self._positions[i]) for t, i in zip(local, rows, strict=True)]
        values = torch.cat(self._move(parts))
        return values if values.dtype == torch.float32 else values.float()

    @torch.no_grad()
    def snapshot(self) -> None:
        """Copy the exactly measured tensors and read the sampled coordinates of the others
        (before the optimizer step); only the elements this rank owns."""
        self._resolve()
        params = self.params
        exact = self._local([params[i] for i in self._exact_rows()])
        self._snap = list(torch._foreach_mul(exact, 1.0)) if exact else []
        sparse = self._sparse_rows()
        self._snap_sampled = self._sampled_values(params, sparse) if sparse else None

    @torch.no_grad()
    def measure_update(self) -> None:
        """Sum of squared changes since :meth:`snapshot`: exact for the copied tensors
        (``_foreach_sub_`` + ``_foreach_norm``), over the sample for the others."""
        if self._snap is None or not self.targets:
            return
        params = self.params
        exact, sparse = self._exact_rows(), self._sparse_rows()
        if self._update_plan is None:  # exact: the norms of the changes; sampled: their sums
            self._update_plan = (
                self.buffer.plan(self.group, [("sumsq", "update_sumsq", i) for i in exact]),
                self.buffer.plan(self.group, [("sum", "update_sumsq", i) for i in sparse]),
            )
        if exact:
            torch._foreach_sub_(self._snap, self._local([params[i] for i in exact]))
            self.buffer.stage(
                self._update_plan[0], torch.stack(self._move(foreach_norm(self._snap)))
            )
        if sparse:
            if self._segments is None:
                ids = [
                    torch.full((len(self._positions[i]),), j, dtype=torch.long)
                    for j, i in enumerate(sparse)
                ]
                self._segments = torch.cat(ids).to(self.buffer.device)
            before = self._snap_sampled
            assert before is not None  # snapshot() read the same (non-empty) sparse rows
            delta = (self._sampled_values(params, sparse) - before).square_()
            upd = torch.zeros(len(sparse), device=delta.device)
            self.buffer.stage(self._update_plan[1], upd.index_add_(0, self._segments, delta))
        self.discard_snapshot()

    def discard_snapshot(self) -> None:
        """Forget the snapshot (skipped step)."""
        self._snap = None
        self._snap_sampled = None
