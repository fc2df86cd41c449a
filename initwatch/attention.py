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
ATTENTION_STATS = ("attn_onehot_frac", "attn_pmax", "attn_entropy", "attn_logit_absmax")


def derive_attention(v: dict[str, float]) -> dict[str, float]:
    """Attention statistics from reduced :data:`ATTENTION_FIELDS` (``{}`` when none measured).

    Example::

        >>> derive_attention({"rows": 4, "onehot": 1, "pmax": 2.0, "entropy": 2.0,
        ...                   "logit_absmax": 9.0})["attn_onehot_frac"]
        0.25
    """
    n = v["rows"]
    if n <= 0:
        return {}
    return {
        "attn_onehot_frac": v["onehot"] / n,
        "attn_pmax": v["pmax"] / n,
        "attn_entropy": v["entropy"] / n,
        "attn_logit_absmax": v["logit_absmax"],
    }


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


@torch.no_grad()
def attention_rows(
    q: torch.Tensor, k: torch.Tensor, heads: int, causal: bool, rows: int = SAMPLE_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce the attention of one sequence: ``q`` (T, heads * d) and ``k`` (S, heads * d).

    Returns ``(sums, maxs)`` in the order of :data:`ATTENTION_FIELDS`, on ``q``'s device.
    ``k`` may have fewer heads (grouped-query attention): each serves ``heads / k_heads`` q heads.
    Causal rows sample the second half of the sequence (row i sees keys 0..i), so that a row
    never has fewer than ``T / 2`` keys to choose from. About 20 device ops, no sync (with
    the q/k slices and the buffer update, ~35 per sublayer and logging step).

    Example::

        >>> q = torch.zeros(4, 2); k = torch.randn(4, 2)
        >>> sums, maxs = attention_rows(q, k, heads=1, causal=False)
        >>> sums.tolist()[:2], round(sums[3].item(), 4)  # zero logits: uniform rows
        ([4.0, 0.0], 4.0)
    """
    t, s = q.shape[0], k.shape[0]
    d = q.shape[-1] // heads
    groups = k.shape[-1] // d  # fewer key heads under grouped-query attention
    lay = _layout(t, s, causal, rows, q.device)
    qh = _f32(q[lay.idx]).view(-1, heads, d).transpose(0, 1)  # heads, rows, d
    kh = _f32(k).reshape(s, groups, d).permute(1, 2, 0)  # groups, d, S
    if groups != heads:
        kh = kh.repeat_interleave(heads // groups, dim=0)
    logits = torch.matmul(qh, kh).mul_(1.0 / math.sqrt(d))  # heads, rows, S
    absmax = torch.linalg.vector_norm(logits, ord=math.inf).reshape(1)
    if lay.mask is not None:
        logits = logits.add_(lay.mask)
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    pmax = p.amax(dim=-1)
    entropy = (p * logp).sum(dim=-1).mul_(lay.neg_inv_log_keys)
    sums = torch.stack(
        [
            torch.full((), float(pmax.numel()), device=q.device),
            (pmax > ONEHOT_PROB).sum(dtype=torch.float32),
            pmax.sum(),
            entropy.sum(),
        ]
    )
    return sums, absmax


def _sequence(x: torch.Tensor, batch_first: bool = True) -> torch.Tensor:
    """The first sequence of a (batch, time, features) tensor as (time, features)."""
    if x.dim() == 2:
        return x
    return x[0] if batch_first else x[:, 0]


def _rows(t: torch.Tensor | None, slot: Slot) -> torch.Tensor | None:
    """The slot's contiguous row block of a fused ``in_proj`` tensor."""
    if t is None:
        return None
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
        bias = _rows(getattr(module, slot.bias, None), slot) if slot.bias else None
        return nn.functional.linear(x, weight, bias)
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
    ) -> None:
        self.name = name
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
            if torch.compiler.is_compiling():
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
                    if q.shape[-1] == d * self.heads and kv and self.heads % kv == 0:
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
    for stack in anatomy.stacks:
        for block in stack.blocks:
            for sub in block.sublayers:
                if sub.kind != "attn":
                    continue
                roles = {s.role: s for s in sub.slots}
                if "q" not in roles or "k" not in roles:
                    continue
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
    "ATTENTION_STATS",
    "AttentionProbe",
    "attach_all",
    "attention_probes",
    "idle_all",
    "attention_rows",
    "derive_attention",
    "remove_all",
]
