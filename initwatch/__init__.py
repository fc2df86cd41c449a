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

from typing import TYPE_CHECKING, Any

from initwatch.alerts import Alert, AlertKind, Severity
from initwatch.anatomy import Anatomy, inspect
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
from initwatch.schemes import (
    SCHEMES,
    ReinitReport,
    decide_pretrained,
    is_pretrained,
    reinit,
    restore,
)
from initwatch.schemes.saved import SchemeNotRestoredWarning, install

install()  # from_pretrained warns about a model saved with a scheme, loaded without it

if TYPE_CHECKING:
    from initwatch.watch import Watch

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Watch pulls in the TensorBoard machinery: import it on first use only.
    if name == "Watch":
        from initwatch.watch import Watch

        return Watch
    raise AttributeError(f"module 'initwatch' has no attribute {name!r}")


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
