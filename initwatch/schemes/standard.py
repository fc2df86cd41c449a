"""Standard re-initialization: every block weight re-drawn with Xavier (Glorot) or Kaiming (He),
with the gain of the activation that follows it.

The cure for identical layers (PyTorch issue #72253: ``nn.TransformerEncoder`` deep-copies one
layer N times, so all its layers start with the same weights; ``inspect`` says so): every block
gets its own draw. Nothing else changes: norms, residuals, embeddings stay as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy, Block, Slot
from initwatch.schemes.base import Plan, check_options, init_action, slot_inits, start_plan
from initwatch.schemes.gains import activated_role, activation_gain, block_activation
from initwatch.schemes.spec import Scheme, everywhere
from initwatch.vocabulary import ModelKind

OPTIONS = ("distribution", "activation")
_DEFAULT_DIST = {"xavier": "uniform", "kaiming": "normal"}  # torch.nn.Transformer / He et al.


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False
) -> dict[str, dict[str, float]]:
    """No depth-dependent constant: the gains come from the activation (see :func:`plan`).

    Example::

        >>> constants("encoder-only", {"encoder": 6})
        {'encoder': {}}
    """
    return {k: {} for k, v in depth.items() if v}


def _kaiming_std(slot: Slot, gain: float) -> float:
    return gain / math.sqrt(slot.fan_in)  # fan_in mode, per logical matrix


def _gain(model: nn.Module, block: Block, given: Any) -> tuple[float, str, str]:
    """(gain, activation, how) for the layer followed by the block's activation."""
    act = given if given is not None else block_activation(model, block)
    if act is None:
        return 1.0, "none found", "linear gain 1 (no activation found in the feed-forward)"
    gain, how = activation_gain(act)
    name = act if isinstance(act, str) else getattr(act, "__name__", type(act).__name__)
    return gain, str(name), how


def _planner(name: str):  # noqa: ANN202
    def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
        """Plan the re-initialization (see :func:`initwatch.reinit` for the options)."""
        check_options(name, options, OPTIONS)
        action = init_action(name, options.get("distribution", _DEFAULT_DIST[name]))
        given = options.get("activation")
        if isinstance(given, str):
            activation_gain(given)  # an unknown name is refused before anything is touched
        p, stacks = start_plan(name, anatomy, options, constants(anatomy.kind, anatomy.depth))
        std = _kaiming_std if name == "kaiming" else None
        for stack in stacks:
            for block in stack.blocks:
                gain, act, how = _gain(model, block, given)
                p.constants[stack.kind]["activation_gain"] = gain
                role = activated_role(block)
                gains = {s.role: 1.0 for s in block.slots} | {role: gain}
                notes = {s.role: "linear: gain 1" for s in block.slots}
                notes[role] = f"followed by {act}: gain {gain:.4g} = {how}"
                p.inits += slot_inits(anatomy, [block], gains, action, notes, std=std)
        return p

    return plan


XAVIER = Scheme(
    name="xavier",
    title="Xavier re-initialization",
    options=OPTIONS,
    applies=everywhere,
    constants=constants,
    plan=_planner("xavier"),
    aliases=("glorot",),
)
KAIMING = Scheme(
    name="kaiming",
    title="Kaiming re-initialization",
    options=OPTIONS,
    applies=everywhere,
    constants=constants,
    plan=_planner("kaiming"),
    aliases=("he",),
)
