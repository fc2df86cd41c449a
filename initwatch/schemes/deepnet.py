"""DeepNet / DeepNorm (Wang et al. 2022, arXiv 2203.00555): ``LN(alpha * x + G(x))`` on Post-LN
blocks plus Xavier-normal init with gain beta on v, o and the FFN, gain 1 on q and k."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy, Block
from initwatch.errors import SchemeNotApplicableError
from initwatch.schemes.base import (
    Plan,
    bind,
    check_options,
    depths,
    has_cross,
    override,
    refuse,
    slot_inits,
    start_plan,
    value_gains,
)
from initwatch.schemes.report import Change
from initwatch.schemes.spec import Scheme, kind_depths, post_ln_only
from initwatch.schemes.structure import DEEPNORM_BUFFER, add_deepnorm
from initwatch.vocabulary import ModelKind, Role, SublayerKind

NAME = "deepnet"
OPTIONS = ("alpha", "beta")


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False
) -> dict[str, dict[str, float]]:
    """DeepNet's alpha and beta per stack (paper table, identical in torchscale).

    The one place these formulas are written: ``reinit``, the remedies and ``inspect`` read
    them through the scheme registry.

    Args:
        kind: ``"encoder-only"``, ``"decoder-only"`` or ``"encoder-decoder"``.
        depth: blocks per stack, ``{"encoder": N}``, ``{"decoder": M}`` or both.
        cross: a decoder-only stack whose blocks have cross-attention (a standalone
            ``nn.TransformerDecoder`` fed an external memory, a BERT decoder, GPT-2 with
            ``add_cross_attention``): three sublayers per block, so the paper's decoder
            constants (3M)^(1/4) and (12M)^(-1/4) apply.

    Example::

        >>> c = constants("decoder-only", {"decoder": 24})
        >>> round(c["decoder"]["alpha"], 4), round(c["decoder"]["beta"], 4)
        (2.6321, 0.2686)
        >>> round(constants("decoder-only", {"decoder": 6}, cross=True)["decoder"]["alpha"], 4)
        2.0598
    """
    stacks = kind_depths(kind, depth)
    if kind == "encoder-decoder":
        n, m = stacks["encoder"], stacks["decoder"]
        return {
            "encoder": {
                "alpha": 0.81 * (n**4 * m) ** (1 / 16),
                "beta": 0.87 * (n**4 * m) ** (-1 / 16),
            },
            "decoder": {"alpha": (3 * m) ** 0.25, "beta": (12 * m) ** -0.25},
        }
    ((stack, n),) = stacks.items()
    if stack == "decoder" and cross:
        return {"decoder": {"alpha": (3 * n) ** 0.25, "beta": (12 * n) ** -0.25}}
    return {stack: {"alpha": (2 * n) ** 0.25, "beta": (8 * n) ** -0.25}}


def formulas(kind: ModelKind, cross: bool = False) -> dict[str, dict[str, str]]:
    """The formulas behind :func:`constants`, as text, for messages (same cases).

    Example::

        >>> formulas("decoder-only", cross=True)["decoder"]["alpha"]
        '(3M)^(1/4)'
    """
    if kind == "encoder-decoder":
        return {
            "encoder": {"alpha": "0.81(N^4 M)^(1/16)", "beta": "0.87(N^4 M)^(-1/16)"},
            "decoder": {"alpha": "(3M)^(1/4)", "beta": "(12M)^(-1/4)"},
        }
    if kind == "decoder-only" and cross:
        return {"decoder": {"alpha": "(3M)^(1/4)", "beta": "(12M)^(-1/4)"}}
    stack = "decoder" if kind == "decoder-only" else "encoder"
    return {stack: {"alpha": "(2N)^(1/4)", "beta": "(8N)^(-1/4)"}}


def applies(anatomy: Anatomy) -> str | None:
    """None when DeepNet applies (a Post-LN model), else the reason.

    Example::

        >>> from initwatch import inspect, zoo
        >>> applies(inspect(zoo.build("gpt2")))
        'Pre-LN: DeepNet needs Post-LN'
    """
    return post_ln_only(anatomy, "DeepNet needs Post-LN")


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan DeepNet for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    refuse(
        "DeepNet",
        anatomy,
        applies(anatomy),
        "DeepNorm rescales the skip inside the LayerNorm that follows each residual add, "
        "LN(alpha*x + G(x)); a Pre-LN block has no norm after the add, and there alpha "
        "would only grow the residual stream geometrically with depth. Use "
        "scheme='t-fixup' or scheme='rezero', which apply to Pre-LN models.",
    )
    refuse_uncalled_blocks(model, anatomy, "DeepNet")
    consts = constants(anatomy.kind, depths(anatomy, options), has_cross(anatomy))
    override(consts, options, "alpha", "DeepNorm needs alpha > 0")
    override(consts, options, "beta")
    p, stacks = start_plan(NAME, anatomy, options, consts)
    for stack in stacks:
        alpha, beta = consts[stack.kind]["alpha"], consts[stack.kind]["beta"]
        gains, notes = value_gains(beta, "gain beta")  # beta on v, o and the FFN; 1 on q, k
        p.inits += slot_inits(anatomy, stack.blocks, gains, "xavier_normal", notes)
        for block in stack.blocks:
            norms = deepnorm_sublayers(block)
            change = Change(
                block.path,
                "deepnorm_residual",
                "block",
                block.name,
                gain=alpha,
                note=f"LN(alpha*x + G(x)) on {len(norms)} sublayers (alpha in buffer deepnorm_alpha)",
            )
            p.structure.append((change, bind(add_deepnorm, model, block.path, norms, alpha)))
    return p


def refuse_uncalled_blocks(model: nn.Module, anatomy: Anatomy, title: str) -> None:
    """Refuse a skip-scaling scheme (DeepNet, Admin) on blocks the model never calls (an
    x-transformers-style list described with ``group=``): the block hook would never run."""
    containers = [
        b.path
        for b in anatomy.blocks
        if isinstance(model.get_submodule(b.path), (nn.ModuleList, nn.ModuleDict))
    ]
    if containers:
        raise SchemeNotApplicableError(
            f"{title} cannot see the input of block {containers[0]!r}: it is an "
            f"{type(model.get_submodule(containers[0])).__name__}, which the model iterates but "
            "never calls, so the skip hook would never run (an x-transformers-style list "
            "described with group=...). Use scheme='t-fixup' or scheme='rezero'."
        )


_ENTRY_ROLES: dict[SublayerKind, Role] = {"attn": "q", "cross": "xq", "ffn": "ffn_in"}


def deepnorm_sublayers(block: Block) -> list[tuple[str | None, str]]:
    """``(entry, norm)`` per normed sublayer of ``block``: the module that first reads the
    sublayer's input (its q / xq / ffn_in projection, None if it has none) and its norm.

    Example::

        >>> from initwatch import inspect, zoo
        >>> deepnorm_sublayers(inspect(zoo.build("bert")).blocks[0])[1]
        ('bert.encoder.layer.0.intermediate.dense', 'bert.encoder.layer.0.output.LayerNorm')
    """
    out = []
    for sub in block.sublayers:
        if sub.norm is None:
            continue
        role = _ENTRY_ROLES.get(sub.kind)
        entry = next((s.module for s in sub.slots if s.role == role), None)
        out.append((entry, sub.norm.path))
    return out


def rebuild(model: nn.Module, block: Block, state: Mapping[str, Any]) -> Change | None:
    """Re-attach DeepNorm to ``block`` of a fresh model when the checkpoint holds its alpha."""
    key = f"{block.path}.{DEEPNORM_BUFFER}"
    if key not in state:
        return None
    alpha = float(state[key])
    add_deepnorm(model, block.path, deepnorm_sublayers(block), alpha)
    return Change(block.path, "deepnorm_residual", "block", block.name, alpha)


SCHEME = Scheme(
    name=NAME,
    title="DeepNet",
    options=OPTIONS,
    applies=applies,
    constants=constants,
    plan=plan,
    rebuild=rebuild,
    aliases=("deepnorm",),
    keys=(DEEPNORM_BUFFER,),
    featured=True,
)
