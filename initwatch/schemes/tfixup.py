"""T-Fixup (Huang et al., ICML 2020): no LayerNorm, no warmup; Xavier init scaled by
0.67 N^(-1/4) in the encoder and (9M)^(-1/4) in the decoder, token embeddings N(0, d^(-1/2))
scaled by (9N)^(-1/4) / (9M)^(-1/4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from initwatch.anatomy.model import Anatomy, Stack
from initwatch.errors import AnatomyError
from initwatch.schemes.base import (
    Init,
    Plan,
    check_options,
    depths,
    init_action,
    norm_removals,
    override,
    slot_inits,
    start_plan,
    value_gains,
    xavier_std,
)
from initwatch.schemes.report import Change
from initwatch.schemes.spec import Scheme, everywhere, kind_depths
from initwatch.vocabulary import InitAction, ModelKind

NAME = "t-fixup"
OPTIONS = ("scale", "embedding_scale", "embedding", "norms", "distribution")


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False
) -> dict[str, dict[str, float]]:
    """T-Fixup's layer scale and embedding scale per stack.

    Encoder–decoder follows the paper and its code; single stacks follow the nearest rule
    (encoder-only: the encoder rule with (9N)^(-1/4) for embeddings; decoder-only: the decoder
    rule), an extrapolation the paper does not cover. The paper's decoder rule already counts
    its three sublayers, so ``cross`` changes nothing (kept for the registry's signature).

    Example::

        >>> c = constants("encoder-decoder", {"encoder": 6, "decoder": 6})
        >>> round(c["encoder"]["scale"], 4), round(c["decoder"]["scale"], 4)
        (0.4281, 0.3689)
    """
    out: dict[str, dict[str, float]] = {}
    for stack, n in kind_depths(kind, depth).items():
        scale = 0.67 * n**-0.25 if stack == "encoder" else (9 * n) ** -0.25
        out[stack] = {"scale": scale, "embedding_scale": (9 * n) ** -0.25}
    return out


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan T-Fixup for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    action = init_action(
        "xavier",
        options.get("distribution", "uniform"),
        "'uniform' (the official code) or 'normal'",
    )
    emb_mode = options.get("embedding", "effective")
    if emb_mode not in ("literal", "effective"):
        raise ValueError(
            f"embedding={emb_mode!r}: choose 'effective' (the official code's scale at the first "
            "block, default) or 'literal' (the official code's stored table)"
        )
    consts = constants(anatomy.kind, depths(anatomy, options))
    override(consts, options, "scale")
    override(consts, options, "embedding_scale")
    p, stacks = start_plan(NAME, anatomy, options, consts)
    for stack in stacks:
        scale = consts[stack.kind]["scale"]
        gains, notes = value_gains(scale, f"x {stack.kind} scale")
        p.inits += slot_inits(anatomy, stack.blocks, gains, action, notes)
        if stack.token_embedding is not None:
            emb_scale = consts[stack.kind]["embedding_scale"]
            p.inits.append(_embedding(model, stack, stack.token_embedding, emb_scale, emb_mode))
        else:
            _no_embedding(p, stack.kind)
    p.inits += _output_heads(model, anatomy, action)
    p.structure += norm_removals(model, stacks, options.get("norms", "all"))
    return p


def _no_embedding(p: Plan, stack: str) -> None:
    """The paper re-draws the token embedding; where none was found say so (report, warning)
    and keep ``embedding_scale`` out of the constants, which list only what was applied."""
    p.constants[stack].pop("embedding_scale", None)
    how = "describe it with initwatch.inspect(model, token_embedding='path.to.embedding')"
    p.skips.append(
        Change(
            "(token embedding)",
            "skip",
            "token_embedding",
            stack,
            note=f"not found, left as it is; {how}",
        )
    )
    p.warnings.append(
        f"t-fixup: no token embedding found for the {stack} stack, so the paper's embedding "
        f"init was not applied (the report lists it as skipped); {how} and pass "
        "anatomy=... to apply it"
    )


def _embedding(model: nn.Module, stack: Stack, path: str, emb_scale: float, mode: str) -> Init:
    """The init of the token embedding at ``path`` (the stack's)."""
    module = model.get_submodule(path)
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise AnatomyError(
            f"token embedding {path!r} ({type(module).__name__}) has no weight tensor; give the "
            "embedding module: initwatch.inspect(model, token_embedding='path.to.embedding')"
        )
    pad = getattr(module, "padding_idx", None)
    bias = getattr(module, "bias", None)
    param = f"{path}.weight"
    if weight.dim() != 2 or not isinstance(module, nn.Embedding):
        # An input projection (ViT's patch Conv2d): no table to draw N(0, d^-1/2) from. It is
        # the model's input embedding, so it gets the same target: per-entry std emb_scale
        # entering block 0 for unit-variance inputs (std emb_scale / sqrt(fan_in)).
        fan_in = weight[0].numel()
        return Init(
            "token_embedding",
            stack.kind,
            "normal",
            emb_scale / (fan_in**0.5 * stack.embed_scale),
            param=param,
            bias=f"{path}.bias" if bias is not None else None,
            note=f"input projection: output std {emb_scale:.4g} for unit inputs "
            f"(std {emb_scale:.4g}/sqrt(fan_in={fan_in}))",
            constant="embedding_scale",
        )
    width = weight.shape[1]
    if mode == "literal":
        std = width**-0.5 * emb_scale
        note = f"N(0, d^-1/2) x {emb_scale:.4g} (d={width})"
    else:
        std = emb_scale / stack.embed_scale
        note = f"effective std {emb_scale:.4g} after the model's x{stack.embed_scale:.4g}"
    return Init(
        "token_embedding",
        stack.kind,
        "normal",
        std,
        param=param,
        zero_row=pad,
        note=note + ("; padding row 0" if pad is not None else ""),
        constant="embedding_scale",
    )


def _output_heads(model: nn.Module, anatomy: Anatomy, action: InitAction) -> list[Init]:
    """Xavier (gain 1) for an untied output head (LLaMA's ``lm_head``, GPT-NeoX's
    ``embed_out``): the paper re-draws every weight matrix but the input embeddings. A head
    tied to the token embedding is that embedding, drawn once by the embedding rule."""
    names = {id(m): n for n, m in model.named_modules()}
    tables = {
        id(model.get_submodule(s.token_embedding).weight)
        for s in anatomy.stacks
        if s.token_embedding is not None
    }
    out = []
    for mod in model.modules():
        get = getattr(mod, "get_output_embeddings", None)
        head = get() if callable(get) else None
        weight = getattr(head, "weight", None)
        if head is None or id(head) not in names or not isinstance(weight, torch.Tensor):
            continue
        if weight.dim() != 2 or id(weight) in tables:
            continue
        path = names[id(head)]
        fan_out, fan_in = weight.shape
        bias = getattr(head, "bias", None)
        out.append(
            Init(
                "output_head",
                "head",
                action,
                xavier_std(fan_in, fan_out),
                1.0,
                param=f"{path}.weight",
                bias=f"{path}.bias" if isinstance(bias, torch.Tensor) else None,
                note="untied output head: Xavier, gain 1",
            )
        )
        break  # the outermost model's head
    return out


SCHEME = Scheme(
    name=NAME,
    title="T-Fixup",
    options=OPTIONS,
    applies=everywhere,
    constants=constants,
    plan=plan,
    starts_from_zero=True,
    removes_norms=True,
    aliases=("tfixup", "t_fixup"),
    featured=True,
)
