"""The subcommands of the ``initwatch`` command line, one module each (see :mod:`initwatch.cli`
for the entry point, :mod:`.args` for what they share).

Each command module exports ``NAME``, ``HELP`` (one line), ``EXAMPLES`` (the ``--help`` epilog),
``add_arguments(parser)`` and ``run(args) -> int``, and imports neither torch nor
:mod:`initwatch.cli` at import time. :data:`COMMANDS` is the one place a new command is added.

Example::

    >>> from initwatch.commands import COMMANDS, demo
    >>> COMMANDS
    ('demo', 'check', 'report')
    >>> demo.NAME
    'demo'
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = ("demo", "check", "report")


def load(name: str) -> ModuleType:
    """The module of command ``name`` (one of :data:`COMMANDS`).

    Example::

        >>> load("report").NAME
        'report'
    """
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    return importlib.import_module(f"{__name__}.{name}")
