"""DS-Init (Zhang, Titov, Sennrich 2019, "Improving Deep Transformer with Depth-Scaled
Initialization and Merged Attention", EMNLP 2019, arXiv 1908.11365): every weight matrix of
layer l (1-based, per stack) Xavier-uniform with its bound shrunk with depth; Post-LN, norms
kept, no residual change.

The official code (``bzhangGo/zero``) and the paper's formula disagree on the exponent: the code
scales the *variance* by l^(-1/2) (bound x l^(-1/4)), the formula the bound by l^(-1/2). The
default is the code's (it produced the published BLEU); ``exponent="paper"`` gives the formula.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy
from initwatch.schemes.base import Plan, check_options, override, refuse, slot_inits, start_plan
from initwatch.schemes.spec import Scheme, post_ln_only
from initwatch.vocabulary import ModelKind

NAME = "ds-init"
OPTIONS = ("exponent", "alpha")
EXPONENTS = {"code": -0.25, "paper": -0.5}  # on the uniform bound


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False, exponent: str = "code"
) -> dict[str, dict[str, float]]:
    """alpha (the multiplier on the Xavier bound) and the depth exponent per stack; layer l of
    a stack gets the Xavier gain alpha * l^exponent.

    Example::

        >>> constants("encoder-decoder", {"encoder": 6, "decoder": 6})["decoder"]
        {'alpha': 1.0, 'exponent': -0.25}
        >>> constants("encoder-only", {"encoder": 6}, exponent="paper")["encoder"]["exponent"]
        -0.5
    """
    if exponent not in EXPONENTS:
        raise ValueError(
            f"exponent={exponent!r}: choose 'code' (the official code's l^-1/4 on the bound, "
            "default) or 'paper' (the paper's l^-1/2)"
        )
    return {k: {"alpha": 1.0, "exponent": EXPONENTS[exponent]} for k, v in depth.items() if v}


def layer_gain(layer: int, alpha: float, exponent: float) -> float:
    """The Xavier gain of the matrices of layer ``layer`` (1-based): ``alpha * layer^exponent``.

    Example::

        >>> round(layer_gain(12, 1.0, -0.25), 3), round(layer_gain(12, 1.0, -0.5), 3)
        (0.537, 0.289)
    """
    return alpha * layer**exponent


def applies(anatomy: Anatomy) -> str | None:
    """None for Post-LN models, else the reason.

    Example::

        >>> from initwatch import inspect, zoo
        >>> applies(inspect(zoo.build("gpt2")))
        'Pre-LN: DS-Init is for Post-LN (use scaled, t-fixup or rezero)'
    """
    return post_ln_only(anatomy, "DS-Init is for Post-LN (use scaled, t-fixup or rezero)")


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan DS-Init for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    refuse(
        "DS-Init",
        anatomy,
        applies(anatomy),
        "It counters the gradient decay of deep Post-LN stacks (the LayerNorm after each add "
        "divides the gradient by the growing residual sum); a Pre-LN stack does not have it.",
    )
    which = options.get("exponent", "code")
    consts = constants(anatomy.kind, anatomy.depth, exponent=which)
    p, stacks = start_plan(NAME, anatomy, options, consts)
    override(p.constants, options, "alpha", "give alpha > 0")
    source = "official code" if which == "code" else "paper"
    for stack in stacks:
        c = p.constants[stack.kind]
        for block in stack.blocks:
            layer = block.index + 1
            gain = layer_gain(layer, c["alpha"], c["exponent"])
            gains = {s.role: gain for s in block.slots}
            text = f"l={layer}: gain alpha*l^{c['exponent']:g} ({source})"
            notes = {s.role: text for s in block.slots}
            p.inits += slot_inits(anatomy, [block], gains, "xavier_uniform", notes)
    return p


SCHEME = Scheme(
    name=NAME,
    title="DS-Init",
    options=OPTIONS,
    applies=applies,
    constants=constants,
    plan=plan,
    aliases=("dsinit", "ds_init"),
)
