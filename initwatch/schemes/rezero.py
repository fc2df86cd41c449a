"""ReZero (Bachlechner et al. 2020, arXiv 2003.04887): ``x + alpha * G(x)`` with one trainable
scalar alpha per block, initialized to 0 and shared by the block's sublayers; norms removed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy, Block
from initwatch.schemes.base import Plan, check_options, norm_removals, start_plan
from initwatch.schemes.report import Change
from initwatch.schemes.spec import Scheme, everywhere
from initwatch.schemes.structure import REZERO_PARAM, add_rezero, hook_rezero
from initwatch.vocabulary import ModelKind, SublayerKind

NAME = "rezero"
OPTIONS = ("per", "norms")


def gate_names(sublayer_kinds: list[SublayerKind], per: str) -> list[str]:
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


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False
) -> dict[str, dict[str, float]]:
    """ReZero's one constant: every gate starts at 0, in every stack.

    Example::

        >>> constants("encoder-decoder", {"encoder": 6, "decoder": 6})
        {'encoder': {'alpha_init': 0.0}, 'decoder': {'alpha_init': 0.0}}
    """
    return {k: {"alpha_init": 0.0} for k, v in depth.items() if v}


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan ReZero for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    per = options.get("per", "block")
    p, stacks = start_plan(NAME, anatomy, options, constants(anatomy.kind, anatomy.depth))
    for block in (b for s in stacks for b in s.blocks):
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
    p.structure += norm_removals(model, stacks, options.get("norms", "all"))
    return p


def _gate_step(model: nn.Module, path: str, gates: list[str], outputs: list[str]):  # noqa: ANN202
    def step() -> None:
        add_rezero(model, path, list(dict.fromkeys(gates)))
        for gate, out in zip(gates, outputs, strict=True):
            hook_rezero(model, path, gate, out)

    return step


def _gates(block_path: str, state: Mapping[str, Any], kinds: list[SublayerKind]) -> list[str]:
    if f"{block_path}.{REZERO_PARAM}" in state:
        return [REZERO_PARAM] * len(kinds)
    per = [f"{REZERO_PARAM}_{k}" for k in kinds]
    return per if all(f"{block_path}.{g}" in state for g in per) else []


def rebuild(model: nn.Module, block: Block, state: Mapping[str, Any]) -> Change | None:
    """Re-attach the gates of ``block`` on a fresh model when the checkpoint holds them."""
    gates = _gates(block.path, state, [s.kind for s in block.sublayers])
    if not gates:
        return None
    _gate_step(model, block.path, gates, [s.output for s in block.sublayers])()
    return Change(block.path, "rezero_gate", "block", block.name)


SCHEME = Scheme(
    name=NAME,
    title="ReZero",
    options=OPTIONS,
    applies=everywhere,
    constants=constants,
    plan=plan,
    starts_from_zero=True,
    rebuild=rebuild,
    removes_norms=True,
    keys=(REZERO_PARAM,),
    featured=True,
)
