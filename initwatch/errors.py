"""Exceptions initwatch raises. Each message says what was wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class InitWatchError(Exception):
    """Base class of every initwatch error.

    Example::

        >>> issubclass(PretrainedWeightsError, InitWatchError)
        True
    """


class ArgumentError(InitWatchError, ValueError, TypeError):
    """An argument was refused at construction; the message quotes it, says what is expected and
    shows a call that works. Caught by ``except ValueError`` and ``except TypeError`` alike.

    Example::

        >>> issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, TypeError)
        True
    """


class AnatomyError(InitWatchError, ValueError):
    """The model's structure could not be read; the message shows the pattern call that would."""


class SchemeNotApplicableError(InitWatchError, ValueError):
    """The scheme does not apply to this model (e.g. DeepNet on a Pre-LN model)."""


class PretrainedWeightsError(InitWatchError):
    """Re-initialization would overwrite weights loaded from a checkpoint."""


class AlreadyAppliedError(InitWatchError):
    """A scheme was already applied to this model."""


class ShardingError(InitWatchError, ValueError):
    """A sharded model's parameters are laid out in a way initwatch cannot read or re-draw
    exactly (meta-device tensors, already-sharded parameters, unsupported placements)."""


class AlertError(InitWatchError):
    """Raised by ``on_alert="raise"``; carries the :class:`~initwatch.Alert` as ``.alert``."""

    def __init__(self, alert: object) -> None:
        super().__init__(str(alert))
        self.alert = alert


def suggest(name: str, valid: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """``" (did you mean 'x'?)"`` for the valid name closest to a misspelt one, else ``""``.

    Args:
        name: what was given.
        valid: the valid names.
        aliases: other accepted spellings and the valid name each stands for (a close alias
            suggests its valid name).

    Example::

        >>> suggest("reezro", ["deepnet", "t-fixup", "rezero"])
        " (did you mean 'rezero'?)"
        >>> suggest("tfixpu", ["t-fixup"], {"tfixup": "t-fixup"})
        " (did you mean 't-fixup'?)"
        >>> suggest("xyz", ["deepnet"])
        ''
    """
    close = closest(name, valid, aliases)
    return f" (did you mean {close!r}?)" if close else ""


def closest(
    name: str, valid: Iterable[str], aliases: Mapping[str, str] | None = None
) -> str | None:
    """The valid name closest to a misspelt one (None: none is close), as :func:`suggest`
    chooses it.

    Example::

        >>> closest("skipint", ["rezero", "skipinit"]), closest("xyz", ["deepnet"])
        ('skipinit', None)
    """
    target = {v.lower(): v for v in valid}
    target.update({a.lower(): v for a, v in (aliases or {}).items()})
    close = difflib.get_close_matches(name.lower(), list(target), n=1, cutoff=0.6)
    return target[close[0]] if close else None
