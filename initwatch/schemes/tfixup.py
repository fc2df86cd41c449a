"""T-Fixup (Huang et al., ICML 2020): no LayerNorm, no warmup; Xavier init scaled by
0.67 N^(-1/4) in the encoder and (9M)^(-1/4) in the decoder, token embeddings N(0, d^(-1/2))
scaled by (9N)^(-1/4) / (9M)^(-1/4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy
from initwatch.schemes.base import (
    Init,
    Plan,
    check_options,
    depths,
    norm_removals,
    per_stack,
    slot_inits,
    stacks_to_touch,
)
from initwatch.schemes.spec import Scheme

NAME = "t-fixup"
OPTIONS = ("scale", "embedding_scale", "embedding", "norms", "distribution")


def constants(
    kind: str, depth: Mapping[str, int], cross: bool = False
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
    n, m = depth.get("encoder"), depth.get("decoder")
    enc = {"scale": 0.67 * n**-0.25, "embedding_scale": (9 * n) ** -0.25} if n else None
    dec = {"scale": (9 * m) ** -0.25, "embedding_scale": (9 * m) ** -0.25} if m else None
    if kind == "encoder-only":
        return {"encoder": enc}  # type: ignore[dict-item]
    if kind == "decoder-only":
        return {"decoder": dec}  # type: ignore[dict-item]
    if kind == "encoder-decoder":
        return {"encoder": enc, "decoder": dec}  # type: ignore[dict-item]
    raise ValueError(f"kind={kind!r}: expected encoder-only, decoder-only or encoder-decoder")


_SCALED = ("v", "o", "xv", "xo", "ffn_in", "ffn_out")
_PLAIN = ("q", "k", "xq", "xk", "ffn_gate")


def applies(anatomy: Anatomy) -> str | None:
    """T-Fixup applies to every anatomy initwatch reads (Pre-LN, Post-LN, no norms): None.

    Example::

        >>> from initwatch import inspect, zoo
        >>> applies(inspect(zoo.build("gpt2"))) is None
        True
    """
    return None


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan T-Fixup for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    dist = options.get("distribution", "uniform")
    if dist not in ("uniform", "normal"):
        raise ValueError(f"distribution={dist!r}: choose 'uniform' (the official code) or 'normal'")
    emb_mode = options.get("embedding", "effective")
    if emb_mode not in ("literal", "effective"):
        raise ValueError(
            f"embedding={emb_mode!r}: choose 'effective' (the official code's scale at the first "
            "block, default) or 'literal' (the official code's stored table)"
        )
    consts = constants(anatomy.kind, depths(anatomy, options))
    for stack, vals in consts.items():
        vals["scale"] = per_stack(options.get("scale"), stack, vals["scale"], "scale")
        vals["embedding_scale"] = per_stack(
            options.get("embedding_scale"), stack, vals["embedding_scale"], "embedding_scale"
        )
    touch = stacks_to_touch(anatomy, options)
    p = Plan(NAME, {k: v for k, v in consts.items() if k in touch})
    for stack in anatomy.stacks:
        if stack.kind not in touch:
            continue
        scale = consts[stack.kind]["scale"]
        gains = {r: scale for r in _SCALED} | {r: 1.0 for r in _PLAIN}
        notes = {r: f"x {stack.kind} scale" for r in _SCALED} | {r: "gain 1" for r in _PLAIN}
        p.inits += slot_inits(anatomy, stack.blocks, gains, f"xavier_{dist}", notes)
        if stack.token_embedding is not None:
            p.inits.append(
                _embedding(model, stack, consts[stack.kind]["embedding_scale"], emb_mode)
            )
    p.structure += norm_removals(model, anatomy, touch, options.get("norms", "all"))
    return p


def _embedding(model: nn.Module, stack: Any, emb_scale: float, mode: str) -> Init:
    module = model.get_submodule(stack.token_embedding)
    width = module.weight.shape[1]
    if mode == "literal":
        std = width**-0.5 * emb_scale
        note = f"N(0, d^-1/2) x {emb_scale:.4g} (d={width})"
    else:
        std = emb_scale / stack.embed_scale
        note = f"effective std {emb_scale:.4g} after the model's x{stack.embed_scale:.4g}"
    pad = getattr(module, "padding_idx", None)
    return Init(
        "token_embedding",
        stack.kind,
        "normal",
        std,
        param=f"{stack.token_embedding}.weight",
        zero_row=pad,
        note=note + ("; padding row 0" if pad is not None else ""),
    )


SCHEME = Scheme(
    name=NAME,
    title="T-Fixup",
    options=OPTIONS,
    applies=applies,
    constants=constants,
    plan=plan,
    starts_from_zero=True,
    removes_norms=True,
    aliases=("tfixup", "t_fixup"),
)
