"""initwatch: re-initialize deep transformers and watch their layers while they train."""

from __future__ import annotations

from initwatch.alerts import Alert, AlertKind, Severity
from initwatch.context import RunContext

__version__ = "0.1.0"

__all__ = ["Alert", "AlertKind", "RunContext", "Severity", "__version__"]
