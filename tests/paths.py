"""Where the test suite's files are, for tests in any folder of ``tests/``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parent  # tests/
ROOT = TESTS.parent  # the repository (bench/, docs/, examples/)
DDP = TESTS / "ddp"  # the scripts the multi-process tests launch


def load_script(path: Path, name: str) -> ModuleType:
    """The script at ``path`` (a bench or an example) imported as the module ``name``, which
    ``sys.modules`` holds (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
