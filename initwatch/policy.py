"""What an alert does: warn, stop training, raise, or call the user's function."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from enum import Enum
from typing import Any

from initwatch.alerts import Alert
from initwatch.errors import AlertError

log = logging.getLogger("initwatch")


class AlertWarning(UserWarning):
    """The warning category of initwatch alerts (filter it with ``warnings.filterwarnings``).

    Example::

        >>> import warnings
        >>> warnings.filterwarnings("ignore", category=AlertWarning)
    """


class OnAlert(str, Enum):
    """The built-in actions of :class:`AlertPolicy` (a callable is the fourth option).

    Example::

        >>> OnAlert("stop") is OnAlert.STOP
        True
    """

    WARN = "warn"
    STOP = "stop"
    RAISE = "raise"
    IGNORE = "ignore"


VALID = tuple(m.value for m in OnAlert)


def _cause(alert: Alert) -> str:
    cause = alert.extra.get("cause") if isinstance(alert.extra, dict) else None
    return str(cause) if cause else f"{alert.kind}/{alert.layer}"


class AlertPolicy:
    """Decides what each alert does.

    - ``"warn"``: a Python warning (:class:`AlertWarning`) once per cause, and a log record on
      the ``"initwatch"`` logger for every alert (updates at INFO level).
    - ``"stop"``: logs the alert and sets :attr:`should_stop`; integrations then end training
      cleanly (Lightning ``trainer.should_stop``, HF ``control.should_training_stop``).
    - ``"raise"``: raises :class:`~initwatch.errors.AlertError` carrying the alert.
    - ``"ignore"``: nothing (alerts are still kept in ``.alerts`` and written to the sinks).
    - a callable: called with every alert (new ones and "still" updates).

    Args:
        on_alert: ``"warn"``, ``"stop"``, ``"raise"``, ``"ignore"`` or a callable
            ``f(alert) -> None``.

    Example::

        >>> from initwatch.alerts import Alert
        >>> seen = []
        >>> policy = AlertPolicy(seen.append)
        >>> policy.handle(Alert(3, "dead_units", "relu1", 0.99, 0.95, "warning", "99% zeros", "use GELU"))
        >>> len(seen), policy.should_stop
        (1, False)
        >>> AlertPolicy("stop").mode
        'stop'
    """

    def __init__(self, on_alert: str | OnAlert | Callable[[Alert], Any] = "warn") -> None:
        self.callback: Callable[[Alert], Any] | None = None
        if isinstance(on_alert, OnAlert):
            self.mode = on_alert.value
        elif isinstance(on_alert, str):
            if on_alert not in VALID:
                raise ValueError(
                    f"on_alert={on_alert!r} is not valid; expected one of "
                    f"{', '.join(repr(v) for v in VALID)} or a callable taking an Alert, "
                    f'e.g. on_alert="warn" or on_alert=lambda alert: print(alert)'
                )
            self.mode = on_alert
        elif callable(on_alert):
            self.mode = "callable"
            self.callback = on_alert
        else:
            raise ValueError(
                f"on_alert={on_alert!r} is not valid; expected one of "
                f"{', '.join(repr(v) for v in VALID)} or a callable taking an Alert"
            )
        self.should_stop = False
        self._warned: set[str] = set()

    def handle(self, alert: Alert) -> None:
        """Apply the policy to one alert.

        Args:
            alert: a new alert or a "still" update.

        Raises:
            AlertError: in ``"raise"`` mode.

        Example::

            >>> from initwatch.alerts import Alert
            >>> p = AlertPolicy("stop")
            >>> p.handle(Alert(3, "nonfinite", "fc1", float("nan"), 0.0, "error", "NaN", "lower lr"))
            >>> p.should_stop
            True
        """
        level = logging.ERROR if alert.severity == "error" else logging.WARNING
        if alert.is_update:
            level = logging.INFO
        if self.mode == OnAlert.WARN.value:
            log.log(level, "%s", alert)
            cause = _cause(alert)
            if cause not in self._warned:
                self._warned.add(cause)
                warnings.warn(str(alert), AlertWarning, stacklevel=2)
        elif self.mode == OnAlert.STOP.value:
            log.log(max(level, logging.WARNING), "stopping training: %s", alert)
            self.should_stop = True
        elif self.mode == OnAlert.RAISE.value:
            raise AlertError(alert)
        elif self.mode == OnAlert.IGNORE.value:
            return
        else:
            assert self.callback is not None
            self.callback(alert)

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the causes already warned about.

        The stop flag is not saved: a run resumed after a stop should train.

        Example::

            >>> AlertPolicy().state_dict()
            {'warned': []}
        """
        return {"warned": sorted(self._warned)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (warnings already shown are not shown again).

        Example::

            >>> p = AlertPolicy()
            >>> p.load_state_dict({"warned": ["dead_units/model"]})
        """
        self._warned = set(state.get("warned", []))

    def __repr__(self) -> str:
        return f"AlertPolicy({self.callback if self.callback is not None else self.mode!r})"


__all__ = ["AlertPolicy", "AlertWarning", "OnAlert"]
