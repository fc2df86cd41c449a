"""DeepNet / DeepNorm (Wang et al. 2022, arXiv 2203.00555): ``LN(alpha * x + G(x))`` on Post-LN
blocks plus Xavier-normal init with gain beta on v, o and the FFN, gain 1 on q and k."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy
from initwatch.errors import SchemeNotApplicableError
from initwatch.schemes.base import (
    Plan,
    check_options,
    depths,
    per_stack,
    slot_inits,
    stacks_to_touch,
)
from initwatch.schemes.report import Change
from initwatch.schemes.structure import add_deepnorm

NAME = "deepnet"
OPTIONS = ("alpha", "beta")


def constants(
    kind: str, n: int | None = None, m: int | None = None, cross: bool = False
) -> dict[str, dict[str, float]]:
    """DeepNet's alpha and beta per stack (paper table, identical in torchscale).

    Args:
        kind: ``"encoder-only"``, ``"decoder-only"`` or ``"encoder-decoder"``.
        n: encoder depth N.
        m: decoder depth M.
        cross: a decoder-only stack whose blocks have cross-attention (a standalone
            ``nn.TransformerDecoder`` fed an external memory): three sublayers per block, so
            the paper's decoder constants (3M)^(1/4) and (12M)^(-1/4) apply.

    Example::

        >>> c = constants("decoder-only", m=24)
        >>> round(c["decoder"]["alpha"], 4), round(c["decoder"]["beta"], 4)
        (2.6321, 0.2686)
    """
    if kind == "encoder-only":
        return {"encoder": {"alpha": (2 * n) ** 0.25, "beta": (8 * n) ** -0.25}}
    if kind == "decoder-only" and cross:
        return {"decoder": {"alpha": (3 * m) ** 0.25, "beta": (12 * m) ** -0.25}}
    if kind == "decoder-only":
        return {"decoder": {"alpha": (2 * m) ** 0.25, "beta": (8 * m) ** -0.25}}
    if kind == "encoder-decoder":
        return {
            "encoder": {
                "alpha": 0.81 * (n**4 * m) ** (1 / 16),
                "beta": 0.87 * (n**4 * m) ** (-1 / 16),
            },
            "decoder": {"alpha": (3 * m) ** 0.25, "beta": (12 * m) ** -0.25},
        }
    raise ValueError(f"kind={kind!r}: expected encoder-only, decoder-only or encoder-decoder")


# Gain beta on v, o and the FFN in / out matrices; gain 1 on q, k and on a GLU gate (torchscale
# scales fc1/fc2 but not the gate, keeping the FFN output proportional to beta^2).
_BETA_ROLES = ("v", "o", "xv", "xo", "ffn_in", "ffn_out")
_ONE_ROLES = ("q", "k", "xq", "xk", "ffn_gate")


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan DeepNet for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    if anatomy.layout != "post":
        placement = {"pre": "Pre-LN", "none": "has no norms"}.get(anatomy.layout, anatomy.layout)
        raise SchemeNotApplicableError(
            f"DeepNet does not apply to {anatomy.model_class} ({anatomy.family}): it is "
            f"{placement}. DeepNorm rescales the skip inside the LayerNorm that follows each "
            "residual add, LN(alpha*x + G(x)); a Pre-LN block has no norm after the add, and "
            "there alpha would only grow the residual stream geometrically with depth. "
            "Use scheme='t-fixup' or scheme='rezero', which apply to Pre-LN models."
        )
    d = depths(anatomy, options)
    cross = any(sub.kind == "cross" for b in anatomy.blocks for sub in b.sublayers)
    consts = constants(anatomy.kind, d.get("encoder"), d.get("decoder"), cross)
    for stack, vals in consts.items():
        vals["alpha"] = per_stack(options.get("alpha"), stack, vals["alpha"], "alpha")
        vals["beta"] = per_stack(options.get("beta"), stack, vals["beta"], "beta")
        if vals["alpha"] <= 0:
            raise ValueError(f"alpha={vals['alpha']} for the {stack}: DeepNorm needs alpha > 0")
    touch = stacks_to_touch(anatomy, options)
    p = Plan(NAME, {k: v for k, v in consts.items() if k in touch})
    for stack in anatomy.stacks:
        if stack.kind not in touch:
            continue
        alpha, beta = consts[stack.kind]["alpha"], consts[stack.kind]["beta"]
        gains = {r: beta for r in _BETA_ROLES} | {r: 1.0 for r in _ONE_ROLES}
        notes = {r: "gain beta" for r in _BETA_ROLES} | {r: "gain 1" for r in _ONE_ROLES}
        p.inits += slot_inits(anatomy, stack.blocks, gains, "xavier_normal", notes)
        for block in stack.blocks:
            norms = [sub.norm.path for sub in block.sublayers if sub.norm is not None]
            change = Change(
                block.path,
                "deepnorm_residual",
                "block",
                block.name,
                gain=alpha,
                note=f"LN(alpha*x + G(x)) on {len(norms)} sublayers (alpha in buffer deepnorm_alpha)",
            )
            p.structure.append((change, _deepnorm_step(model, block.path, norms, alpha)))
    return p


def _deepnorm_step(model: nn.Module, path: str, norms: list[str], alpha: float):  # noqa: ANN202
    return lambda: add_deepnorm(model, path, norms, alpha)
