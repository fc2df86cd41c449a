"""Blocks that hold identical weights: the copies ``nn.TransformerEncoder`` makes of one layer
(PyTorch issue #72253), or any model built by deep-copying a block."""

from __future__ import annotations

import torch
from torch import nn

from initwatch.anatomy.model import Stack


def _fingerprint(block: nn.Module) -> tuple | None:
    """Names, shapes and the first few values of every parameter: blocks that differ almost
    always differ here, so the full comparison runs only on likely copies."""
    out = []
    for name, p in block.named_parameters():
        if p.device.type == "meta" or p.numel() == 0:
            return None
        out.append((name, tuple(p.shape), tuple(p.detach().reshape(-1)[:4].tolist())))
    return tuple(out) if out else None


def _equal(a: nn.Module, b: nn.Module) -> bool:
    """Equal values in separate tensors (blocks sharing their parameters on purpose, like
    ALBERT's, are one block used twice, not copies)."""
    pairs = list(zip(a.parameters(), b.parameters(), strict=True))
    if all(x is y for x, y in pairs):
        return False
    return all(torch.equal(x.detach(), y.detach()) for x, y in pairs)


def identical_blocks(model: nn.Module, stacks: list[Stack]) -> list[list[str]]:
    """Groups (two or more) of block names whose parameters are equal, per stack.

    Reading the weights is never allowed to fail ``inspect``: sharded or meta parameters give
    no groups.

    Example::

        >>> from torch import nn
        >>> from initwatch import inspect
        >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32), 3,
        ...                             enable_nested_tensor=False)
        >>> inspect(enc).identical
        [['encoder.0', 'encoder.1', 'encoder.2']]
    """
    groups: list[list[str]] = []
    try:
        for stack in stacks:
            seen: list[tuple[tuple, nn.Module, list[str]]] = []
            for block in stack.blocks:
                module = model.get_submodule(block.path)
                if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
                    break  # a grouped list: its entries are not whole blocks
                fp = _fingerprint(module)
                if fp is None:
                    continue
                for other_fp, other, names in seen:
                    if other_fp == fp and _equal(module, other):
                        names.append(block.name)
                        break
                else:
                    seen.append((fp, module, [block.name]))
            groups += [names for _, _, names in seen if len(names) > 1]
    except Exception:  # DTensor, FSDP flat parameters...: say nothing rather than fail
        return []
    return groups


def describe(groups: list[list[str]]) -> str:
    """One line for ``inspect``'s text, or "" when no blocks are identical.

    Example::

        >>> describe([["encoder.0", "encoder.1"]])
        "identical blocks: encoder.0 = encoder.1 (copies of one layer, PyTorch issue #72253): initwatch.reinit(model, 'xavier') re-draws each"
    """
    if not groups:
        return ""
    text = "; ".join(
        " = ".join(g) if len(g) <= 3 else f"{g[0]} = ... = {g[-1]} ({len(g)} blocks)"
        for g in groups
    )
    return (
        f"identical blocks: {text} (copies of one layer, PyTorch issue #72253): "
        "initwatch.reinit(model, 'xavier') re-draws each"
    )
