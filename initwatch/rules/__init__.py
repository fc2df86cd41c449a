"""Rules: read frames, find vanishing/exploding layers and other pathologies, emit alerts.

One module per concern: :mod:`~initwatch.rules.thresholds` (defaults and their sources),
:mod:`~initwatch.rules.view` (how a frame is grouped into blocks and streams),
:mod:`~initwatch.rules.detectors` (one detector per pathology) and
:mod:`~initwatch.rules.engine` (persistence, de-duplication, checkpoint state).

Example::

    >>> from initwatch.rules import Rules, Thresholds
    >>> rules = Rules(Thresholds(dead_frac=0.98), persistence=3)
    >>> rules.persistence
    3
"""

from __future__ import annotations

from initwatch.rules.detectors import Finding
from initwatch.rules.engine import Rules
from initwatch.rules.thresholds import Thresholds

__all__ = ["Finding", "Rules", "Thresholds"]
