"""Model anatomy: which modules are the blocks, roles and norms of a transformer."""

from __future__ import annotations

from initwatch.anatomy.discover import inspect
from initwatch.anatomy.model import (
    ATTN_ROLES,
    CROSS_ROLES,
    FFN_ROLES,
    ROLES,
    Anatomy,
    Block,
    Norm,
    Slot,
    Stack,
    Sublayer,
)
from initwatch.anatomy.render import render


def _str(self: Anatomy) -> str:
    return render(self)


Anatomy.__str__ = _str  # type: ignore[method-assign]


def try_inspect(model: object) -> Anatomy | None:
    """:func:`inspect` for known families, or None when the model is not one (no error).

    Example::

        >>> import torch.nn as nn
        >>> try_inspect(nn.Linear(2, 2)) is None
        True
    """
    from initwatch.errors import AnatomyError

    try:
        return inspect(model)  # type: ignore[arg-type]
    except AnatomyError:
        return None


__all__ = [
    "ATTN_ROLES",
    "CROSS_ROLES",
    "FFN_ROLES",
    "ROLES",
    "Anatomy",
    "Block",
    "Norm",
    "Slot",
    "Stack",
    "Sublayer",
    "inspect",
    "render",
    "try_inspect",
]
