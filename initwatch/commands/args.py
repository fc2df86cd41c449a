"""What every subcommand shares: :class:`UsageError` and the argument types (positive numbers,
names with "did you mean" suggestions, scheme lists read from the scheme registry).

Nothing here imports torch, so building the parser (``initwatch --help``) stays fast.

Example::

    >>> from initwatch.commands.args import positive, suggest
    >>> positive("3"), suggest("bret", ["bert", "gpt2", "t5"])
    (3, " (did you mean 'bert'?)")
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping

from initwatch.errors import closest, suggest

__all__ = [
    "UsageError",
    "add_depth_flag",
    "add_progress_flags",
    "add_threads_flag",
    "positive",
    "positive_float",
    "scheme_list",
    "suggest",
]


class UsageError(Exception):
    """A bad command line or a bad input: printed as one line, exit code 2.

    Args:
        message: what was wrong and how to fix it.
        command: the subcommand whose usage hint the error shows (None: the top level).

    Example::

        >>> str(UsageError("missing file 'x.json'"))
        "missing file 'x.json'"
    """

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


def positive(text: str) -> int:
    """An ``argparse`` type: a positive integer.

    Example::

        >>> positive("12")
        12
        >>> positive("0")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: expected a positive integer, got '0'
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a positive, finite number.

    Example::

        >>> positive_float("3e-4")
        0.0003
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def scheme_list(
    text: str,
    command: str,
    *,
    vanilla: bool = False,
    unavailable: Mapping[str, str] | None = None,
    target: str = "the model",
) -> tuple[str, ...]:
    """Canonical scheme names from a comma-separated ``--schemes`` value, without repeats.

    The valid names are those of the scheme registry (:mod:`initwatch.schemes.registry`), so a
    newly registered scheme is accepted without a change here.

    Args:
        text: e.g. ``"deepnet, T-Fixup"``.
        command: the command whose usage hint an error shows.
        vanilla: accept ``vanilla`` (also ``none`` / ``default``) for the model's own init.
        unavailable: registered schemes that cannot apply to ``target``, each with the reason
            (the scheme's ``applies``); they are refused and left out of the choices.
        target: what ``unavailable``'s schemes do not apply to, for the error.

    Raises:
        UsageError: an unknown name (the message suggests the closest and lists the valid
            ones), or one of ``unavailable``.

    Example::

        >>> scheme_list("vanilla, T-Fixup, t_fixup", "demo", vanilla=True)
        ('vanilla', 't-fixup')
        >>> scheme_list("fixup", "demo", unavailable={"fixup": "ResNet only"}, target="the demo")
        Traceback (most recent call last):
        initwatch.commands.args.UsageError: --schemes: 'fixup' does not apply to the demo \
(ResNet only); choose from deepnet, t-fixup, rezero, xavier, kaiming, scaled, ds-init, admin, skipinit
    """
    from initwatch.schemes.registry import ALIASES, SCHEMES, get

    refused = dict(unavailable or {})
    names = (("vanilla",) if vanilla else ()) + tuple(n for n in SCHEMES if n not in refused)
    valid = ", ".join(names)
    out: list[str] = []
    for name in (s.strip() for s in text.split(",") if s.strip()):
        if vanilla and name.lower() in ("vanilla", "none", "default"):
            key = "vanilla"
        else:
            try:
                key = get(name).name
            except ValueError:
                extra = "" if vanilla else " or 'none'"
                close = closest(name, (*names, *refused), ALIASES)
                hint = f" (did you mean {close!r}?)" if close else ""
                if close in refused:
                    hint = f" ({close!r} would not apply to {target}: {refused[close]})"
                raise UsageError(
                    f"--schemes: unknown scheme {name!r}{hint}; choose from {valid}{extra}",
                    command,
                ) from None
            if key in refused:
                raise UsageError(
                    f"--schemes: {key!r} does not apply to {target} ({refused[key]}); "
                    f"choose from {valid}",
                    command,
                )
        if key not in out:
            out.append(key)
    return tuple(out)


def add_progress_flags(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (default: a bar on a terminal, else one line per
    run or init on stderr), for ``demo`` and ``check``.

    Example::

        >>> p = argparse.ArgumentParser(); add_progress_flags(p)
        >>> p.parse_args([]).progress, p.parse_args(["--no-progress"]).progress
        (None, False)
    """
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="draw a progress bar"
    )
    bar.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress on stderr (default: a bar on a terminal, else a line per run)",
    )


def add_depth_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """``--depth N`` (or ``--layers N``): blocks per stack, a positive integer; None when not
    given (the command's default applies), for ``demo`` and ``check``.

    Example::

        >>> p = argparse.ArgumentParser(); add_depth_flag(p, "blocks")
        >>> p.parse_args(["--layers", "6"]).depth, p.parse_args([]).depth
        (6, None)
    """
    parser.add_argument(
        "--depth", "--layers", dest="depth", metavar="N", type=positive, default=None, help=help
    )


def add_threads_flag(parser: argparse.ArgumentParser, why: str) -> None:
    """``--threads N``: torch threads, default 1 (``why``: why one is enough), for ``demo`` and
    ``check``.

    Example::

        >>> p = argparse.ArgumentParser(); add_threads_flag(p, "small models")
        >>> p.parse_args([]).threads, p.parse_args(["--threads", "4"]).threads
        (1, 4)
    """
    parser.add_argument(
        "--threads", type=positive, default=1, help=f"torch threads (default 1: {why})"
    )
