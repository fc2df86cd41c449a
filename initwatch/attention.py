"""Attention probes: the attention probabilities rebuilt from the q and k projections.

Fused attention kernels (SDPA, flash) never materialize the attention matrix, so it cannot be
hooked. The q and k projections can: on a logging step the probe of each self-attention
sublayer takes the q and k its projections produced for the first sequence of the batch,
computes ``softmax(q k^T / sqrt(d_head))`` for a sample of query rows (causal for a decoder
stack), and reduces it on the device into a few numbers: how many rows are (almost) one-hot,
their mean largest probability, their mean entropy (as a fraction of the uniform row's) and the
largest ``|logit|``. Rotary position embeddings (applied after the projections) and padding
masks are not applied: rotations keep each vector's norm, so the logit scale, which is what
collapses, is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from initwatch import catalogue
from initwatch.anatomy.model import Anatomy, Slot
from initwatch.probes import Gate, first_tensor
from initwatch.stats import Field, Reduce, StatBuffer

ONEHOT_PROB = 0.99  # a row whose largest probability exceeds this counts as one-hot
SAMPLE_ROWS = 64  # query rows sampled per head (from the first sequence of the batch)

ATTENTION_FIELDS = (
    Field("rows", Reduce.SUM),  # sampled (head, query) rows
    Field("onehot", Reduce.SUM),  # rows whose largest probability exceeds ONEHOT_PROB
    Field("pmax", Reduce.SUM),  # sum of each row's largest probability
    Field("entropy", Reduce.SUM),  # sum of each row's entropy / log(number of keys)
    Field("logit_absmax", Reduce.MAX),  # largest |q.k / sqrt(d)|
)
ATTENTION_STATS = catalogue.names("attention")


def derive_attention(v: dict[str, float]) -> dict[str, float]:
    """Attention statistics from reduced :data:`ATTENTION_FIELDS` (``{}`` when none measured).

    Example::

        >>> derive_attention({"rows": 4, "onehot": 1, "pmax": 2.0, "entropy": 2.0,
        ...                   "logit_absmax": 9.0})["attn_onehot_frac"]
        0.25
    """
    return catalogue.derive_one("attention", v)


_MASKED = -1e30  # additive mask: finite, so p * log p is an exact 0 on masked keys


class _Layout:
    """What the reduction of one (T, S, causal, device) needs, built once and reused."""

    def __init__(self, t: int, s: int, causal: bool, rows: int, device: torch.device) -> None:
        if causal:
            idx = torch.arange(max(t // 2, t - rows), t, device=device)
            keys = (idx + 1).float()
            future = torch.arange(s, device=device)[None, :] > idx[:, None]
            self.mask: torch.Tensor | None = future.float() * _MASKED
        else:
            idx = torch.linspace(0, t - 1, min(rows, t), device=device).round().long()
            keys = torch.full((idx.numel(),), float(s), device=device)
            self.mask = None
        self.idx = idx
        self.neg_inv_log_keys = -1.0 / keys.clamp(min=2).log()
        self.n_rows = idx.numel()


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


_LAYOUTS: dict[tuple[int, int, bool, int, str], _Layout] = {}


def _layout(t: int, s: int, causal: bool, rows: int, device: torch.device) -> _Layout:
    if torch.compiler.is_compiling():
        # Inside a compiled graph the layout is traced as constants; a lookup in the
        # module-level cache would become a guard that fails once the cache fills
        # (one recompile per new shape).
        return _Layout(t, s, causal, rows, device)
    key = (t, s, causal, rows, str(device))
    found = _LAYOUTS.get(key)
    if found is None:
        if len(_LAYOUTS) > 64:  # many sequence lengths: keep the cache small
            _LAYOUTS.clear()
        found = _LAYOUTS[key] = _Layout(t, s, causal, rows, device)
    return found


def _reduce_rows(
    qs: torch.Tensor, ks: torch.Tensor, heads: int, lay: _Layout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reduction of ``L`` sequences at once: ``qs`` (L, rows, heads * d) holds the sampled
    query rows, ``ks`` (L, S, k_heads * d) the keys, both float32. Returns per sequence the
    one-hot row count, the sum of the rows' largest probabilities, the sum of their entropies
    (as a fraction of log(number of keys)) and the largest |logit|: four (L,) tensors."""
    n_seq, n, _ = qs.shape
    s = ks.shape[1]
    d = qs.shape[-1] // heads
    groups = ks.shape[-1] // d  # fewer key heads under grouped-query attention
    qh = qs.reshape(n_seq, n, heads, d).transpose(1, 2).reshape(-1, n, d)  # L * heads, rows, d
    kh = ks.reshape(n_seq, s, groups, d).transpose(1, 2)  # L, groups, S, d
    if groups != heads:
        kh = kh.repeat_interleave(heads // groups, dim=1)
    # q k^T with k as a transposed contiguous matrix: the BLAS layout (a permuted k is ~2x slower)
    logits = torch.bmm(qh, kh.reshape(-1, s, d).transpose(1, 2)).mul_(1.0 / math.sqrt(d))
    logits = logits.view(n_seq, heads, n, s)
    absmax = logits.reshape(n_seq, -1).abs().amax(dim=1)  # an inf-norm is ~10x slower on CPU
    if lay.mask is not None:
        logits = logits.add_(lay.mask)
    logp = torch.log_softmax(logits, dim=-1)
    p = torch.softmax(logits, dim=-1)  # exp(logp) is ~5x slower where the mask underflows
    pmax = p.amax(dim=-1)  # L, heads, rows
    onehot = (pmax > ONEHOT_PROB).sum(dim=(1, 2), dtype=torch.float32)
    entropy = (p * logp).sum(dim=-1).mul_(lay.neg_inv_log_keys).sum(dim=(1, 2))
    return onehot, pmax.sum(dim=(1, 2)), entropy, absmax


@torch.no_grad()
def attention_rows(
    q: torch.Tensor, k: torch.Tensor, heads: int, causal: bool, rows: int = SAMPLE_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce the attention of one sequence: ``q`` (T, heads * d) and ``k`` (S, heads * d).

    Returns ``(sums, maxs)`` in the order of :data:`ATTENTION_FIELDS`, on ``q``'s device.
    ``k`` may have fewer heads (grouped-query attention): each serves ``heads / k_heads`` q heads.
    Causal rows sample the second half of the sequence (row i sees keys 0..i), so that a row
    never has fewer than ``T / 2`` keys to choose from. About 20 device ops, no sync. Eager
    probes batch every sublayer's rows of a logging step into one such reduction
    (:class:`AttentionBatch`); this is the one used inside ``torch.compile`` graphs.

    Example::

        >>> q = torch.zeros(4, 2); k = torch.randn(4, 2)
        >>> sums, maxs = attention_rows(q, k, heads=1, causal=False)
        >>> sums.tolist()[:2], round(sums[3].item(), 4)  # zero logits: uniform rows
        ([4.0, 0.0], 4.0)
    """
    lay = _layout(q.shape[0], k.shape[0], causal, rows, q.device)
    onehot, pmax, entropy, absmax = _reduce_rows(_f32(q[lay.idx])[None], _f32(k)[None], heads, lay)
    count = torch.full((1,), float(lay.n_rows * heads), device=q.device)
    return torch.cat([count, onehot, pmax, entropy]), absmax


BATCH_BYTES = 16 * 2**20  # q/k samples kept for one batched reduction; beyond, reduce now


class AttentionBatch:
    """The q/k samples of a logging step's attention probes, reduced together when the stats
    buffer is flushed: one set of ~20 device ops for all self-attention sublayers of the same
    shape, instead of ~20 per sublayer.

    A sample is a copy (the sampled query rows and the keys of the first sequence, float32), so
    no activation is kept alive; samples are reduced early when they exceed
    :data:`BATCH_BYTES` or when a probe fires again (the next micro-batch).

    Args:
        buffer: the stats buffer (registers itself with :meth:`StatBuffer.defer`).

    Example::

        >>> buf = StatBuffer(); batch = AttentionBatch(buf)
        >>> batch.pending
        0
    """

    def __init__(self, buffer: StatBuffer) -> None:
        self.buffer = buffer
        self._items: list[tuple[AttentionProbe, torch.Tensor, torch.Tensor, _Layout]] = []
        self._seen: set[int] = set()
        self._bytes = 0
        self._plans: dict[tuple[int, ...], int] = {}
        buffer.defer(self)

    @property
    def pending(self) -> int:
        """Samples kept, not yet reduced."""
        return len(self._items)

    @torch.no_grad()
    def add(self, probe: AttentionProbe, q: torch.Tensor, k: torch.Tensor) -> None:
        """Keep a copy of the sampled rows of ``q`` (T, heads * d) and of ``k`` (S, ...)."""
        if id(probe) in self._seen or self._bytes > BATCH_BYTES:
            self.flush()
        lay = _layout(q.shape[0], k.shape[0], probe.causal, SAMPLE_ROWS, q.device)
        qs = _f32(q[lay.idx])
        ks = k.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        self._items.append((probe, qs, ks, lay))
        self._seen.add(id(probe))
        self._bytes += 4 * (qs.numel() + ks.numel())

    def _plan(self, probes: tuple[AttentionProbe, ...]) -> int:
        key = tuple(id(p) for p in probes)
        found = self._plans.get(key)
        if found is None:
            entries = [
                (p.group, "sum", name, 0) for name in ("onehot", "pmax", "entropy") for p in probes
            ]
            entries += [(p.group, "max", "logit_absmax", 0) for p in probes]
            found = self._plans[key] = self.buffer.plan_across(entries)
        return found

    def flush(self) -> None:
        """Reduce every kept sample and stage the results (one reduction per shape)."""
        items = self._items
        self.discard()
        by_shape: dict[tuple, list] = {}
        for item in items:
            probe, qs, ks, lay = item
            key = (probe.heads, tuple(qs.shape), tuple(ks.shape), id(lay), qs.device)
            by_shape.setdefault(key, []).append(item)
        for (heads, *_), group in by_shape.items():
            probes = tuple(it[0] for it in group)
            try:
                with torch.no_grad():
                    qs = torch.stack([it[1] for it in group])
                    ks = torch.stack([it[2] for it in group])
                    values = torch.cat(_reduce_rows(qs, ks, heads, group[0][3]))
                self.buffer.stage(self._plan(probes), values)
                for probe, q, _, _ in group:
                    self.buffer.stage_host(probe.group, "rows", q.shape[0] * heads)
            except Exception as exc:  # a probe must never break the step
                for probe in probes:
                    probe.error = repr(exc)

    def discard(self) -> None:
        """Drop the kept samples."""
        self._items, self._seen, self._bytes = [], set(), 0


def _sequence(x: torch.Tensor, batch_first: bool = True) -> torch.Tensor:
    """The first sequence of a (batch, time, features) tensor as (time, features)."""
    if x.dim() == 2:
        return x
    return x[0] if batch_first else x[:, 0]


def _rows(t: torch.Tensor, slot: Slot) -> torch.Tensor:
    """The slot's contiguous row block of a fused ``in_proj`` tensor."""
    n = t.shape[0] // slot.parts
    return t[slot.index * n : (slot.index + 1) * n]


def _projection(
    slot: Slot, module: nn.Module, args: Any, kwargs: Any, output: Any
) -> torch.Tensor | None:
    """The logical projection (q or k) of the first sequence, from a projection module's call.

    Reads only the hooked module (never the model: a hook that reaches the model from inside a
    ``torch.compile``-d forward breaks Dynamo's tracing)."""
    if slot.fused == "rows":  # nn.MultiheadAttention: in_proj inside the module, from its inputs
        i, name = (0, "query") if slot.index == 0 else (1, "key")
        x = args[i] if len(args) > i else kwargs.get(name)
        if not isinstance(x, torch.Tensor):
            return None
        x = _sequence(x, getattr(module, "batch_first", False))
        weight = _rows(getattr(module, slot.weight), slot)
        bias = getattr(module, slot.bias, None) if slot.bias else None  # None: bias=False
        return nn.functional.linear(x, weight, None if bias is None else _rows(bias, slot))
    out = first_tensor(output)
    if out is None:
        return None
    out = _sequence(out)
    if slot.fused is None:
        return out
    if slot.fused == "cols":  # GPT-2's Conv1D: [q | k | v] along the features
        n = out.shape[-1] // slot.parts
        return out[..., slot.index * n : (slot.index + 1) * n]
    if slot.fused == "heads":  # GPT-NeoX: per head [q, k, v]
        shaped = out.reshape(*out.shape[:-1], slot.heads, slot.parts, -1)
        return shaped[..., slot.index, :].reshape(*out.shape[:-1], -1)
    return None


class AttentionProbe:
    """The q/k hooks of one self-attention sublayer and its buffer group.

    Args:
        name: display name (``"<block>.attn"``).
        q, k: the sublayer's q and k slots.
        heads: number of attention heads.
        causal: True for a decoder's self-attention.
        model: the model the slot paths are relative to.
        buffer: the stats buffer (the group is declared here; allocate afterwards).
        gate: the switch read at each call.
        batch: where eager calls keep their samples (:class:`AttentionBatch`); None: each
            call reduces its own.

    Example::

        >>> from initwatch import zoo
        >>> from initwatch.anatomy import inspect
        >>> model = zoo.build("gpt2", layers=1, hidden=16)
        >>> buf, gate = StatBuffer(), Gate()
        >>> probes = attention_probes(model, inspect(model), buf, gate)
        >>> buf.allocate(); gate.on = True
        >>> _ = model(torch.randint(0, 90, (1, 8)))
        >>> buf.read().row(probes[0].group)["rows"]  # 4 heads x 4 causal rows
        16.0
    """

    def __init__(
        self,
        name: str,
        q: Slot,
        k: Slot,
        heads: int,
        causal: bool,
        model: nn.Module,
        buffer: StatBuffer,
        gate: Gate,
        batch: AttentionBatch | None = None,
    ) -> None:
        self.name = name
        self.batch = batch
        self.slots = {"q": q, "k": k}
        self.heads = heads
        self.causal = causal
        self.buffer = buffer
        self.gate = gate
        self.group = buffer.add(f"attn_scores:{name}", ATTENTION_FIELDS)
        self.error: str | None = None
        self._pending: dict[str, torch.Tensor] = {}
        self._modules = {p: model.get_submodule(p) for p in dict.fromkeys((q.module, k.module))}
        self._handles: list[Any] = []
        self._removed = False
        self.attach()

    def attach(self) -> None:
        """Attach the hooks (no-op when attached or removed)."""
        if self._handles or self._removed:
            return
        self._handles = [
            m.register_forward_hook(self._hook(path), with_kwargs=True)
            for path, m in self._modules.items()
        ]

    def detach(self) -> None:
        """Remove the hooks until the next :meth:`attach`."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._pending.clear()

    def _hook(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if not self.gate.on:
                return None
            compiling = torch.compiler.is_compiling()
            if compiling:
                self.gate.compiled = True
            else:
                self.gate.eager = True
            try:
                for role, slot in self.slots.items():
                    if slot.module == path:
                        proj = _projection(slot, module, args, kwargs, output)
                        if proj is not None:
                            self._pending[role] = proj
                if len(self._pending) == 2:
                    q, k = self._pending.pop("q"), self._pending.pop("k")
                    d = q.shape[-1] // self.heads
                    kv = k.shape[-1] // d if d else 0
                    fits = q.shape[-1] == d * self.heads and kv and self.heads % kv == 0
                    if fits and self.batch is not None and not compiling:
                        self.batch.add(self, q, k)  # reduced with the others at the flush
                    elif fits:
                        sums, maxs = attention_rows(q, k, self.heads, self.causal)
                        self.buffer.accumulate(self.group, sums, maxs)
            except Exception as exc:  # a probe must never break the forward pass
                self.error = repr(exc)
                self._pending.clear()
            return None

        return hook

    def remove(self) -> None:
        """Remove the hooks (idempotent, final)."""
        self.detach()
        self._removed = True


def attention_probes(
    model: nn.Module, anatomy: Anatomy | None, buffer: StatBuffer, gate: Gate
) -> list[AttentionProbe]:
    """One :class:`AttentionProbe` per self-attention sublayer with q and k slots (none when
    the anatomy is unknown or gives no head count).

    Example::

        >>> attention_probes(nn.Linear(2, 2), None, StatBuffer(), Gate())
        []
    """
    if anatomy is None or anatomy.heads <= 0:
        return []
    out: list[AttentionProbe] = []
    batch: AttentionBatch | None = None
    for stack in anatomy.stacks:
        for block in stack.blocks:
            for sub in block.sublayers:
                if sub.kind != "attn":
                    continue
                roles = {s.role: s for s in sub.slots}
                if "q" not in roles or "k" not in roles:
                    continue
                batch = batch or AttentionBatch(buffer)
                out.append(
                    AttentionProbe(
                        f"{block.name}.attn",
                        roles["q"],
                        roles["k"],
                        anatomy.heads,
                        stack.kind == "decoder",
                        model,
                        buffer,
                        gate,
                        batch,
                    )
                )
    return out


def attach_all(probes: Sequence[AttentionProbe]) -> None:
    """Attach every probe's hooks (for a logging step).

    Example::

        >>> attach_all([])
    """
    for p in probes:
        p.attach()


def idle_all(probes: Sequence[AttentionProbe], gate: Gate) -> None:
    """Between logging steps: detach the hooks when every hook only ever ran eagerly (as
    :meth:`initwatch.probes.ProbeSet.idle` does; under ``torch.compile`` they stay, gated).

    Example::

        >>> idle_all([], Gate())
    """
    if gate.eager and not gate.compiled:
        for p in probes:
            p.detach()


def remove_all(probes: Sequence[AttentionProbe]) -> None:
    """Remove every probe's hooks.

    Example::

        >>> remove_all([])
    """
    for p in probes:
        p.remove()


__all__ = [
    "ATTENTION_FIELDS",
    "AttentionBatch",
    "BATCH_BYTES",
    "ATTENTION_STATS",
    "AttentionProbe",
    "attach_all",
    "attention_probes",
    "idle_all",
    "attention_rows",
    "derive_attention",
    "remove_all",
]
