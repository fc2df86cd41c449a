"""SkipInit (De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity
Function in Deep Networks", NeurIPS 2020, arXiv 2002.10444) for residual networks: a trainable
scalar alpha at the end of each residual branch, initialized to 0, and no normalization."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy, Block
from initwatch.schemes import residual
from initwatch.schemes.base import Plan, check_options, refuse
from initwatch.schemes.report import Change
from initwatch.schemes.spec import Scheme
from initwatch.schemes.structure import SKIPINIT_PARAM, add_scalars, hook_rezero
from initwatch.vocabulary import ModelKind

NAME = "skipinit"
OPTIONS = ("blocks", "layers", "norms", "alpha_init")


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False
) -> dict[str, dict[str, float]]:
    """SkipInit's one constant: every branch gate starts at 0.

    Example::

        >>> constants("encoder-only", {"encoder": 8})
        {'encoder': {'alpha_init': 0.0}}
    """
    return {k: {"alpha_init": 0.0} for k, v in depth.items() if v}


def applies(anatomy: Anatomy) -> str | None:
    """None for residual networks read by :func:`initwatch.schemes.residual.read`; for a
    transformer the reason (SkipInit is ReZero with a gate per sublayer there).

    Example::

        >>> from initwatch import inspect, zoo
        >>> applies(inspect(zoo.build("bert")))
        "transformer blocks: SkipInit there is ReZero with one gate per sublayer (scheme='rezero', per='sublayer')"
    """
    if anatomy.family == "resnet":
        return None
    return (
        "transformer blocks: SkipInit there is ReZero with one gate per sublayer "
        "(scheme='rezero', per='sublayer')"
    )


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan SkipInit (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    refuse("SkipInit", anatomy, applies(anatomy))
    alpha = options.get("alpha_init", 0.0)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise ValueError(f"alpha_init={alpha!r}: give a number (0, the paper's default)")
    consts = constants(anatomy.kind, anatomy.depth)
    consts["encoder"]["alpha_init"] = float(alpha)
    p = Plan(NAME, consts)
    branches = [residual.branch_of(model, b.path, options.get("layers")) for b in anatomy.blocks]
    p.structure += residual.removal_steps(model, anatomy, branches, options.get("norms", "all"))
    for block, branch in zip(anatomy.blocks, branches, strict=True):
        change = Change(
            f"{block.path}.{SKIPINIT_PARAM}",
            "skipinit_gate",
            "block",
            block.name,
            std=float(alpha),
            note=f"x + alpha*F(x), alpha on {branch.output}; trainable, init {alpha:g}",
        )
        p.structure.append((change, _gate(model, block.path, branch.output, float(alpha))))
    return p


def _gate(model: nn.Module, path: str, output: str, alpha: float):  # noqa: ANN202
    def step() -> None:
        add_scalars(model, path, {SKIPINIT_PARAM: alpha})
        hook_rezero(model, path, SKIPINIT_PARAM, output)

    return step


def rebuild(model: nn.Module, block: Block, state: Mapping[str, Any]) -> Change | None:
    """Re-attach the gate (and remove the norms the checkpoint lacks) on a fresh model."""
    if f"{block.path}.{SKIPINIT_PARAM}" not in state:
        return None
    branch = residual.rebuild_branch(model, block.path, state)
    _gate(model, block.path, branch.output, 0.0)()
    return Change(block.path, "skipinit_gate", "block", block.name)


SCHEME = Scheme(
    name=NAME,
    title="SkipInit",
    options=OPTIONS,
    applies=applies,
    constants=constants,
    plan=plan,
    starts_from_zero=True,
    rebuild=rebuild,
    removes_norms=True,
    keys=(SKIPINIT_PARAM,),
    read=residual.read,
    aliases=("skip-init", "skip_init"),
)
