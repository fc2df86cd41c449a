"""Model anatomy: which modules are the blocks, roles and norms of a transformer."""

from __future__ import annotations

import warnings
import weakref

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


Anatomy.__str__ = _str  # type: ignore[method-assign,assignment]


def try_inspect(model: object) -> Anatomy | None:
    """:func:`inspect` for known families, or None when the model is not one (no error).

    Any other failure while reading the model is a warning (once per model), not an error: a
    monitor that cannot read the structure watches modules by path instead.

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
    except Exception as exc:  # never let reading the model stop training
        if model not in _WARNED:
            _WARNED.add(model)
            warnings.warn(
                f"initwatch: could not read the structure of {type(model).__name__} ({exc!r}); "
                "watching modules by path",
                RuntimeWarning,
                stacklevel=2,
            )
        return None


_WARNED: weakref.WeakSet = weakref.WeakSet()  # models already warned about (once per model)


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
