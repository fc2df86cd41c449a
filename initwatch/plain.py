"""Plain data (str, int, float, bool, None, list, dict; tensors moved to the CPU) for
weights-only checkpoints and JSON.

Example::

    >>> to_plain({"a": (1, 2), 3: {"b"}})
    {'a': [1, 2], '3': ['b']}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def to_plain(obj: Any, *, numbers: bool = False) -> Any:
    """``obj`` as plain data: mappings get string keys, tuples and sets become lists (sets
    sorted), tensors are detached onto the CPU, NumPy scalars become Python numbers, anything
    else its ``str``.

    Args:
        obj: the value to convert.
        numbers: JSON-ready: a one-element tensor becomes its number and a larger one a list
            (for alert evidence); False (default) keeps tensors, for weights-only checkpoints.

    Example::

        >>> to_plain([torch.tensor(1.5).item(), None, "x"])
        [1.5, None, 'x']
        >>> to_plain({"ratio": torch.tensor(0.25), "n": (1, 2)}, numbers=True)
        {'ratio': 0.25, 'n': [1, 2]}
    """
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v, numbers=numbers) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_plain(v, numbers=numbers) for v in items]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor):
        if numbers:
            value = obj.detach().cpu()
            return value.item() if value.numel() == 1 else value.tolist()
        return obj.detach().cpu()
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
