"""Framework adapters: Lightning's ``InitWatch`` and Hugging Face's ``InitWatchCallback``.

Each adapter is imported from its own module, so importing one framework never imports the
other; plain PyTorch loops use :class:`initwatch.Watch` directly.

Example::

    >>> from initwatch.integrations import UnsupportedStrategyError
    >>> from initwatch.integrations.lightning import InitWatch
    >>> InitWatch(scheme="rezero").scheme
    'rezero'
    >>> from initwatch.integrations.transformers import InitWatchCallback
    >>> InitWatchCallback(scheme="T-Fixup").scheme
    't-fixup'
"""

from __future__ import annotations

from initwatch.integrations._common import UnsupportedStrategyError

__all__ = ["UnsupportedStrategyError"]
