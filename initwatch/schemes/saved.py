"""What a saved Hugging Face model records about its scheme, and the warning a plain load gives.

``reinit`` (and ``restore``) write ``config.initwatch = {"scheme": ..., "constants": ...}`` on
every Hugging Face config in the model, so ``save_pretrained`` stores it in ``config.json``.
A plain ``from_pretrained`` of such a directory builds the model without the scheme's structure
(T-Fixup's norms come back, DeepNet's alpha and ReZero's gates are dropped): it computes a
different function. Once initwatch is imported, ``from_pretrained`` warns about that and names
the fix, ``initwatch.restore(fresh_model, path)``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from torch import nn

CONFIG_KEY = "initwatch"
_QUIET: ContextVar[bool] = ContextVar("initwatch_quiet_load", default=False)
_TARGET = "transformers.modeling_utils"


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


def _patch(pretrained_model: type) -> None:
    original = pretrained_model.__dict__.get("from_pretrained")
    func = getattr(original, "__func__", None)
    if func is None or getattr(func, "_initwatch_wrapped", False):
        return

    @functools.wraps(func)
    def from_pretrained(cls: type, *args: Any, **kwargs: Any) -> Any:
        out = func(cls, *args, **kwargs)
        check_loaded(out[0] if isinstance(out, tuple) else out)
        return out

    from_pretrained._initwatch_wrapped = True  # type: ignore[attr-defined]
    pretrained_model.from_pretrained = classmethod(from_pretrained)  # type: ignore[attr-defined]


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Wraps ``PreTrainedModel.from_pretrained`` once transformers loads its modeling code
    (the module ``target``), so importing initwatch does not import transformers."""

    def __init__(self, target: str = _TARGET) -> None:
        self.target = target

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != self.target:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            with contextlib.suppress(Exception):
                _patch(module.PreTrainedModel)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Make ``from_pretrained`` warn about models saved with a scheme (idempotent; called when
    initwatch is imported)."""
    module = sys.modules.get(_TARGET)
    if module is not None and hasattr(module, "PreTrainedModel"):
        _patch(module.PreTrainedModel)
    elif not any(isinstance(f, PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, PatchOnImport())
