"""What an alert does: warn, stop training, raise, or call the user's function."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

from initwatch.alert_text import console_text
from initwatch.alerts import Alert
from initwatch.errors import AlertError
from initwatch.vocabulary import OnAlertSpec

log = logging.getLogger("initwatch")
# A library's logger must not print by itself: without a handler anywhere, Python's last-resort
# handler would print every record to stderr, a second copy of the warning.
if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
    log.addHandler(logging.NullHandler())

# Packages whose frames a warning skips, so its location is the user's own code (the line that
# called ``fit()``, ``train()`` or ``end_step``), not initwatch's or the framework's internals.
_INTERNAL = (
    "initwatch",
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "transformers",
    "accelerate",
    "torch",
)


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


def _internal_prefixes() -> tuple[str, ...]:
    out = [contextlib.__file__]
    for name in _INTERNAL:
        mod = sys.modules.get(name)
        path = getattr(mod, "__file__", None)
        if path:
            out.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(out)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function point at
    the first frame outside initwatch, the training frameworks and torch: the user's code.

    Example::

        >>> def warn_here():
        ...     return user_stacklevel()
        >>> warn_here()  # called from user code (a doctest): the caller itself
        1
    """
    prefixes = _internal_prefixes()
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        prefixes
    ):
        frame = frame.f_back
        level += 1
    return level


@contextlib.contextmanager
def _progress_bars_paused() -> Iterator[None]:
    """Clear live tqdm progress bars (Lightning's, the HF Trainer's) while a warning prints,
    and redraw them after it (``tqdm.write``'s mechanism), so the text gets lines of its own.
    tqdm is never imported here: only bars that already exist are paused."""
    tq = sys.modules.get("tqdm")
    cls = getattr(tq, "tqdm", None)
    if cls is None or not getattr(cls, "_instances", None):
        yield
        return
    try:
        pause = cls.external_write_mode(file=sys.stderr)
        pause.__enter__()
    except Exception:  # a monitor never breaks on someone else's progress bar
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            pause.__exit__(None, None, None)


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

    def __init__(self, on_alert: OnAlertSpec = "warn") -> None:
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
        text = console_text(alert)
        if self.mode == OnAlert.WARN.value:
            log.log(level, "%s", text)
            cause = _cause(alert)
            if cause not in self._warned:
                self._warned.add(cause)
                with _progress_bars_paused():
                    warnings.warn(text, AlertWarning, stacklevel=user_stacklevel())
        elif self.mode == OnAlert.STOP.value:
            log.log(max(level, logging.WARNING), "stopping training: %s", text)
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
