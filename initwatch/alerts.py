"""Alert objects: what a rule found, where, how bad, and what to do about it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from initwatch import vocabulary


class AlertKind(str, Enum):
    """The fixed vocabulary of alert kinds (new kinds may be added, none renamed).

    Example::

        >>> AlertKind("nonfinite") is AlertKind.NONFINITE
        True
    """

    VANISHING_GRADIENT = "vanishing_gradient"
    EXPLODING_GRADIENT = "exploding_gradient"
    VANISHING_ACTIVATION = "vanishing_activation"
    EXPLODING_ACTIVATION = "exploding_activation"
    NONFINITE = "nonfinite"
    DEAD_UNITS = "dead_units"
    SATURATION = "saturation"
    UPDATE_RATIO_HIGH = "update_ratio_high"
    UPDATE_RATIO_LOW = "update_ratio_low"
    LOSS_DIVERGING = "loss_diverging"
    ATTENTION_COLLAPSE = "attention_collapse"
    LR_SCHEDULE_COLLAPSE = "lr_schedule_collapse"


class Severity(str, Enum):
    """How serious an alert is: ``"warning"`` or ``"error"``.

    Example::

        >>> Severity.ERROR.value
        'error'
    """

    WARNING = "warning"
    ERROR = "error"


@dataclass
class Alert:
    """One finding of a rule at one logging step.

    Args:
        step: the training step (optimizer steps, as the framework logs them) of the finding.
        kind: one of :class:`AlertKind`'s values, e.g. ``"vanishing_gradient"``.
        layer: the layer (block name or module path) the finding is about, ``"*"`` for global.
        value: the measured value that crossed the threshold.
        threshold: the threshold it crossed.
        severity: ``"warning"`` or ``"error"``.
        message: one sentence with the evidence.
        remedy: what to do about it, chosen for this model and this run.
        first_step: the step the condition was first seen (``step`` for a new alert).
        repeat: 0 for a new alert, n for the n-th "still" update of the same cause.

    Example::

        >>> a = Alert(step=10, kind="nonfinite", layer="encoder.3", value=float("nan"),
        ...           threshold=0.0, severity="error", message="NaN in encoder.3 output",
        ...           remedy="lower the learning rate")
        >>> Alert.from_dict(a.to_dict()) == a
        True
    """

    step: int
    kind: str
    layer: str
    value: float
    threshold: float
    severity: vocabulary.Severity
    message: str
    remedy: str
    first_step: int | None = None
    repeat: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = AlertKind(self.kind).value
        self.severity = Severity(self.severity).value
        if self.first_step is None:
            self.first_step = self.step

    @property
    def is_update(self) -> bool:
        """True for a "still" update of an alert raised earlier."""
        return self.repeat > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, float, dict), safe for checkpoints and JSON."""
        d = asdict(self)
        d["value"] = float(self.value)
        d["threshold"] = float(self.threshold)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def __str__(self) -> str:
        still = " (still)" if self.repeat else ""
        return (
            f"[{self.severity}] step {self.step} {self.kind}{still} at {self.layer}: "
            f"{self.message} -> {self.remedy}"
        )
