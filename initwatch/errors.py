"""Exceptions initwatch raises. Each message says what was wrong and how to fix it."""

from __future__ import annotations


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
