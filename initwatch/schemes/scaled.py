"""Scaled init for Pre-LN training from scratch (GPT-2, Radford et al. 2019; Megatron-LM;
``karpathy/nanoGPT``): every matrix N(0, sigma), the output projection of each residual branch
N(0, sigma / sqrt(N_res)), N_res the residual branches of the stack (2 per block, 3 with
cross-attention)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy
from initwatch.schemes.base import Init, Plan, check_options, depths, has_cross, refuse, start_plan
from initwatch.schemes.spec import Scheme
from initwatch.vocabulary import ModelKind, Role

NAME = "scaled"
OPTIONS = ("std",)
SIGMA = 0.02  # GPT-2 / nanoGPT / Megatron-LM's base std
_BRANCH_OUT: tuple[Role, ...] = (
    "o",
    "xo",
    "ffn_out",
)  # the projections whose output is added to the stream


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False, sigma: float = SIGMA
) -> dict[str, dict[str, float]]:
    """sigma, the residual-branch count N_res and the branch-output std sigma / sqrt(N_res) per
    stack: N_res = 2N for an encoder or a decoder-only stack, 3M for a decoder with
    cross-attention (GPT-2 and Megatron count 2 per layer; the third branch is counted the same
    way).

    Example::

        >>> c = constants("decoder-only", {"decoder": 12})["decoder"]
        >>> c["branches"], round(c["residual_std"], 5)
        (24.0, 0.00408)
        >>> constants("encoder-decoder", {"encoder": 6, "decoder": 6})["decoder"]["branches"]
        18.0
    """
    out = {}
    for stack, n in depth.items():
        if not n:
            continue
        per = 3 if stack == "decoder" and (cross or kind == "encoder-decoder") else 2
        branches = float(per * n)
        out[stack] = {
            "std": sigma,
            "branches": branches,
            "residual_std": sigma / math.sqrt(branches),
        }
    return out


def applies(anatomy: Anatomy) -> str | None:
    """None for Pre-LN models (the GPT-2 family's layout), else the reason.

    Example::

        >>> from initwatch import inspect, zoo
        >>> applies(inspect(zoo.build("gpt2"))) is None
        True
        >>> applies(inspect(zoo.build("bert")))
        'Post-LN: the scaled init is for Pre-LN (use deepnet, admin or ds-init)'
    """
    if anatomy.layout == "pre":
        return None
    if anatomy.layout == "post":
        return "Post-LN: the scaled init is for Pre-LN (use deepnet, admin or ds-init)"
    return f"layout {anatomy.layout}: the scaled init is for Pre-LN"


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan the scaled init for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    refuse(
        "the scaled init",
        anatomy,
        applies(anatomy),
        "It keeps a Pre-LN residual stream's variance from growing with depth; a Post-LN "
        "block renormalizes after every add, where scheme='deepnet', 'admin' or 'ds-init' "
        "address depth instead.",
    )
    sigma = options.get("std", SIGMA)
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or sigma <= 0:
        raise ValueError(f"std={sigma!r}: give the base standard deviation, e.g. std=0.02")
    consts = constants(anatomy.kind, depths(anatomy, options), has_cross(anatomy), float(sigma))
    p, stacks = start_plan(NAME, anatomy, options, consts)
    for stack in stacks:
        c = consts[stack.kind]
        res_note = f"sigma/sqrt(N_res={c['branches']:g}): residual-branch output"
        for block in stack.blocks:
            for slot in block.slots:
                out = slot.role in _BRANCH_OUT
                p.inits.append(
                    Init(
                        slot.role,
                        block.name,
                        "normal",
                        c["residual_std"] if out else c["std"],
                        slot=slot,
                        note=res_note if out else "sigma",
                    )
                )
        for role, path in (
            ("token_embedding", stack.token_embedding),
            ("position_embedding", stack.position_embedding),
        ):
            module = model.get_submodule(path) if path else None
            if isinstance(module, nn.Embedding):
                pad = module.padding_idx
                p.inits.append(
                    Init(
                        role,
                        stack.kind,
                        "normal",
                        c["std"],
                        param=f"{path}.weight",
                        zero_row=pad,
                        note="sigma" + ("; padding row 0" if pad is not None else ""),
                    )
                )
    return p


SCHEME = Scheme(
    name=NAME,
    title="scaled init (GPT-2 / Megatron)",
    options=OPTIONS,
    applies=applies,
    constants=constants,
    plan=plan,
    aliases=("gpt2", "megatron", "scaled-init", "scaled_init"),
)
