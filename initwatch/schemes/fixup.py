"""Fixup (Zhang, Dauphin, Ma 2019, "Fixup Initialization: Residual Learning Without
Normalization", ICLR 2019, arXiv 1901.09321) for residual networks without normalization:

1. the last layer of each residual branch and the classification layer start at 0;
2. the other branch layers get He init (fan_out, as the official code) scaled by
   L^(-1/(2m-2)), L the number of residual branches, m the layers per branch;
3. a scalar multiplier (init 1) per branch and scalar biases (init 0) before each layer and
   after each layer (before its activation), as the official ``FixupBasicBlock`` /
   ``FixupBottleneck``; normalization removed;
4. the official ImageNet model's scalar biases outside the blocks: ``fixup_bias1`` after the
   stem layer (``relu(conv1(x) + bias1)``) and ``fixup_bias2`` before the head
   (``fc(x + bias2)``), registered on those layers, so a checkpoint names where they go.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy, Block
from initwatch.errors import SchemeNotApplicableError
from initwatch.schemes import residual
from initwatch.schemes.base import Init, Plan, check_options, refuse
from initwatch.schemes.report import Change
from initwatch.schemes.spec import Scheme
from initwatch.schemes.structure import (
    FIXUP_PREFIX,
    FixupInput,
    FixupOutput,
    add_scalars,
)
from initwatch.vocabulary import ModelKind

NAME = "fixup"
OPTIONS = ("blocks", "layers", "head")
SCALE = FIXUP_PREFIX + "scale"
STEM_BIAS = FIXUP_PREFIX + "bias1"  # on the stem layer, added to its output
HEAD_BIAS = FIXUP_PREFIX + "bias2"  # on the head, added to its input


def branch_scale(branches: int, m: int) -> float:
    """Fixup's factor on the branch layers before the last: ``L^(-1/(2m-2))``.

    Example::

        >>> round(branch_scale(12, 2), 4), round(branch_scale(12, 3), 4)  # 2N branches, N=6
        (0.2887, 0.5373)
    """
    if m < 2:
        raise ValueError(f"a Fixup branch needs at least 2 weight layers, got m={m}")
    return branches ** (-1.0 / (2 * m - 2))


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False, m: int = 2
) -> dict[str, dict[str, float]]:
    """L (the residual branches), m and the branch-layer scale.

    Example::

        >>> constants("encoder-only", {"encoder": 8})["encoder"]["scale"]
        0.3535533905932738
    """
    return {
        k: {"branches": float(v), "layers_per_branch": float(m), "scale": branch_scale(v, m)}
        for k, v in depth.items()
        if v
    }


def applies(anatomy: Anatomy) -> str | None:
    """None for residual networks read by :func:`initwatch.schemes.residual.read`; for a
    transformer the reason.

    Example::

        >>> from initwatch import inspect, zoo
        >>> applies(inspect(zoo.build("bert")))
        "transformer blocks: Fixup's recipe for transformers is T-Fixup (scheme='t-fixup')"
    """
    if anatomy.family == "resnet":
        return None
    return "transformer blocks: Fixup's recipe for transformers is T-Fixup (scheme='t-fixup')"


def scalar_names(m: int) -> list[str]:
    """The block's scalars: ``fixup_bias<i>a`` (before layer i), ``fixup_bias<i>b`` (after it)
    and ``fixup_scale``, as the official blocks name them.

    Example::

        >>> scalar_names(2)
        ['fixup_bias1a', 'fixup_bias1b', 'fixup_bias2a', 'fixup_bias2b', 'fixup_scale']
    """
    return [f"{FIXUP_PREFIX}bias{i}{s}" for i in range(1, m + 1) for s in "ab"] + [SCALE]


def _fan_out(weight: Any) -> int:
    return int(weight.shape[0]) * int(math.prod(weight.shape[2:]))


def _first_weight(model: nn.Module, path: str) -> str | None:
    module = model.get_submodule(path)
    for name, sub in module.named_modules():
        if isinstance(sub, residual.WEIGHTS):
            return f"{path}.{name}" if name else path
    return None


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan Fixup (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    refuse("Fixup", anatomy, applies(anatomy))
    branches = [residual.branch_of(model, b.path, options.get("layers")) for b in anatomy.blocks]
    depths = {b.depth for b in branches}
    if len(depths) != 1:
        raise SchemeNotApplicableError(
            f"Fixup: the branches have different numbers of layers {sorted(depths)}; the "
            "scale L^(-1/(2m-2)) needs one m (describe the blocks with layers=...)"
        )
    m = depths.pop()
    n_branches = len(branches)
    consts = constants(anatomy.kind, {"encoder": n_branches}, m=m)
    scale = consts["encoder"]["scale"]
    p = Plan(NAME, consts)
    for block, branch in zip(anatomy.blocks, branches, strict=True):
        for i, path in enumerate(branch.layers):
            weight = model.get_submodule(path).weight
            bias = (
                f"{path}.bias"
                if getattr(model.get_submodule(path), "bias", None) is not None
                else None
            )
            if i == m - 1:
                p.inits.append(
                    Init(
                        f"branch{i + 1}",
                        block.name,
                        "zeros",
                        0.0,
                        param=f"{path}.weight",
                        bias=bias,
                        note="last layer of the branch: 0",
                    )
                )
                continue
            std = math.sqrt(2.0 / _fan_out(weight)) * scale
            note = f"He (fan_out) x L^(-1/(2m-2)) = {scale:.4g} (L={n_branches}, m={m})"
            p.inits.append(
                Init(
                    f"branch{i + 1}",
                    block.name,
                    "kaiming_normal",
                    std,
                    gain=scale,
                    param=f"{path}.weight",
                    bias=bias,
                    note=note,
                )
            )
        if branch.shortcut is not None:
            shortcut = _first_weight(model, branch.shortcut)
            if shortcut is not None:
                weight = model.get_submodule(shortcut).weight
                p.inits.append(
                    Init(
                        "shortcut",
                        block.name,
                        "kaiming_normal",
                        math.sqrt(2.0 / _fan_out(weight)),
                        gain=1.0,
                        param=f"{shortcut}.weight",
                        note="projection shortcut: He (fan_out), not scaled",
                    )
                )
    given = options.get("head", "auto")
    head: str | None = residual.head_of(model, anatomy) if given == "auto" else given
    if head is not None:
        module = model.get_submodule(head)
        bias = f"{head}.bias" if getattr(module, "bias", None) is not None else None
        p.inits.append(
            Init(
                "head",
                "head",
                "zeros",
                0.0,
                param=f"{head}.weight",
                bias=bias,
                note="classification layer: 0",
            )
        )
    p.structure += residual.removal_steps(model, anatomy, branches, "all")
    stem = stem_of(model, anatomy, head)
    for outer, name, where in ((stem, STEM_BIAS, "after"), (head, HEAD_BIAS, "before")):
        if outer is not None:
            owner = "stem" if name == STEM_BIAS else "head"
            note = f"scalar bias {name} (init 0) {where} it"
            change = Change(outer, "fixup_scalars", "layer", owner, note=note)
            p.structure.append((change, _outer_step(model, outer, name)))
    for block, branch in zip(anatomy.blocks, branches, strict=True):
        change = Change(
            block.path,
            "fixup_scalars",
            "block",
            block.name,
            note=f"{2 * m} scalar biases (init 0) around {m} layers, multiplier {SCALE} (init 1)",
        )
        p.structure.append((change, _step(model, block.path, branch)))
    return p


def stem_of(model: nn.Module, anatomy: Anatomy, head: str | None) -> str | None:
    """The stem layer: the first convolution / linear outside the blocks, before the first
    block and not the head (torchvision ``conv1``); None when there is none.

    Example::

        >>> from initwatch import zoo
        >>> model = zoo.resnet()
        >>> stem_of(model, residual.read(model, {}), "fc")
        'conv1'
    """
    first = anatomy.blocks[0].path if anatomy.blocks else None
    inside = tuple(b.path + "." for b in anatomy.blocks)
    for name, module in model.named_modules():
        if name == first:
            return None
        if (
            name
            and name != head
            and not name.startswith(inside)
            and isinstance(module, residual.WEIGHTS)
        ):
            return name
    return None


def _outer_step(model: nn.Module, path: str, name: str):  # noqa: ANN202
    def step() -> None:
        add_scalars(model, path, {name: 0.0})
        module = model.get_submodule(path)
        if name == STEM_BIAS:
            module.register_forward_hook(FixupOutput(module, name))
        else:
            module.register_forward_pre_hook(FixupInput(module, name))

    return step


def _step(
    model: nn.Module, path: str, branch: residual.Branch, values: Mapping[str, Any] | None = None
):  # noqa: ANN202
    def step() -> None:
        names = scalar_names(branch.depth)
        init = {n: (1.0 if n == SCALE else 0.0) for n in names}
        add_scalars(model, path, init)
        block = model.get_submodule(path)
        m = branch.depth
        for i, layer in enumerate(branch.layers, start=1):
            module = model.get_submodule(layer)
            module.register_forward_pre_hook(FixupInput(block, f"{FIXUP_PREFIX}bias{i}a"))
            last = i == m
            module.register_forward_hook(
                FixupOutput(block, f"{FIXUP_PREFIX}bias{i}b", SCALE if last else None)
            )
        if branch.shortcut is not None:
            shortcut = model.get_submodule(branch.shortcut)
            shortcut.register_forward_pre_hook(FixupInput(block, f"{FIXUP_PREFIX}bias1a"))

    return step


def rebuild(model: nn.Module, block: Block, state: Mapping[str, Any]) -> Change | None:
    """Re-attach the scalars and hooks (and remove the norms the checkpoint lacks); with the
    first block, the stem and head biases wherever the checkpoint has them."""
    if f"{block.path}.{SCALE}" not in state:
        return None
    if block.index == 0:
        for key in state:
            path, _, leaf = key.rpartition(".")
            if leaf in (STEM_BIAS, HEAD_BIAS) and path:
                _outer_step(model, path, leaf)()
    branch = residual.rebuild_branch(model, block.path, state)
    _step(model, block.path, branch)()
    return Change(block.path, "fixup_scalars", "block", block.name)


SCHEME = Scheme(
    name=NAME,
    title="Fixup",
    options=OPTIONS,
    applies=applies,
    constants=constants,
    plan=plan,
    starts_from_zero=True,
    rebuild=rebuild,
    removes_norms=True,
    keys=(FIXUP_PREFIX,),
    read=residual.read,
)
