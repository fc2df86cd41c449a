"""The import hook that makes ``from_pretrained`` warn about models saved with a scheme.

It needs neither torch nor transformers: importing initwatch installs it (so the command line's
``--help`` stays fast), and it wraps ``PreTrainedModel.from_pretrained`` once transformers loads
its modeling code. The check itself is :func:`initwatch.schemes.saved.check_loaded`.

Example::

    >>> from initwatch.loadhook import PatchOnImport, install
    >>> install()
    >>> import sys
    >>> "transformers.modeling_utils" in sys.modules or any(
    ...     isinstance(f, PatchOnImport) for f in sys.meta_path)
    True
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import sys
from typing import Any

TARGET = "transformers.modeling_utils"


def patch(pretrained_model: type) -> None:
    """Wrap ``pretrained_model.from_pretrained`` so each load is checked (idempotent).

    Example::

        >>> class Model:
        ...     @classmethod
        ...     def from_pretrained(cls, path):
        ...         return "loaded"
        >>> patch(Model); patch(Model)
        >>> Model.from_pretrained("x"), Model.from_pretrained.__func__._initwatch_wrapped
        ('loaded', True)
    """
    original = pretrained_model.__dict__.get("from_pretrained")
    func = getattr(original, "__func__", None)
    if func is None or getattr(func, "_initwatch_wrapped", False):
        return

    @functools.wraps(func)
    def from_pretrained(cls: type, *args: Any, **kwargs: Any) -> Any:
        from initwatch.schemes.saved import check_loaded

        out = func(cls, *args, **kwargs)
        check_loaded(out[0] if isinstance(out, tuple) else out)
        return out

    from_pretrained._initwatch_wrapped = True  # type: ignore[attr-defined]
    pretrained_model.from_pretrained = classmethod(from_pretrained)  # type: ignore[attr-defined]


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Wraps ``PreTrainedModel.from_pretrained`` once transformers loads its modeling code
    (the module ``target``), so importing initwatch does not import transformers.

    Example::

        >>> PatchOnImport().find_spec("json", None) is None  # any other module: not ours
        True
    """

    def __init__(self, target: str = TARGET) -> None:
        self.target = target

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        """The module's own spec, its loader wrapped to patch the module once it has run."""
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
                patch(module.PreTrainedModel)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Make ``from_pretrained`` warn about models saved with a scheme (idempotent; called when
    initwatch is imported).

    Example::

        >>> install(); install()  # a second call adds nothing
    """
    module = sys.modules.get(TARGET)
    if module is not None and hasattr(module, "PreTrainedModel"):
        patch(module.PreTrainedModel)
    elif not any(isinstance(f, PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, PatchOnImport())
