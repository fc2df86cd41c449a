"""The activation a block's feed-forward actually uses, and the init gain it calls for."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from initwatch.anatomy.model import Block
from initwatch.vocabulary import Role

# Activations torch.nn.init.calculate_gain knows, by the class or function name that means them.
_KNOWN = {
    "relu": "relu",
    "leakyrelu": "leaky_relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "selu": "selu",
    "identity": "linear",
    "linear": "linear",
}


def moment_gain(fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The gain that keeps the second moment through ``fn``: ``1 / sqrt(E[fn(z)^2])`` for
    ``z ~ N(0, 1)`` (the rule behind Kaiming's sqrt(2) for ReLU), by quadrature on a fine grid.

    Example::

        >>> round(moment_gain(torch.relu), 6)  # calculate_gain('relu') = sqrt(2)
        1.414214
        >>> round(moment_gain(nn.functional.gelu), 4), round(moment_gain(nn.functional.silu), 4)
        (1.5335, 1.6765)
    """
    z = torch.linspace(-12.0, 12.0, 48001, dtype=torch.float64)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    try:
        y = fn(z)
    except (RuntimeError, TypeError):  # a kernel without float64
        y = fn(z.float()).double()
    second = float(torch.trapezoid(y.double().pow(2) * pdf, z))
    return 1.0 / math.sqrt(second)


def activation_name(act: Any) -> str:
    """A readable name of an activation module or function (``"relu"``, ``"GELUActivation"``).

    Example::

        >>> activation_name(nn.ReLU()), activation_name(nn.functional.gelu)
        ('ReLU', 'gelu')
    """
    return getattr(act, "__name__", None) or type(act).__name__


def activation_gain(act: Any) -> tuple[float, str]:
    """The gain for a layer followed by ``act`` (a module, a function or a name), and how it
    was found.

    ``torch.nn.init.calculate_gain`` where it knows the activation (ReLU sqrt(2), tanh 5/3,
    leaky ReLU from its slope, SELU 3/4, sigmoid 1, identity 1); otherwise, for GELU, SiLU and
    anything else callable, the second-moment gain :func:`moment_gain` of the function itself.

    Example::

        >>> activation_gain(nn.ReLU())
        (1.4142135623730951, 'calculate_gain(relu)')
        >>> g, how = activation_gain(nn.GELU())
        >>> round(g, 4), how
        (1.5335, '1/sqrt(E[GELU(z)^2])')
    """
    if isinstance(act, str):
        key = act.lower().replace("-", "_")
        if key not in _KNOWN.values():
            raise ValueError(
                f"activation={act!r}: give one of {sorted(set(_KNOWN.values()))} or the "
                "activation module/function itself (e.g. activation=torch.nn.GELU())"
            )
        # key is one of _KNOWN's values, all names calculate_gain's Literal accepts
        return nn.init.calculate_gain(key), f"calculate_gain({key})"  # type: ignore[arg-type]
    name = activation_name(act)
    known = _KNOWN.get(name.lower().replace("activation", ""))
    if known == "leaky_relu":
        slope = float(getattr(act, "negative_slope", 0.01))
        return nn.init.calculate_gain("leaky_relu", slope), f"calculate_gain(leaky_relu, {slope:g})"
    if known is not None:
        return nn.init.calculate_gain(known), f"calculate_gain({known})"  # type: ignore[arg-type]  # as above
    if not callable(act):
        raise ValueError(f"activation {act!r} is neither a name nor callable")
    return moment_gain(act), f"1/sqrt(E[{name}(z)^2])"


_NOT_ACTIVATIONS = (nn.Linear, nn.Dropout, nn.Identity, nn.Embedding, nn.ModuleList, nn.ModuleDict)


def block_activation(model: nn.Module, block: Block) -> Any | None:
    """The activation the feed-forward of ``block`` applies: the activation module inside the
    block's FFN (Hugging Face ``ACT2FN`` modules, ``nn.ReLU``...), or the ``activation``
    function of a ``torch.nn`` transformer layer; None when none is found.

    Example::

        >>> from initwatch import inspect, zoo
        >>> model = zoo.build("llama")
        >>> type(block_activation(model, inspect(model).blocks[0])).__name__
        'SiLUActivation'
    """
    module = model.get_submodule(block.path)
    act = getattr(module, "activation", None)
    if callable(act) and not isinstance(act, nn.Module):  # nn.TransformerEncoderLayer(F.relu)
        return act
    ffn = next((s for s in block.sublayers if s.kind == "ffn"), None)
    if ffn is None or not ffn.slots:
        return None
    paths = [s.module for s in ffn.slots]
    common = _common_prefix(paths, block.path)
    root = model.get_submodule(common) if common else model
    for _, sub in root.named_modules():
        if sub is root or isinstance(sub, _NOT_ACTIVATIONS) or list(sub.children()):
            continue
        if any(True for _ in sub.parameters(recurse=False)):
            continue
        if "norm" in type(sub).__name__.lower() or "attention" in type(sub).__name__.lower():
            continue
        return sub
    return act if isinstance(act, nn.Module) else None


def _common_prefix(paths: list[str], floor: str) -> str:
    parts = [p.split(".") for p in paths]
    out: list[str] = []
    for group in zip(*parts, strict=False):
        if len(set(group)) != 1:
            break
        out.append(group[0])
    prefix = ".".join(out)
    # the FFN's own container (BERT's intermediate/output are siblings: fall back to the block)
    if prefix in paths or not prefix.startswith(floor):
        prefix = floor
    return prefix


def activated_role(block: Block) -> Role:
    """The FFN role whose output goes through the activation: the gate of a GLU feed-forward
    (LLaMA's ``gate_proj``, T5's ``wi_0``), else ``ffn_in``.

    Example::

        >>> from initwatch import inspect, zoo
        >>> activated_role(inspect(zoo.build("llama")).blocks[0])
        'ffn_gate'
    """
    return "ffn_gate" if block.slot("ffn_gate") is not None else "ffn_in"
