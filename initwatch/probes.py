"""Probes: hooks and gradient reads that reduce tensors on the device into the stats buffer.

Hooks are attached once, before any ``torch.compile``, and stay attached; a :class:`Gate` that
every hook reads turns measuring on for logging steps only. On other steps a hook returns at its
first line. A hook never calls ``.item()``, never appends to a Python list, and keeps no
reference to the tensor it reduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from initwatch.selection import ParamTarget, Target
from initwatch.sharding import Layout, is_dtensor, layout, layouts, local_tensor
from initwatch.stats import (
    ACTIVATION_FIELDS,
    GRAD_SIGNAL_FIELDS,
    PARAM_FIELDS,
    Group,
    StatBuffer,
)


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


def reduce_activation(
    x: torch.Tensor, band: tuple[float, float, bool] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial sums of one activation tensor, in the order of :data:`ACTIVATION_FIELDS`.

    Returns ``(sums, maxs)``: ``sums`` = [element count, sum, sum of squares, exact zeros,
    saturated count, non-finite count] and ``maxs`` = [abs-max], all float32 on ``x``'s device.
    Sums are accumulated in float32 whatever ``x``'s dtype. A NaN or Inf element makes the sum,
    sum of squares and abs-max non-finite (the derived RMS, mean and std become NaN: data, not
    an error) and is counted; computing finite-only moments would cost two more passes over
    every tensor. ``band = (centre, half_width, inclusive)`` counts ``|x - centre| > half_width``.

    Example::

        >>> sums, maxs = reduce_activation(torch.tensor([0.0, 3.0, -4.0, 1.0]))
        >>> sums.tolist(), maxs.tolist()
        ([4.0, 0.0, 26.0, 1.0, 0.0, 0.0], [4.0])
    """
    x = x.detach()
    numel = x.numel()
    total = x.sum(dtype=torch.float32)
    if x.dtype == torch.float32:  # vector_norm's dtype= path is slower on CPU
        sumsq = torch.linalg.vector_norm(x).square()
    else:
        sumsq = torch.linalg.vector_norm(x, dtype=torch.float32).square()
    lo, hi = torch.aminmax(x)  # much faster than an inf-norm or abs().amax() on CPU
    absmax = torch.maximum(-lo, hi).to(torch.float32)
    zeros = numel - torch.count_nonzero(x).to(torch.float32)
    nonfinite = torch.count_nonzero(x - x).to(torch.float32)  # inf - inf and NaN give NaN
    if band is None:
        saturated = torch.zeros_like(total)
    else:
        centre, half, inclusive = band
        dev = (x - centre).abs()
        saturated = (dev >= half if inclusive else dev > half).sum(dtype=torch.float32)
    sums = torch.stack([torch.full_like(total, numel), total, sumsq, zeros, saturated, nonfinite])
    return sums, absmax.reshape(1)


def reduce_grad_signal(g: torch.Tensor) -> torch.Tensor:
    """[sum of squares, count] of a gradient tensor (:data:`GRAD_SIGNAL_FIELDS`).

    Example::

        >>> reduce_grad_signal(torch.tensor([3.0, 4.0])).tolist()
        [25.0, 2.0]
    """
    sumsq = torch.linalg.vector_norm(g.detach(), dtype=torch.float32).square()
    return torch.stack([sumsq, torch.full_like(sumsq, g.numel())])


class ActivationProbe:
    """The forward hook of one monitored module (and its output-gradient hook).

    On a logging step it reduces the module output into its buffer group; for targets with
    ``grad_signal`` it registers a tensor hook on that output which reduces ``dL/d(output)``
    during backward. A tensor hook registered inside the forward hook works under
    ``torch.compile`` (a full module backward hook does not), and it fires once per backward
    through the output, so micro-batches accumulate.

    Args:
        target: what to measure.
        buffer: the stats buffer (groups are declared here; allocate afterwards).
        gate: the switch read at each call.

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

    def __init__(self, target: Target, buffer: StatBuffer, gate: Gate) -> None:
        self.target = target
        self.buffer = buffer
        self.gate = gate
        self.band = target.band
        self.group = buffer.add(f"act:{target.info.name}", ACTIVATION_FIELDS)
        self.grad_group: Group | None = None
        if target.grad_signal:
            self.grad_group = buffer.add(f"grad:{target.info.name}", GRAD_SIGNAL_FIELDS)
        self.error: str | None = None

    def __call__(self, module: nn.Module, args: object, output: object) -> None:
        if not self.gate.on:
            return None
        try:
            x = first_tensor(output)
            if x is None or not x.is_floating_point() or x.numel() == 0:
                return None
            sums, maxs = reduce_activation(x, self.band)
            self.buffer.accumulate(self.group, sums, maxs)
            if self.grad_group is not None and x.requires_grad:
                x.register_hook(self._on_grad)
        except Exception as exc:  # a probe must never break the forward pass
            self.error = repr(exc)
        return None

    def _on_grad(self, grad: torch.Tensor) -> None:
        try:
            self.buffer.accumulate(self.grad_group, reduce_grad_signal(grad))
        except Exception as exc:
            self.error = repr(exc)
        return None


class ProbeSet:
    """All activation probes of a model, attached once and removed at :meth:`remove`.

    Args:
        targets: from :func:`~initwatch.selection.select_layers`.
        buffer: the stats buffer.

    Example::

        >>> from initwatch.selection import select_layers
        >>> mlp = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
        >>> buf = StatBuffer(); probes = ProbeSet(select_layers(mlp), buf); buf.allocate()
        >>> len(mlp[0]._forward_hooks), probes.remove(), len(mlp[0]._forward_hooks)
        (1, None, 0)
    """

    def __init__(self, targets: Sequence[Target], buffer: StatBuffer) -> None:
        self.gate = Gate()
        self.probes = [ActivationProbe(t, buffer, self.gate) for t in targets]
        self._handles = [p.target.module.register_forward_hook(p) for p in self.probes]

    def errors(self) -> dict[str, str]:
        """``{layer: error}`` of probes whose last call failed (and clears them)."""
        out = {p.target.info.name: p.error for p in self.probes if p.error}
        for p in self.probes:
            p.error = None
        return out

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.gate.on = False


def foreach_norm(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """float32 L2 norms of ``tensors``: ``torch._foreach_norm`` with a per-tensor fallback.

    Example::

        >>> [n.item() for n in foreach_norm([torch.tensor([3.0, 4.0])])]
        [5.0]
    """
    if not tensors:
        return []
    try:
        return list(torch._foreach_norm(list(tensors), 2, dtype=torch.float32))
    except Exception:  # private API; sparse tensors; mixed devices
        return [
            torch.linalg.vector_norm(
                t.coalesce().values() if t.is_sparse else t, dtype=torch.float32
            )
            for t in tensors
        ]


def _long(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def _flat(p: torch.Tensor) -> torch.Tensor:
    p = p.detach()
    return p.view(-1) if p.is_contiguous() else p.reshape(-1)


class ParamProbe:
    """Gradient, weight and update statistics of the trainable parameter tensors.

    Call :meth:`read_grads` and :meth:`snapshot` after the gradients are final and before the
    optimizer step, and :meth:`measure_update` after it.

    The update ratio ``||ΔW|| / ||W||`` is estimated without copying the parameters: a fixed
    random sample ``S`` of ``k = sample`` coordinates per tensor (drawn once, from a seeded
    generator, so every DDP rank draws the same) is snapshotted before the step, and
    ``||ΔW|| ≈ sqrt(n / k · Σ_{i∈S} ΔW_i²)`` for a tensor of ``n`` elements, divided by the
    exact pre-step ``||W||``. Tensors with ``n <= k`` are measured exactly. For update entries
    that behave like i.i.d. draws, the estimate of ``||ΔW||²`` has relative standard deviation
    ``sqrt(Var(Δ²) / k) / E[Δ²]`` (= ``sqrt(2 / k)`` for Gaussian entries, less for Adam's
    near-constant-magnitude steps), so the ratio itself is off by about ``1 / sqrt(2k)``:
    2.2 % at ``k = 1024``. Memory: ``k`` floats per tensor.

    Args:
        targets: from :func:`~initwatch.selection.select_parameters`; frozen ones are skipped.
        buffer: the stats buffer.
        sample: coordinates sampled per tensor for the update ratio (``k``).
        seed: seed of the sampling generator.

    Example::

        >>> lin = nn.Linear(4, 4)
        >>> from initwatch.selection import select_parameters
        >>> buf = StatBuffer(); probe = ParamProbe(select_parameters(lin), buf); buf.allocate()
        >>> lin(torch.ones(1, 4)).sum().backward()
        >>> probe.read_grads(); probe.snapshot()
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
    ) -> None:
        self.targets = [t for t in targets if t.info.trainable]
        self.buffer = buffer
        self.group = buffer.add("params", PARAM_FIELDS, size=len(self.targets))
        gen = torch.Generator().manual_seed(seed)
        self.index = [self._draw(t.param, sample, gen) for t in self.targets]
        self.sampled = [
            t.param.numel() if i is None else len(i)
            for t, i in zip(self.targets, self.index, strict=True)
        ]
        self.numel = [t.param.numel() for t in self.targets]
        self.has_grad = [False] * len(self.targets)
        self._snap: torch.Tensor | None = None
        self._segments: torch.Tensor | None = None
        self._layouts: list[Layout] | None = None
        self._layout_key: list[tuple[int, ...]] = []
        self._owner = torch.zeros(0, dtype=torch.bool)
        self._positions: list[torch.Tensor | None] = []

    @staticmethod
    def _draw(p: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor | None:
        n = p.numel()
        if n <= k:
            return None
        if n <= 1 << 22:
            idx = torch.randperm(n, generator=gen)[:k]
        else:  # with replacement: O(k) memory; duplicates are rare and keep it unbiased
            idx = torch.randint(0, n, (k,), generator=gen)
        return idx.sort().values.to(p.device)

    def _zero(self) -> torch.Tensor:
        return torch.zeros((), device=self.buffer.device)

    def _resolve(self) -> list[Layout]:
        """This rank's part of every tensor (:mod:`initwatch.sharding`), re-read only when a
        tensor's local shape changed (e.g. an FSDP1 wrap after the Watch was created)."""
        params = [t.param for t in self.targets]
        key = [tuple(local_tensor(p).shape) for p in params]
        if self._layouts is None or key != self._layout_key:
            self._layouts = layouts(params)
            self._layout_key = key
            dev = self.buffer.device
            self._owner = torch.tensor([lay.owner for lay in self._layouts], device=dev)
            self._positions = [
                i if i is None or lay.whole else _long(lay.local_positions(i)[1], i.device)
                for lay, i in zip(self._layouts, self.index, strict=True)
            ]
            self._segments = None
        return self._layouts

    @torch.no_grad()
    def read_grads(self) -> None:
        """Gradient and weight norms into the buffer.

        Each rank adds the sums of squares over the elements it owns (:mod:`initwatch.sharding`);
        the one reduction across ranks sums them. ``grad_nonfinite`` is 1 for a tensor whose
        gradient holds a NaN or Inf, read from its norm at no extra cost (an exact element
        count would be one more pass over every gradient; a squared norm that overflows
        float32, |g| above ~1e19, also counts). ``grad_present`` is 1 when any rank holds a
        gradient of the tensor (FSDP1 leaves ``grad=None`` on ranks that hold none of it).
        """
        n = len(self.targets)
        if n == 0:
            return
        self._resolve()
        params = [t.param for t in self.targets]
        self.has_grad = [p.grad is not None for p in params]
        grads = [local_tensor(p.grad) for p in params if p.grad is not None]
        dev = self.buffer.device
        g_norms = iter(foreach_norm(grads))
        w_norms = foreach_norm([local_tensor(p) for p in params])
        zero = self._zero()
        g = torch.stack([next(g_norms).to(dev) if h else zero for h in self.has_grad])
        g_owner = self._owner & torch.tensor(self._grad_owners(params), device=dev)
        w = torch.stack([w.to(dev) for w in w_norms])
        sums = torch.cat(
            [
                torch.where(g_owner, g.square(), 0.0),
                torch.where(self._owner, w.square(), 0.0),
                torch.zeros(n, device=dev),
            ]
        )
        maxs = torch.cat(
            [
                (~torch.isfinite(g) & g_owner).to(torch.float32),
                torch.tensor(self.has_grad, dtype=torch.float32, device=dev),
            ]
        )
        self.buffer.accumulate(self.group, sums=sums, maxs=maxs)

    def _grad_owners(self, params: Sequence[torch.Tensor]) -> list[bool]:
        """Owner rule for gradients held as DTensors (their placements may differ from the
        parameter's); other gradients follow their parameter."""
        return [
            p.grad is not None and (not is_dtensor(p.grad) or layout(p.grad).owner) for p in params
        ]

    def _sampled_values(self) -> torch.Tensor:
        dev = self.buffer.device
        self._resolve()
        parts = []
        for t, lay, pos in zip(self.targets, self._layouts, self._positions, strict=True):
            local = _flat(local_tensor(t.param))
            if not lay.owner:
                local = local[:0]
            elif pos is not None:
                local = local.index_select(0, pos)
            parts.append(local.to(dev, torch.float32))
        return torch.cat(parts) if parts else torch.zeros(0, device=dev)

    @torch.no_grad()
    def snapshot(self) -> None:
        """Keep the sampled coordinates of every tensor (before the optimizer step)."""
        self._snap = self._sampled_values()

    @torch.no_grad()
    def measure_update(self) -> None:
        """Sum of squared changes of the sampled coordinates since :meth:`snapshot`."""
        if self._snap is None or not self.targets:
            return
        current = self._sampled_values()
        if self._segments is None:
            counts = [self._local_count(i) for i in range(len(self.targets))]
            ids = [torch.full((k,), i, dtype=torch.long) for i, k in enumerate(counts)]
            self._segments = torch.cat(ids).to(self.buffer.device)
        delta = (current - self._snap).square()
        n = len(self.targets)
        upd = torch.zeros(n, device=self.buffer.device).index_add_(0, self._segments, delta)
        self.buffer.accumulate(
            self.group, sums=torch.cat([torch.zeros(2 * n, device=upd.device), upd])
        )
        self._snap = None

    def _local_count(self, i: int) -> int:
        """Sampled coordinates of tensor ``i`` this rank measures."""
        lay, pos = self._layouts[i], self._positions[i]
        if not lay.owner:
            return 0
        return local_tensor(self.targets[i].param).numel() if pos is None else len(pos)

    def discard_snapshot(self) -> None:
        """Forget the snapshot (skipped step)."""
        self._snap = None
