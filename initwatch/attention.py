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


def attention_rows(
    q: torch.Tensor, k: torch.Tensor, heads: int, causal: bool, rows: int = SAMPLE_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce the attention of one sequence: ``q`` (T, heads * d) and ``k`` (S, heads * d).

    Returns ``(sums, maxs)`` in the order of :data:`ATTENTION_FIELDS`, on ``q``'s device.
    ``k`` may have fewer heads (grouped-query attention): each serves ``heads / k_heads`` q heads.
    Causal rows sample the second half of the sequence (row i sees keys 0..i), so that a row
    never has fewer than ``T / 2`` keys to choose from.

    Example::

        >>> q = torch.zeros(4, 2); k = torch.randn(4, 2)
        >>> sums, maxs = attention_rows(q, k, heads=1, causal=False)
        >>> sums.tolist()[:2], round(sums[3].item(), 4)  # zero logits: uniform rows
        ([4.0, 0.0], 4.0)
    """
    t, s = q.shape[0], k.shape[0]
    d = q.shape[-1] // heads
    groups = k.shape[-1] // d  # fewer key heads under grouped-query attention
    qh = q.detach().float().reshape(t, heads, d).transpose(0, 1)
    kh = k.detach().float().reshape(s, groups, d).transpose(0, 1)
    if groups != heads:
        kh = kh.repeat_interleave(heads // groups, dim=0)
    if causal:
        idx = torch.arange(max(t // 2, t - rows), t, device=q.device)
    else:
        idx = torch.linspace(0, t - 1, min(rows, t), device=q.device).round().long()
    logits = qh[:, idx] @ kh.transpose(1, 2) / math.sqrt(d)  # heads, rows, S
    absmax = logits.abs().amax().reshape(1)
    keys = torch.full((idx.numel(),), float(s), device=q.device)
    if causal:
        future = torch.arange(s, device=q.device)[None, :] > idx[:, None]
        logits = logits.masked_fill(future[None], -math.inf)
        keys = (idx + 1).float()
    p = torch.softmax(logits, dim=-1)
    pmax = p.amax(dim=-1)
    entropy = -torch.special.xlogy(p, p).sum(dim=-1) / keys.clamp(min=2).log()[None]
    sums = torch.stack(
        [
            torch.tensor(float(pmax.numel()), device=q.device),
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
        self._handles = []
        for path in dict.fromkeys((q.module, k.module)):
            module = model.get_submodule(path)
            self._handles.append(
                module.register_forward_hook(self._hook(path), with_kwargs=True, prepend=False)
            )

    def _hook(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if not self.gate.on:
                return None
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
        """Remove the hooks (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._pending.clear()


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
    "attention_probes",
    "attention_rows",
    "derive_attention",
]
