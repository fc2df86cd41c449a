"""Where the test suite's files are, for tests in any folder of ``tests/``."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent  # tests/
ROOT = TESTS.parent  # the repository (bench/, docs/, examples/)
DDP = TESTS / "ddp"  # the scripts the multi-process tests launch
