"""The data model of an anatomy: stacks, blocks, sublayers, roles, norms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeGuard, get_args

import torch
from torch import nn

from initwatch.vocabulary import (
    AttnRole,
    CrossRole,
    FfnRole,
    Fused,
    Layout,
    ModelKind,
    NormKind,
    NormPlacement,
    NormSite,
    Residual,
    Role,
    StackKind,
    SublayerKind,
)

# Roles of the logical matrices inside a block. Cross-attention roles carry the prefix "x".
ATTN_ROLES: tuple[AttnRole, ...] = get_args(AttnRole)
CROSS_ROLES: tuple[CrossRole, ...] = get_args(CrossRole)
FFN_ROLES: tuple[FfnRole, ...] = get_args(FfnRole)
ROLES: tuple[Role, ...] = ATTN_ROLES + CROSS_ROLES + FFN_ROLES


def is_role(name: str) -> TypeGuard[Role]:
    """True when ``name`` is one of the :data:`ROLES`.

    Example::

        >>> is_role("xq"), is_role("qkv")
        (True, False)
    """
    return name in ROLES


def is_stack_kind(name: str) -> TypeGuard[StackKind]:
    """True when ``name`` is a stack kind, ``"encoder"`` or ``"decoder"``.

    Example::

        >>> is_stack_kind("decoder"), is_stack_kind("Decoder")
        (True, False)
    """
    return name in get_args(StackKind)


@dataclass(frozen=True)
class Slot:
    """One logical weight matrix (and its bias), possibly a slice of a fused tensor.

    Args:
        role: ``"q"``, ``"k"``, ``"v"``, ``"o"``, ``"xq"`` ... ``"ffn_in"``, ``"ffn_gate"``,
            ``"ffn_out"``.
        module: module path relative to the model root.
        weight: attribute name of the weight on that module (``"weight"``, ``"in_proj_weight"``).
        bias: attribute name of the bias, or None.
        fan_in, fan_out: the fans of the logical matrix.
        fused: how the slot sits in a fused tensor: None (whole tensor), ``"rows"``
            (contiguous row block, ``nn.MultiheadAttention``), ``"cols"`` (contiguous column
            block, GPT-2 ``Conv1D``) or ``"heads"`` (per-head interleaved rows, GPT-NeoX).
        index: which part of the fused tensor (0 = q, 1 = k, 2 = v).
        parts: number of parts in the fused tensor.
        heads: number of heads (``fused == "heads"`` only).
        sizes: the widths of all parts when they differ (grouped-query ``(64, 16, 16)``);
            empty for equal parts.

    Example::

        >>> Slot("q", "attn.c_attn", "weight", "bias", 64, 64, fused="cols", index=0).role
        'q'
    """

    role: Role
    module: str
    weight: str
    bias: str | None
    fan_in: int
    fan_out: int
    fused: Fused | None = None
    index: int = 0
    parts: int = 3
    heads: int = 1
    sizes: tuple[int, ...] = ()

    def _slice(self, t: torch.Tensor, is_bias: bool) -> torch.Tensor:
        if self.fused is None:
            return t
        if self.sizes:
            start = sum(self.sizes[: self.index])
            dim = 1 if self.fused == "cols" and not is_bias else 0
            return t.narrow(dim, start, self.sizes[self.index])
        if self.fused == "rows" or (self.fused == "cols" and is_bias):
            n = t.shape[0] // self.parts
            return t[self.index * n : (self.index + 1) * n]
        if self.fused == "cols":
            n = t.shape[1] // self.parts
            return t[:, self.index * n : (self.index + 1) * n]
        if self.fused == "heads":
            shaped = t.view(self.heads, self.parts, -1, *t.shape[1:])
            return shaped[:, self.index]
        raise ValueError(f"unknown fused layout {self.fused!r}")

    def weight_view(self, model: nn.Module) -> torch.Tensor:
        """A view of the logical matrix inside its (possibly fused) parameter."""
        return self._slice(getattr(model.get_submodule(self.module), self.weight), False)

    def bias_view(self, model: nn.Module) -> torch.Tensor | None:
        """A view of the logical bias, or None when the projection has no bias."""
        if self.bias is None:
            return None
        b = getattr(model.get_submodule(self.module), self.bias, None)
        return None if b is None else self._slice(b, True)

    @property
    def param_name(self) -> str:
        """Full name of the weight parameter (``module.weight``)."""
        return f"{self.module}.{self.weight}" if self.module else self.weight


@dataclass(frozen=True)
class Norm:
    """A normalization module on the residual path.

    Args:
        path: module path.
        where: ``"attn"``, ``"cross"``, ``"ffn"`` (the sublayer it belongs to), ``"final"``
            (after the last block) or ``"embedding"``.
        placement: ``"pre"`` (normalizes the sublayer input), ``"post"`` (normalizes the
            residual sum) or ``"stack"`` for final and embedding norms.
        kind: ``"layernorm"``, ``"rmsnorm"``, ``"rmsnorm_1p"`` (Gemma's ``(1 + w)`` scale) or
            ``"batchnorm"`` (a residual network's).

    Example::

        >>> Norm("layers.0.norm1", "attn", "post", "layernorm").placement
        'post'
    """

    path: str
    where: NormSite
    placement: NormPlacement
    kind: NormKind


@dataclass
class Sublayer:
    """A residual branch inside a block: self-attention, cross-attention or feed-forward.

    Args:
        kind: ``"attn"``, ``"cross"`` or ``"ffn"``.
        slots: the logical matrices of the branch.
        output: path of the module whose output is the branch output (before the residual add).
        output_is_tuple: True when that module returns a tuple whose first element is the
            branch output (``nn.MultiheadAttention``).
        norm: the sublayer's norm, or None.

    Example::

        >>> Sublayer("ffn", [], output="layers.0.linear2").kind
        'ffn'
    """

    kind: SublayerKind
    slots: list[Slot]
    output: str
    output_is_tuple: bool = False
    norm: Norm | None = None


@dataclass
class Block:
    """One transformer block (layer) of a stack.

    Args:
        stack: ``"encoder"`` or ``"decoder"``.
        index: position in the stack (0 = closest to the input).
        path: module path of the block.
        sublayers: its residual branches in forward order.

    Example::

        >>> Block("encoder", 2, "layers.2", []).name
        'encoder.2'
    """

    stack: StackKind
    index: int
    path: str
    sublayers: list[Sublayer]

    @property
    def name(self) -> str:
        """Display name, e.g. ``"encoder.3"``: used in tags and alerts."""
        return f"{self.stack}.{self.index}"

    @property
    def slots(self) -> list[Slot]:
        """All logical matrices of the block."""
        return [s for sub in self.sublayers for s in sub.slots]

    @property
    def norms(self) -> list[Norm]:
        """The block's own norms (per sublayer)."""
        return [sub.norm for sub in self.sublayers if sub.norm is not None]

    def slot(self, role: Role) -> Slot | None:
        """The slot with ``role``, or None."""
        return next((s for s in self.slots if s.role == role), None)


@dataclass
class Stack:
    """A stack of blocks: the encoder or the decoder.

    Args:
        kind: ``"encoder"`` or ``"decoder"``.
        path: path of the block list (``nn.ModuleList``).
        blocks: the blocks in order.
        token_embedding: path of the token embedding module (``nn.Embedding``), or None.
        position_embedding: path of a learned or fixed position table, or None.
        embedding_norm: a norm applied to the embeddings, or None.
        final_norm: the norm after the last block, or None.
        embed_scale: the factor the model multiplies token embeddings by (1.0 for most;
            sqrt(d) for Gemma and for BART/Marian with ``scale_embedding``).

    Example::

        >>> Stack("encoder", "layers", []).depth
        0
    """

    kind: StackKind
    path: str
    blocks: list[Block]
    token_embedding: str | None = None
    position_embedding: str | None = None
    embedding_norm: Norm | None = None
    final_norm: Norm | None = None
    embed_scale: float = 1.0

    @property
    def depth(self) -> int:
        """Number of blocks."""
        return len(self.blocks)

    @property
    def stack_norms(self) -> list[Norm]:
        """Embedding and final norms of the stack."""
        return [n for n in (self.embedding_norm, self.final_norm) if n is not None]


@dataclass
class Anatomy:
    """What initwatch read from a model: its stacks, blocks, roles and norms.

    Returned by :func:`initwatch.inspect`; every later feature (schemes, probe names,
    remedies) speaks in its terms.

    Args:
        family: recognised family (``"bert"``, ``"gpt2"``, ``"torch"``, ``"custom"``...).
        stacks: the encoder and/or decoder stacks.
        layout: ``"post"`` (Post-LN), ``"pre"`` (Pre-LN), ``"mixed"`` (stacks differ) or
            ``"none"`` (described without norms; a residual network).
        residual: ``"sequential"``, ``"parallel"`` or ``"mixed"`` (stacks differ).
        norm_kind: ``"layernorm"``, ``"rmsnorm"``, ``"rmsnorm_1p"``.
        hidden: model width d.
        heads: number of attention heads.
        attn_scaled: False when attention logits are not divided by sqrt(d_head) (T5, GPT-Neo).
        tied: groups of parameter names that share one tensor.
        model_class: class name of the model.
        applied_scheme: the scheme initwatch already applied to (or restored into) the model,
            or None.
        identical: groups of block names whose weights are identical (the copies
            ``nn.TransformerEncoder`` makes of one layer); empty when every block differs.

    Example::

        >>> import torch.nn as nn, initwatch
        >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64), num_layers=3)
        >>> initwatch.inspect(enc).layout
        'post'
    """

    family: str
    stacks: list[Stack]
    layout: Layout
    residual: Residual = "sequential"
    norm_kind: NormKind = "layernorm"
    hidden: int = 0
    heads: int = 0
    attn_scaled: bool = True
    tied: list[list[str]] = field(default_factory=list)
    model_class: str = ""
    applied_scheme: str | None = None
    identical: list[list[str]] = field(default_factory=list)

    @property
    def blocks(self) -> list[Block]:
        """All blocks, encoder first, in forward order."""
        return [b for s in self.stacks for b in s.blocks]

    @property
    def depth(self) -> dict[str, int]:
        """Blocks per stack, e.g. ``{"encoder": 6, "decoder": 6}``."""
        return {s.kind: s.depth for s in self.stacks}

    @property
    def kind(self) -> ModelKind:
        """``"encoder-only"``, ``"decoder-only"`` or ``"encoder-decoder"``."""
        kinds = {s.kind for s in self.stacks}
        if kinds == {"encoder", "decoder"}:
            return "encoder-decoder"
        return "decoder-only" if kinds == {"decoder"} else "encoder-only"

    def stack(self, kind: StackKind) -> Stack | None:
        """The stack of ``kind`` (``"encoder"`` / ``"decoder"``), or None."""
        return next((s for s in self.stacks if s.kind == kind), None)
