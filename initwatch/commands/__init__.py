"""The subcommands of the ``initwatch`` command line, one module each: :mod:`.demo`,
:mod:`.check` and :mod:`.report` (see :mod:`initwatch.cli` for the entry point).

Each module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.

Example::

    >>> from initwatch.commands import demo
    >>> demo.HELP.split(":")[0]
    'Train a deep Post-LN transformer four times'
"""
