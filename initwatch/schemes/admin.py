"""Admin (Liu, Liu, Gao, Chen, Han 2020, "Understanding the Difficulty of Training Transformers",
EMNLP 2020, arXiv 2004.08249): ``LN(x * omega + G(x))`` on Post-LN blocks, omega a vector per
sublayer; weights keep their init.

omega comes from the closed form of the authors' ``admin-torch`` by default (no data pass),
``omega = sqrt((n + 1) / ln(n + 1) - 1)`` for the O(log n) output-change target, n the residual
sublayers of the stack; or from the original one-batch profiling of ``Transformer-Clinic``
(``profile_batch=``). The residual is computed exactly by DeepNet's hooks
(:func:`~initwatch.schemes.structure.add_admin`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from initwatch.anatomy.model import Anatomy, Block
from initwatch.schemes.base import (
    Plan,
    bind,
    check_options,
    depths,
    has_cross,
    override,
    refuse,
    start_plan,
)
from initwatch.schemes.deepnet import deepnorm_sublayers, refuse_uncalled_blocks
from initwatch.schemes.report import Change
from initwatch.schemes.spec import Scheme, post_ln_only
from initwatch.schemes.structure import (
    _RESIDUAL_ATTR,
    ADMIN_OMEGA,
    DeepNormNormInput,
    add_admin,
)
from initwatch.vocabulary import ModelKind

NAME = "admin"
OPTIONS = ("omega", "output_change", "learnable", "profile_batch")
TARGETS = ("log", "constant", "linear")


def sublayer_count(kind: ModelKind, stack: str, n: int, cross: bool) -> int:
    """n, the residual sublayers of a stack: 2 per block, 3 per block of a decoder with
    cross-attention (``admin-torch`` counts 2N for an encoder).

    Example::

        >>> sublayer_count("encoder-decoder", "decoder", 6, False)
        18
    """
    three = stack == "decoder" and (cross or kind == "encoder-decoder")
    return (3 if three else 2) * n


def omega_of(n: int, target: str = "log") -> float:
    """``admin-torch``'s closed form: ``sqrt((n+1)/ln(n+1) - 1)`` for an O(log n) output change
    (default), ``sqrt(n)`` for O(1), 1 (plain Post-LN, O(n)) for ``"linear"``.

    Example::

        >>> round(omega_of(24), 3), round(omega_of(24, "constant"), 3)
        (2.601, 4.899)
    """
    if target == "log":
        return math.sqrt((n + 1) / math.log(n + 1) - 1)
    if target == "constant":
        return math.sqrt(n)
    if target == "linear":
        return 1.0
    raise ValueError(
        f"output_change={target!r}: choose 'log' (admin-torch's default, O(log n)), "
        "'constant' (O(1)) or 'linear' (plain Post-LN)"
    )


def constants(
    kind: ModelKind, depth: Mapping[str, int], cross: bool = False, target: str = "log"
) -> dict[str, dict[str, float]]:
    """n and omega per stack (closed form).

    Example::

        >>> c = constants("encoder-only", {"encoder": 12})["encoder"]
        >>> c["n"], round(c["omega"], 3)
        (24.0, 2.601)
    """
    out = {}
    for stack, layers in depth.items():
        if layers:
            n = sublayer_count(kind, stack, layers, cross)
            out[stack] = {"n": float(n), "omega": omega_of(n, target)}
    return out


def applies(anatomy: Anatomy) -> str | None:
    """None for Post-LN models, else the reason.

    Example::

        >>> from initwatch import inspect, zoo
        >>> applies(inspect(zoo.build("gpt2")))
        'Pre-LN: Admin needs Post-LN'
    """
    return post_ln_only(anatomy, "Admin needs Post-LN")


def omega_names(block: Block, learnable: bool) -> list[str]:
    """The name of each normed sublayer's omega on its block: ``admin_omega_<kind>`` (buffer)
    or ``admin_omega_param_<kind>`` (parameter).

    Example::

        >>> from initwatch import inspect, zoo
        >>> omega_names(inspect(zoo.build("bart")).stacks[1].blocks[0], True)
        ['admin_omega_param_attn', 'admin_omega_param_cross', 'admin_omega_param_ffn']
    """
    mid = "_param" if learnable else ""
    return [f"{ADMIN_OMEGA}{mid}_{s.kind}" for s in block.sublayers if s.norm is not None]


def _width(model: nn.Module, norm_path: str, fallback: int) -> int:
    norm = model.get_submodule(norm_path)
    shape = getattr(norm, "normalized_shape", None)
    if shape:
        return int(shape[-1])
    weight = getattr(norm, "weight", None)
    return int(weight.shape[-1]) if isinstance(weight, torch.Tensor) else fallback


def plan(model: nn.Module, anatomy: Anatomy, options: Mapping[str, Any]) -> Plan:
    """Plan Admin for ``model`` (see :func:`initwatch.reinit` for the options)."""
    check_options(NAME, options, OPTIONS)
    refuse(
        "Admin",
        anatomy,
        applies(anatomy),
        "Admin rescales the skip inside the LayerNorm that follows each residual add, "
        "LN(x*omega + G(x)); a Pre-LN block has no norm after the add. Use "
        "scheme='scaled', 't-fixup' or 'rezero' for Pre-LN models.",
    )
    refuse_uncalled_blocks(model, anatomy, "Admin")
    target = options.get("output_change", "log")
    learnable = options.get("learnable", False)
    if not isinstance(learnable, bool):
        raise ValueError(f"learnable={learnable!r}: give True (a trained vector) or False")
    batch = options.get("profile_batch")
    if batch is not None and options.get("omega") is not None:
        raise ValueError("give omega= or profile_batch=, not both")
    consts = constants(anatomy.kind, depths(anatomy, options), has_cross(anatomy), target)
    override(consts, options, "omega", "Admin needs omega > 0")
    p, stacks = start_plan(NAME, anatomy, options, consts)
    blocks = [b for s in stacks for b in s.blocks]
    if batch is not None:
        profiled = profile(model, anatomy, blocks, batch)
        for stack in p.constants:
            values = [v for b in blocks if b.stack == stack for v in profiled[b.path]]
            p.constants[stack].pop("omega")
            p.constants[stack].update(omega_min=min(values), omega_max=max(values))
    kind = "learnable vector" if learnable else "constant buffer"
    for block in blocks:
        subs = deepnorm_sublayers(block)
        names = omega_names(block, learnable)
        if batch is not None:
            values = profiled[block.path]
            how = "profiled: " + ", ".join(f"{v:.3g}" for v in values)
        else:
            values = [p.constants[block.stack]["omega"]] * len(subs)
            how = f"omega={values[0]:.4g} (admin-torch closed form, output change {target})"
        omegas = [
            (name, torch.full((_width(model, norm, anatomy.hidden),), float(v)))
            for name, v, (_, norm) in zip(names, values, subs, strict=True)
        ]
        change = Change(
            block.path,
            "admin_residual",
            "block",
            block.name,
            gain=float(values[-1]),
            note=f"LN(x*omega + G(x)) on {len(subs)} sublayers; omega a {kind}, {how}",
        )
        p.structure.append((change, bind(add_admin, model, block.path, subs, omegas, learnable)))
    return p


def _call(model: nn.Module, batch: Any) -> None:
    if isinstance(batch, Mapping):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        model(batch)


class _Profile:
    """Norm pre-hook of the profiling pass (runs before the skip scaling): sets this sublayer's
    omega to the stack's running value r, then r <- sqrt(Var(omega * x) + Var(G(x)))."""

    def __init__(self, block: nn.Module, index: int, name: str, running: dict, stack: str) -> None:
        self.block, self.index, self.name = block, index, name
        self.running, self.stack = running, stack
        self.seen: list[float] = []

    def __call__(self, norm: nn.Module, args: tuple[Any, ...]) -> None:
        skip = getattr(self.block, f"{_RESIDUAL_ATTR}_{self.index}", None)
        if skip is None or not args or not isinstance(args[0], torch.Tensor):
            return
        r = self.running[self.stack]
        getattr(self.block, self.name).fill_(r)
        branch = args[0].double() - skip.double()
        var = (r * skip.double()).var().item() + branch.var().item()
        self.running[self.stack] = math.sqrt(var)
        self.seen.append(r)


@torch.no_grad()
def profile(
    model: nn.Module, anatomy: Anatomy, blocks: list[Block], batch: Any
) -> dict[str, list[float]]:
    """Transformer-Clinic's one-batch profiling, on a copy of the model (the model itself is
    not touched): walking the sublayers in forward order, each stack with a running value r
    starting at 1, omega_i = r, then r <- sqrt(Var(omega_i * x_{i-1}) + Var(f_i(x_{i-1}))).
    Dropout is off during the pass (eval mode). Returns omega per normed sublayer per block.

    Example::

        >>> from initwatch import inspect, zoo
        >>> model = zoo.build("torch_encoder", layers=2)
        >>> a = inspect(model)
        >>> out = profile(model, a, a.blocks, zoo.example_inputs("torch_encoder", model))
        >>> out["layers.0"][0]
        1.0
    """
    twin = copy.deepcopy(model).eval()
    running = {b.stack: 1.0 for b in blocks}
    hooks: dict[str, list[_Profile]] = {}
    for block in blocks:
        subs = deepnorm_sublayers(block)
        names = omega_names(block, False)
        width = [_width(twin, norm, anatomy.hidden) for _, norm in subs]
        omegas = [(n, torch.ones(w)) for n, w in zip(names, width, strict=True)]
        add_admin(twin, block.path, subs, omegas, learnable=False)
        module = twin.get_submodule(block.path)
        hooks[block.path] = []
        for i, (_, norm_path) in enumerate(subs):
            hook = _Profile(module, i, names[i], running, block.stack)
            norm = twin.get_submodule(norm_path)
            assert any(isinstance(h, DeepNormNormInput) for h in norm._forward_pre_hooks.values())
            norm.register_forward_pre_hook(hook, prepend=True)
            hooks[block.path].append(hook)
    _call(twin, batch)
    out = {}
    for path, hs in hooks.items():
        if any(not h.seen for h in hs):
            raise ValueError(
                f"profile_batch: the forward pass did not reach every sublayer of {path!r}; "
                "pass a batch the model's forward takes (a dict of keyword arguments, a tuple of "
                "positional ones, or one tensor) that runs every stack"
            )
        out[path] = [h.seen[0] for h in hs]
    return out


def rebuild(model: nn.Module, block: Block, state: Mapping[str, Any]) -> Change | None:
    """Re-attach Admin to ``block`` of a fresh model when the checkpoint holds its omegas."""
    for learnable in (True, False):
        names = omega_names(block, learnable)
        keys = [f"{block.path}.{n}" for n in names]
        if names and all(k in state for k in keys):
            omegas = [(n, state[k]) for n, k in zip(names, keys, strict=True)]
            add_admin(model, block.path, deepnorm_sublayers(block), omegas, learnable)
            return Change(block.path, "admin_residual", "block", block.name)
    return None


SCHEME = Scheme(
    name=NAME,
    title="Admin",
    options=OPTIONS,
    applies=applies,
    constants=constants,
    plan=plan,
    rebuild=rebuild,
    keys=(ADMIN_OMEGA,),
)
