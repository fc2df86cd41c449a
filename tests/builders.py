"""Builders shared by the Hugging Face Trainer tests (one place for the quiet CPU settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainingArguments

# What every test Trainer runs with: CPU, no reporting, no checkpoints, no progress bar.
QUIET_CPU = dict(report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True)


def training_args(out: str | Path, **settings: Any) -> TrainingArguments:
    """``TrainingArguments`` writing to ``out`` with :data:`QUIET_CPU`, plus the test's settings.

    Example::

        >>> training_args("/tmp/x", max_steps=2).max_steps
        2
    """
    return TrainingArguments(**{"output_dir": str(out), **QUIET_CPU, **settings})
