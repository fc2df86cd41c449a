"""ReZero (Bachlechner et al. 2020, arXiv 2003.04887): ``x + alpha * G(x)`` with one trainable
scalar alpha per block, initialized to 0 and shared by the block's sublayers; norms removed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy
from initwatch.schemes.base import Plan, check_options, norm_removals, stacks_to_touch
from initwatch.schemes.report import Change
from initwatch.schemes.structure import REZERO_PARAM, add_rezero, hook_rezero

NAME = "rezero"
OPTIONS = ("per", "norms")


def gate_names(sublayer_kinds: list[str], per: str) -> list[str]:
    """Gate parameter name for each sublayer: one shared ``rezero_alpha`` (``per="block"``) or
    ``rezero_alpha_<kind>`` each (``per="sublayer"``).

    Example::

        >>> gate_names(["attn", "ffn"], "sublayer")
        ['rezero_alpha_attn', 'rezero_alpha_ffn']
    """
    if per == "block":
        return [REZERO_PARAM] * len(sublayer_kinds)
    if per == "sublayer":
        return [f"{REZERO_PARAM}_{k}" for k in sublayer_kinds]
    raise ValueError(f"per={per!r}: choose 'block' (the paper) or 'sublayer'")


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan ReZero for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    per = options.get("per", "block")
    touch = stacks_to_touch(anatomy, options)
    p = Plan(NAME, {k: {"alpha_init": 0.0} for k in touch})
    for block in (b for s in anatomy.stacks if s.kind in touch for b in s.blocks):
        gates = gate_names([s.kind for s in block.sublayers], per)
        outputs = [s.output for s in block.sublayers]
        change = Change(
            f"{block.path}.{'/'.join(dict.fromkeys(gates))}",
            "rezero_gate",
            "block",
            block.name,
            std=0.0,
            note=f"x + alpha*G(x) on {len(outputs)} sublayers; alpha trainable, init 0",
        )
        p.structure.append((change, _gate_step(model, block.path, gates, outputs)))
    p.structure += norm_removals(model, anatomy, touch, options.get("norms", "all"))
    return p


def _gate_step(model: nn.Module, path: str, gates: list[str], outputs: list[str]):  # noqa: ANN202
    def step() -> None:
        add_rezero(model, path, list(dict.fromkeys(gates)))
        for gate, out in zip(gates, outputs, strict=True):
            hook_rezero(model, path, gate, out)

    return step
