"""Argument checks shared by every entry point (``Watch``, the callbacks, ``reinit``, ``inspect``).

Each check raises :class:`~initwatch.errors.ArgumentError` (a ``ValueError`` and a
``TypeError``) at construction, quotes the value it got, says what is expected and shows a
call that works, so a mistake is never discovered deep inside a training step, and nothing a
user passes can silently turn monitoring off.

Example::

    >>> positive_int("every", 50, "Watch(model, every=50)")
    50
    >>> positive_int("every", 2.5, "Watch(model, every=50)")
    Traceback (most recent call last):
    ...
    initwatch.errors.ArgumentError: every=2.5: expected a positive whole number; e.g. Watch(model, every=50)
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from initwatch.anatomy.model import Anatomy
from initwatch.errors import ArgumentError
from initwatch.selection import PRESETS


def _fail(name: str, value: Any, expected: str, example: str) -> None:
    raise ArgumentError(f"{name}={value!r}: expected {expected}; e.g. {example}")


def is_whole(value: Any) -> bool:
    """True for an integer that is not a bool (Python or NumPy).

    Example::

        >>> is_whole(3), is_whole(3.0), is_whole(True)
        (True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for a finite real number that is not a bool.

    Example::

        >>> is_number(0.5), is_number(float("nan")), is_number("0.5")
        (True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(name: str, value: Any, example: str) -> int:
    """``value`` as an ``int`` >= 1; an error otherwise (2.5 is not truncated to 2).

    Example::

        >>> positive_int("update_sample", 0, "update_sample=1024")
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: update_sample=0: expected a positive whole number; e.g. update_sample=1024
    """
    if not is_whole(value) or int(value) < 1:
        _fail(name, value, "a positive whole number", example)
    return int(value)


def non_negative_int(name: str, value: Any, example: str) -> int:
    """``value`` as an ``int`` >= 0 (0 turns a feature off); an error otherwise.

    Example::

        >>> non_negative_int("dense_start", 0, "dense_start=20")
        0
    """
    if not is_whole(value) or int(value) < 0:
        _fail(name, value, "a whole number >= 0 (0: off)", example)
    return int(value)


def optional_interval(name: str, value: Any) -> int | None:
    """A logging interval of a callback: None (the framework's own) or an int >= 1.

    Example::

        >>> optional_interval("logging_steps", None) is None
        True
    """
    if value is None:
        return None
    if not is_whole(value) or int(value) < 1:
        _fail(
            name,
            value,
            f"a positive whole number of optimizer steps, or None for the framework's own {name}",
            f"{name}=50",
        )
    return int(value)


def path_or_none(name: str, value: Any, example: str) -> str | None:
    """A directory given as ``str`` / ``os.PathLike``, or None.

    Example::

        >>> path_or_none("logdir", 123, "logdir='runs/exp1'")
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: logdir=123: expected a directory path (str or os.PathLike) or None; e.g. logdir='runs/exp1'
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     path_or_none("logdir", f.name, "logdir='runs/exp1'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: logdir='...' is a file, not a directory: ...
    """
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        _fail(name, value, "a directory path (str or os.PathLike) or None", example)
    path = str(os.fspath(value))
    blocker = _file_in_the_way(path)
    if blocker is not None:
        what = "is a file" if blocker == path else f"is inside {blocker!r}, which is a file"
        raise ArgumentError(
            f"{name}={path!r} {what}, not a directory: TensorBoard writes a directory of event "
            f"files there. Pass a directory path (a new one is created), e.g. {example}."
        )
    return path


def _file_in_the_way(path: str) -> str | None:
    """``path`` or the nearest of its existing ancestors when that is not a directory."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    if os.path.isdir(current):
        return None
    return path if current == os.path.abspath(path) else current


def layers_spec(value: Any) -> str | list[str]:
    """Which modules to watch: a preset, a pattern, or a non-empty list of patterns.

    Whether a pattern matches is checked when the model is known (``select_layers``).

    Example::

        >>> layers_spec(["h.*.attn"])
        ['h.*.attn']
        >>> layers_spec([])
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: layers=[]: expected one of 'default', 'blocks', 'linear', or a non-empty list of module paths / glob patterns; e.g. layers='default' or layers=['encoder.layers.*']
    """
    expected = (
        f"one of {', '.join(map(repr, PRESETS))}, or a non-empty "
        "list of module paths / glob patterns"
    )
    example = "layers='default' or layers=['encoder.layers.*']"
    if isinstance(value, str):
        if not value.strip():
            _fail("layers", value, expected, example)
        return value
    if (
        not isinstance(value, Sequence)
        or not value
        or not all(isinstance(p, str) and p.strip() for p in value)
    ):
        _fail("layers", value, expected, example)
    return list(value)


def anatomy_or_none(value: Any, call: str = "Watch(model, anatomy=anatomy)") -> Anatomy | None:
    """An :class:`~initwatch.anatomy.Anatomy` (what :func:`initwatch.inspect` returns) or None.

    Example::

        >>> anatomy_or_none(None) is None
        True
    """
    if value is None or isinstance(value, Anatomy):
        return value
    _fail(
        "anatomy",
        value,
        "the Anatomy that initwatch.inspect returns, or None",
        "anatomy = initwatch.inspect(model, blocks='layers', roles={'q': 'attn.q', ...}); " + call,
    )
    return None  # unreachable


def rules_spec(value: Any) -> Any:
    """``rules``: None (default rules), False (none), a dict of thresholds and settings, or a
    ``Rules`` object. A dict is checked now by building ``Rules(**value)`` once.

    Example::

        >>> rules_spec({"dead_frac": 0.98})
        {'dead_frac': 0.98}
        >>> rules_spec({"dead_frac": "high"})
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: rules={'dead_frac': 'high'}: dead_frac='high': expected a number in (0, 1]; e.g. rules={'dead_frac': 0.98}
    """
    if value is None or value is False:
        return value
    if isinstance(value, Mapping):
        from initwatch.rules import Rules

        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            _fail("rules", dict(value), "threshold names as keys", "rules={'dead_frac': 0.98}")
        try:
            Rules(**value)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"rules={dict(value)!r}: {exc}") from None
        return dict(value)
    if callable(getattr(value, "update", None)) and not isinstance(value, (str, bool)):
        return value
    _fail(
        "rules",
        value,
        "None (the default rules), False (no rules), a dict of thresholds or a Rules object",
        "rules={'dead_frac': 0.98} or rules=False",
    )
    return None  # unreachable


def threshold_value(name: str, value: Any, whole: bool, at_most_one: bool) -> None:
    """One threshold of the rules: a finite number > 0 (whole for counts, <= 1 for fractions;
    ``scheme_grace_steps`` may be 0).

    Example::

        >>> threshold_value("dead_frac", None, whole=False, at_most_one=True)
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: dead_frac=None: expected a number in (0, 1]; e.g. rules={'dead_frac': 0.98}
    """
    example = f"rules={{{name!r}: {_EXAMPLES.get(name, 0.5 if at_most_one else 10)!r}}}"
    if whole:
        low = 0 if name == "scheme_grace_steps" else 1
        if not is_whole(value) or value < low:
            _fail(name, value, f"a whole number >= {low}", example)
    elif at_most_one:
        if not is_number(value) or not 0 < value <= 1:
            _fail(name, value, "a number in (0, 1]", example)
    elif not is_number(value) or value <= 0:
        _fail(name, value, "a positive finite number", example)


_EXAMPLES = {"dead_frac": 0.98, "persistence": 3, "history": 32, "grad_floor": 1e-7}


def writer_or_none(value: Any) -> Any:
    """``writer``: None, a :class:`~initwatch.sinks.Sink` or a TensorBoard-style writer
    (anything with ``add_scalar``).

    Example::

        >>> writer_or_none(None) is None
        True
    """
    from initwatch.sinks import Sink

    if value is None or isinstance(value, Sink) or callable(getattr(value, "add_scalar", None)):
        return value
    hint = (
        f"Watch(model, logdir={value!r})"
        if isinstance(value, (str, os.PathLike))
        else "Watch(model, writer=SummaryWriter('runs/exp1'))"
    )
    _fail("writer", value, "a SummaryWriter, an initwatch Sink or None", hint)
    return None  # unreachable


def context_or_none(value: Any) -> Any:
    """``context``: a :class:`~initwatch.RunContext` or None.

    Example::

        >>> context_or_none(None) is None
        True
    """
    from initwatch.context import RunContext

    if value is None or isinstance(value, RunContext):
        return value
    _fail("context", value, "a RunContext or None", "context=RunContext(lr=1e-3)")
    return None  # unreachable


def module(name: str, value: Any, example: str) -> None:
    """Refuse anything but a ``torch.nn.Module``.

    Example::

        >>> import torch.nn as nn
        >>> module("model", nn.Linear(2, 2), "Watch(model)")
    """
    from torch import nn

    if not isinstance(value, nn.Module):
        _fail(name, _short(value), "a torch.nn.Module", example)


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 60 else f"<{type(value).__name__}>"


def scheme_options(scheme: str | None, options: Any) -> dict[str, Any]:
    """``scheme_options`` of a callback: a dict of :func:`initwatch.reinit` options that the
    scheme knows (checked now, not at fit).

    Example::

        >>> scheme_options("rezero", {"per": "sublayer"})
        {'per': 'sublayer'}
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        _fail(
            "scheme_options",
            options,
            "a dict of initwatch.reinit options or None",
            "scheme_options={'seed': 0}",
        )
    opts = dict(options)
    if scheme is not None:
        from initwatch.schemes import registry
        from initwatch.schemes.base import check_options

        try:
            check_options(scheme, opts, registry.get(scheme).options)
        except ValueError as exc:
            raise ArgumentError(
                f"scheme_options={opts!r}: {exc}; e.g. scheme_options={{'seed': 0}}"
            ) from None
    reinit_options(opts)
    return opts


def reinit_options(options: Mapping[str, Any]) -> None:
    """Types of the options every scheme shares (``seed``, ``allow_pretrained``, ``pretrained``, ``depth``,
    ``stacks``, ``anatomy``); the scheme checks its own.

    Example::

        >>> reinit_options({"seed": 0, "depth": 12})
        >>> reinit_options({"seed": "0"})
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: seed='0': expected a whole number or None; e.g. initwatch.reinit(model, 'deepnet', seed=0)
    """
    call = "initwatch.reinit(model, 'deepnet', {})"
    seed = options.get("seed")
    if seed is not None and not is_whole(seed):
        _fail("seed", seed, "a whole number or None", call.format("seed=0"))
    allow = options.get("allow_pretrained", False)
    if not isinstance(allow, bool):
        _fail("allow_pretrained", allow, "True or False", call.format("allow_pretrained=True"))
    pretrained_or_none(options.get("pretrained"), call.format("pretrained=False"))
    depth = options.get("depth")
    if depth is not None:
        values = list(depth.values()) if isinstance(depth, Mapping) else [depth]
        if not all(is_whole(d) and d >= 1 for d in values):
            _fail(
                "depth",
                depth,
                "a whole number >= 1 or a dict of them per stack",
                call.format("depth={'encoder': 12}"),
            )
    stacks = options.get("stacks")
    if stacks is not None and not (
        isinstance(stacks, str)
        or (isinstance(stacks, Sequence) and all(isinstance(s, str) for s in stacks))
    ):
        _fail("stacks", stacks, "a stack name or a list of them", call.format("stacks=['decoder']"))
    if "anatomy" in options:
        anatomy_or_none(options["anatomy"], "initwatch.reinit(model, 'deepnet', anatomy=anatomy)")


def pretrained_or_none(value: Any, example: str) -> bool | None:
    """``pretrained``: True (the weights are trained: a fine-tune), False (an initialization)
    or None (decide from the weights, :func:`initwatch.decide_pretrained`).

    Example::

        >>> pretrained_or_none(None, "Watch(model, pretrained=True)") is None
        True
        >>> pretrained_or_none("yes", "Watch(model, pretrained=True)")
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: pretrained='yes': expected True (the weights are trained: a fine-tune), False (an initialization) or None (decide from the weights); e.g. Watch(model, pretrained=True)
    """
    if value is not None and not isinstance(value, bool):
        _fail(
            "pretrained",
            value,
            "True (the weights are trained: a fine-tune), False (an initialization) or None "
            "(decide from the weights)",
            example,
        )
    return value


def choice(name: str, value: Any, valid: Sequence[Any], example: str) -> None:
    """Refuse anything but one of ``valid``.

    Example::

        >>> choice("layout", "Post", ("pre", "post", None), "layout='post'")
        Traceback (most recent call last):
        ...
        initwatch.errors.ArgumentError: layout='Post': expected one of 'pre', 'post', None; e.g. layout='post'
    """
    if not any(value == v and type(value) is type(v) for v in valid):
        _fail(name, value, f"one of {', '.join(map(repr, valid))}", example)


__all__ = [
    "anatomy_or_none",
    "choice",
    "context_or_none",
    "is_number",
    "is_whole",
    "layers_spec",
    "module",
    "optional_interval",
    "path_or_none",
    "positive_int",
    "pretrained_or_none",
    "reinit_options",
    "rules_spec",
    "scheme_options",
    "threshold_value",
    "writer_or_none",
]
