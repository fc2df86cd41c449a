"""initwatch: re-initialize deep transformers and watch their layers while they train.

Example::

    >>> import initwatch
    >>> from initwatch import zoo
    >>> model = zoo.build("bert", layers=4)
    >>> print(initwatch.inspect(model).layout)
    post
    >>> report = initwatch.reinit(model, "deepnet")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from initwatch.alerts import Alert, AlertKind, Severity
from initwatch.context import RunContext
from initwatch.errors import (
    AlertError,
    AlreadyAppliedError,
    AnatomyError,
    ArgumentError,
    InitWatchError,
    PretrainedWeightsError,
    SchemeNotApplicableError,
    ShardingError,
)
from initwatch.loadhook import install

install()  # from_pretrained warns about a model saved with a scheme, loaded without it

if TYPE_CHECKING:
    from initwatch.anatomy import Anatomy, inspect
    from initwatch.schemes import (
        SCHEMES,
        ReinitReport,
        decide_pretrained,
        is_pretrained,
        reinit,
    )
    from initwatch.schemes.restore import restore  # not via initwatch.schemes: a submodule too
    from initwatch.schemes.saved import SchemeNotRestoredWarning
    from initwatch.watch import Watch

__version__ = "0.1.0"

# Names that need torch are imported on first use, so ``import initwatch`` (and the command
# line's --help and --version) stays light: {name: the module that defines it}.
_LAZY = {
    "Anatomy": "initwatch.anatomy",
    "inspect": "initwatch.anatomy",
    "SCHEMES": "initwatch.schemes",
    "ReinitReport": "initwatch.schemes",
    "decide_pretrained": "initwatch.schemes",
    "is_pretrained": "initwatch.schemes",
    "reinit": "initwatch.schemes",
    "restore": "initwatch.schemes.restore",
    "SchemeNotRestoredWarning": "initwatch.schemes.saved",
    "Watch": "initwatch.watch",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):  # a submodule not imported yet: ``initwatch.zoo``
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'initwatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "SCHEMES",
    "Alert",
    "AlertError",
    "AlertKind",
    "AlreadyAppliedError",
    "Anatomy",
    "AnatomyError",
    "ArgumentError",
    "InitWatchError",
    "PretrainedWeightsError",
    "ReinitReport",
    "RunContext",
    "SchemeNotApplicableError",
    "SchemeNotRestoredWarning",
    "Severity",
    "ShardingError",
    "Watch",
    "__version__",
    "decide_pretrained",
    "inspect",
    "is_pretrained",
    "reinit",
    "restore",
]
