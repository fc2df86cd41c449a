"""The ``initwatch`` command line: ``demo``, ``check`` and ``report``.

Example::

    $ initwatch demo                       # vanilla vs DeepNet / T-Fixup / ReZero, ~3 min on a CPU
    $ initwatch check bert --layers 24     # which init should this model use?
    $ initwatch report runs/initwatch-demo # alerts, worst layers and a verdict from event files
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import NoReturn

PROG = "initwatch"
COMMANDS = ("demo", "check", "report")

DEMO_EXAMPLE = """\
examples:
  initwatch demo                                  # 4 runs, about 3 minutes on 2 CPU cores
  initwatch demo --schemes vanilla,deepnet --steps 150
  initwatch demo --fast                           # 100 steps per run, well under a minute
  tensorboard --logdir runs/initwatch-demo        # then open the "initwatch" dashboard
"""

CHECK_EXAMPLE = """\
examples:
  initwatch check bert --layers 24 --hidden 128   # a family name with size options
  initwatch check path/to/config.json --lr 3e-4   # a Hugging Face config (JSON file)
  initwatch check path/to/saved_model_dir         # a save_pretrained directory (config only)
  initwatch check gpt2 --optimizer sgd --lr 0.1 --plot profile.png

families: {families}
"""

REPORT_EXAMPLE = """\
examples:
  initwatch report runs/initwatch-demo            # every initwatch run under a directory
  initwatch report lightning_logs/version_3 --plot heatmap.png
"""


class UsageError(Exception):
    """A bad command line or a bad input: printed as one line, exit code 2.

    Example::

        >>> str(UsageError("missing file 'x.json'"))
        "missing file 'x.json'"
    """

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line plus a usage hint, never a traceback."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()[-1] if self.prog != PROG else None
        raise UsageError(message, command)


def _families() -> str:
    from initwatch.zoo import FAMILIES

    return textwrap.fill(", ".join(FAMILIES), width=78, subsequent_indent="  ")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``initwatch`` command.

    Example::

        >>> args = build_parser().parse_args(["demo", "--steps", "50"])
        >>> args.command, args.steps
        ('demo', 50)
    """
    from initwatch.commands import check, demo, report

    parser = _Parser(
        prog=PROG,
        description="Re-initialize deep transformers (DeepNet, T-Fixup, ReZero) and watch "
        "their layers train.",
        epilog="examples:\n  initwatch demo\n  initwatch check bert --layers 24\n"
        "  initwatch report runs/initwatch-demo\n\nRun 'initwatch COMMAND --help' for more.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from initwatch import __version__

    parser.add_argument("--version", action="version", version=f"initwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands: list[tuple[str, str, str, Callable[[argparse.ArgumentParser], None]]] = [
        ("demo", demo.HELP, DEMO_EXAMPLE, demo.add_arguments),
        ("check", check.HELP, CHECK_EXAMPLE.format(families=_families()), check.add_arguments),
        ("report", report.HELP, REPORT_EXAMPLE, report.add_arguments),
    ]
    for name, help_text, example, add in commands:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add(p)
    return parser


def _hint(command: str | None) -> str:
    return f"usage: run '{PROG} {command} --help'" if command else f"usage: run '{PROG} --help'"


def _fail(message: str, command: str | None) -> int:
    first = " ".join(str(message).split()) or "failed"
    print(f"{PROG}: error: {first}", file=sys.stderr)
    print(_hint(command), file=sys.stderr)
    return 2


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
    from initwatch.errors import InitWatchError

    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list and args_list[0] in COMMANDS else None
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        command = args.command
        if command is None:
            parser.print_help()
            return 2
        from initwatch.commands import check, demo, report

        run = {"demo": demo.run, "check": check.run, "report": report.run}[command]
        return int(run(args) or 0)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        return _fail(str(exc), exc.command or command)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        name = exc.filename if exc.filename is not None else str(exc)
        return _fail(f"no such file or directory: {name}", command)
    except (InitWatchError, ValueError, OSError) as exc:
        return _fail(str(exc), command)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
