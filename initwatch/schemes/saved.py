"""What a saved Hugging Face model records about its scheme, and the warning a plain load gives.

``reinit`` (and ``restore``) write ``config.initwatch = {"scheme": ..., "constants": ...}`` on
every Hugging Face config in the model, so ``save_pretrained`` stores it in ``config.json``.
A plain ``from_pretrained`` of such a directory builds the model without the scheme's structure
(T-Fixup's norms come back, DeepNet's alpha and ReZero's gates are dropped): it computes a
different function. Once initwatch is imported, ``from_pretrained`` warns about that and names
the fix, ``initwatch.restore(fresh_model, path)`` (the import hook is
:mod:`initwatch.loadhook`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from torch import nn

CONFIG_KEY = "initwatch"
_QUIET: ContextVar[bool] = ContextVar("initwatch_quiet_load", default=False)


class SchemeNotRestoredWarning(UserWarning):
    """A model saved after an initwatch scheme was loaded without the scheme's structure.

    Example::

        >>> issubclass(SchemeNotRestoredWarning, UserWarning)
        True
    """


def _configs(model: nn.Module) -> list[Any]:
    seen: dict[int, Any] = {}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict") and hasattr(cfg, "save_pretrained"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


def record(model: nn.Module, scheme: str, constants: Mapping[str, Mapping[str, float]]) -> None:
    """Write what was applied into every Hugging Face config of ``model`` (no-op without one).

    Example::

        >>> from initwatch import zoo
        >>> model = zoo.build("gpt2")
        >>> record(model, "rezero", {"decoder": {"alpha_init": 0.0}})
        >>> model.config.initwatch["scheme"]
        'rezero'
    """
    from initwatch import __version__

    entry = {
        "scheme": scheme,
        "constants": {k: {n: float(v) for n, v in c.items()} for k, c in constants.items()},
        "version": __version__,
        "restore": "initwatch.restore(fresh_model, path)",
    }
    for cfg in _configs(model):
        setattr(cfg, CONFIG_KEY, entry)


def recorded_scheme(model: nn.Module) -> str | None:
    """The scheme a model's Hugging Face config says was applied before it was saved, or None.

    Example::

        >>> from initwatch import zoo
        >>> recorded_scheme(zoo.build("gpt2")) is None
        True
    """
    for cfg in _configs(model):
        entry = getattr(cfg, CONFIG_KEY, None)
        if isinstance(entry, Mapping) and entry.get("scheme"):
            return str(entry["scheme"])
    return None


@contextlib.contextmanager
def quiet_load() -> Iterator[None]:
    """No warning from ``from_pretrained`` inside (``restore`` loads the weights this way)."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def check_loaded(model: Any) -> None:
    """Warn when ``model`` was saved with a scheme its structure no longer has."""
    from initwatch.schemes.base import applied_scheme

    if _QUIET.get() or not isinstance(model, nn.Module):
        return
    try:
        scheme = recorded_scheme(model)
        if scheme is None or applied_scheme(model) is not None:
            return
    except Exception:  # noqa: BLE001 - never break a load over a warning
        return
    what = {
        "deepnet": "DeepNorm's alpha is dropped, so every residual is LN(x + G(x))",
        "t-fixup": "the removed LayerNorms come back with fresh weights",
        "rezero": "the ReZero gates are dropped and the removed norms come back",
    }.get(scheme, "its structure is not rebuilt")
    warnings.warn(
        f"this {type(model).__name__} was saved after initwatch applied {scheme!r}; "
        f"from_pretrained loaded it without the scheme ({what}), so it computes a different "
        "function than the model that was saved. Load it with "
        "initwatch.restore(fresh_model, path), fresh_model built from the saved config "
        "(e.g. AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))).",
        SchemeNotRestoredWarning,
        stacklevel=3,
    )
