"""The ``initwatch`` command line: ``demo``, ``check`` and ``report``.

The commands are the modules of :mod:`initwatch.commands` (listed in its ``COMMANDS``); this
module only builds the parser from what each exports and maps errors to exit codes. ``initwatch
--help`` and ``--version`` import no torch.

Example::

    $ initwatch demo                       # vanilla vs every scheme that applies, on a CPU
    $ initwatch check bert --depth 24      # which init should this model use?
    $ initwatch report runs/initwatch-demo # unhealthy runs first, with alerts and a verdict
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from initwatch.commands import COMMANDS, load
from initwatch.commands.args import UsageError, suggest

__all__ = ["PROG", "UsageError", "build_parser", "main"]

PROG = "initwatch"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line plus a usage hint, never a traceback."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()[-1] if self.prog != PROG else None
        raise UsageError(message, command)


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser of the ``initwatch`` command, with the options of ``commands``
    (the others are listed, without their options).

    Example::

        >>> args = build_parser().parse_args(["demo", "--steps", "50"])
        >>> args.command, args.steps
        ('demo', 50)
    """
    from initwatch import __version__

    parser = _Parser(
        prog=PROG,
        description="Re-initialize deep transformers (DeepNet, T-Fixup, ReZero, ...) and watch "
        "their layers train.",
        epilog="examples:\n  initwatch demo\n  initwatch check bert --depth 24\n"
        "  initwatch report runs/initwatch-demo\n\nRun 'initwatch COMMAND --help' for more.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = load(name)
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.HELP,
            epilog=module.EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name in commands:
            module.add_arguments(p)
    return parser


def _hint(command: str | None) -> str:
    return f"usage: run '{PROG} {command} --help'" if command else f"usage: run '{PROG} --help'"


def _fail(message: str, command: str | None) -> int:
    first = " ".join(str(message).split()) or "failed"
    print(f"{PROG}: error: {first}", file=sys.stderr)
    print(_hint(command), file=sys.stderr)
    return 2


def _command(args: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is not an option)."""
    first = next((a for a in args if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``initwatch`` command line; returns the exit code.

    Bad arguments and unreadable inputs print one line ``initwatch: error: ...`` and a usage
    hint to stderr and return 2, never a traceback.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Example::

        >>> main(["demo", "--schemes", "nonsense"])  # doctest: +SKIP
        2
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = _command(args_list)
    try:
        parser = build_parser(commands=(command,) if command else ())
        try:
            args = parser.parse_args(args_list)
        except UsageError as exc:
            first = next((a for a in args_list if not a.startswith("-")), None)
            if command is None and first is not None and "invalid choice" in str(exc):
                raise UsageError(f"{exc}{suggest(first, COMMANDS)}") from None
            raise
        if args.command is None:
            parser.print_help()
            return 2
        from initwatch.errors import InitWatchError

        try:
            return int(load(args.command).run(args) or 0)
        except InitWatchError as exc:
            return _fail(str(exc), command)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        return _fail(str(exc), exc.command or command)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        name = exc.filename if exc.filename is not None else str(exc)
        return _fail(f"no such file or directory: {name}", command)
    except (ValueError, OSError, ImportError) as exc:
        return _fail(str(exc), command)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
