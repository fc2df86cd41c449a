"""``initwatch check MODEL``: the pre-flight check (:mod:`initwatch.preflight`) on the command
line: a header at once, progress while it measures, then the recommendation first, the per-block
tables, the alerts, and optionally the depth profiles drawn (:func:`initwatch.plots.check_profiles`).

Example::

    >>> from initwatch.commands import check
    >>> check.NAME
    'check'
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from initwatch.commands._text import Progress, alert_lines, table, threads, wrap
from initwatch.commands.args import (
    UsageError,
    add_depth_flag,
    add_progress_flags,
    add_threads_flag,
    positive,
    positive_float,
    scheme_list,
)
from initwatch.numbers import fmt

if TYPE_CHECKING:
    from initwatch.preflight import CheckResult, CheckSettings

NAME = "check"
HELP = (
    "Pre-flight check: build MODEL with random weights, measure per-block activation RMS, "
    "backward-signal RMS and gradient norm with its own init and under each scheme, over a few "
    "passes and a short burst of optimizer steps; flag what would alert and recommend an init."
)
EXAMPLES = """\
examples:
  initwatch check bert --depth 24 --hidden 128    # a family name with size options
  initwatch check path/to/config.json --lr 3e-4   # a Hugging Face config (JSON file)
  initwatch check path/to/saved_model_dir         # a save_pretrained directory (config only)
  initwatch check gpt2 --optimizer sgd --lr 0.1 --plot profile.png
  initwatch check torch_encoder --fast            # fewer, smaller passes and steps

MODEL is a family name (initwatch.zoo.FAMILIES: bert, gpt2, llama, t5, torch_encoder, ...),
a config JSON file or a save_pretrained directory.
"""
OPTIMIZERS = ("adam", "adamw", "sgd")
DEFAULT_MAX_PARAMS = 200_000_000
# --fast: one pass at init and a 12-step burst on small batches (the tests run this).
FAST = {"passes": 1, "steps": 12, "batch": 4, "seq": 16}
DEFAULTS = {"passes": 3, "steps": 30, "batch": 8, "seq": 32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``initwatch check``.

    Example::

        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["bert", "--layers", "6"]).depth  # --layers: the old name of --depth
        6
    """
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a family name (bert, gpt2, llama, t5, ...), a Hugging Face config JSON file, or "
        "a save_pretrained directory (only config.json is read; weights are random)",
    )
    add_depth_flag(parser, "blocks per stack (family default 12; overrides a config)")
    parser.add_argument(
        "--hidden", type=positive, help="model width (family default 64; overrides a config)"
    )
    parser.add_argument(
        "--lr", type=positive_float, default=1e-3, help="planned learning rate (default 1e-3)"
    )
    parser.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer (default adam)"
    )
    parser.add_argument(
        "--steps", type=positive, help=f"optimizer steps in the burst (default {DEFAULTS['steps']})"
    )
    parser.add_argument(
        "--passes",
        type=positive,
        help=f"forward/backward passes at init (default {DEFAULTS['passes']})",
    )
    parser.add_argument("--batch", type=positive, help=f"batch size (default {DEFAULTS['batch']})")
    parser.add_argument("--seq", type=positive, help=f"sequence length (default {DEFAULTS['seq']})")
    parser.add_argument(
        "--batches",
        type=positive,
        default=4,
        help="fixed random batches the burst cycles through (default 4)",
    )
    parser.add_argument(
        "--schemes",
        default=None,
        help="comma-separated schemes to try (default: every registered scheme; those that do "
        "not apply are skipped with the reason); 'none' for the own init only",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help=f"{FAST['passes']} pass and {FAST['steps']} steps on batches of {FAST['batch']}x"
        f"{FAST['seq']} (the explicit options still win)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and inputs seed (default 0)")
    parser.add_argument(
        "--max-params",
        type=positive,
        default=DEFAULT_MAX_PARAMS,
        help=f"refuse larger models (default {DEFAULT_MAX_PARAMS:,}); shrink with --hidden",
    )
    add_threads_flag(parser, "small models gain nothing from more")
    parser.add_argument("--plot", metavar="PNG", help="draw the depth profiles into this image")
    add_progress_flags(parser)


def _schemes(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return ()
    return scheme_list(text, NAME)


def settings_from_args(args: argparse.Namespace) -> CheckSettings:
    """The :class:`~initwatch.preflight.CheckSettings` of a parsed command line.

    Example::

        >>> from initwatch.cli import build_parser
        >>> s = settings_from_args(build_parser().parse_args(["check", "gpt2", "--fast"]))
        >>> s.steps, s.passes, s.lr
        (12, 1, 0.001)
    """
    from initwatch.preflight import CheckSettings

    sizes = dict(DEFAULTS, **(FAST if args.fast else {}))
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    return CheckSettings(
        model=args.model,
        depth=args.depth,
        hidden=args.hidden,
        lr=args.lr,
        optimizer=args.optimizer,
        batches=args.batches,
        schemes=_schemes(args.schemes),
        seed=args.seed,
        max_params=args.max_params,
        **sizes,
    )


# ------------------------------------------------------------------------------ output


def header(settings: CheckSettings) -> str:
    """What is about to be measured (printed before anything is built).

    Example::

        >>> from initwatch.preflight import CheckSettings
        >>> print(header(CheckSettings("gpt2", schemes=("rezero",))))  # doctest: +ELLIPSIS
        initwatch check gpt2: own init and rezero; 3 forward/backward passes at init ...
    """
    s = settings
    inits = ["own init", *s.scheme_names]
    names = ", ".join(inits[:-1]) + " and " + inits[-1] if len(inits) > 1 else inits[0]
    return wrap(
        f"initwatch check {s.model}: {names}; {s.passes} forward/backward "
        f"pass{'es' if s.passes > 1 else ''} at init on random inputs (batch {s.batch}), then "
        f"{s.steps} {s.optimizer} steps at lr {s.lr:g} over {s.batches} fixed random "
        f"batch{'es' if s.batches > 1 else ''}",
        indent="",
    ).replace("\n", "\n  ")


def _rows(blocks: list[str], limit: int = 32) -> list[str]:
    if len(blocks) <= limit:
        return blocks
    step = math.ceil(len(blocks) / limit)
    keep = blocks[::step]
    return keep if keep[-1] == blocks[-1] else keep + [blocks[-1]]


def format_result(result: CheckResult) -> str:
    """The recommendation first, then the side-by-side tables and the alerts.

    Example::

        >>> from initwatch.preflight import OWN, CheckResult, CheckSettings, Variant
        >>> v = Variant(OWN, ["encoder.0"], {"act_rms": {"encoder.0": 1.0}},
        ...             {"act_rms": {"encoder.0": 2.0}}, [3.0, 1.0])
        >>> text = format_result(CheckResult("m", [v], OWN, "fine", CheckSettings("bert")))
        >>> text.splitlines()[0], "encoder.0  1.00 -> 2.00" in text
        ('Recommendation: own init', True)
    """
    from initwatch.preflight import STATS

    s = result.settings
    lines = [f"Recommendation: {result.recommendation}", wrap("why: " + result.reason, "  "), ""]
    measured = [v for v in result.variants if v.measured]
    for v in result.variants:
        if not v.measured:
            lines.append(wrap(f"{v.name}: skipped: {v.skipped}", indent="", width=100))
        for note in v.notes:
            lines.append(wrap(f"{v.name}: note: {note}", indent="", width=100))
    if len(measured) < len(result.variants) or any(v.notes for v in result.variants):
        lines.append("")
    blocks = measured[0].blocks if measured else []
    if not blocks and measured:
        lines += ["No transformer blocks were recognised: nothing to profile.", ""]
    for stat, title in STATS if blocks else ():
        lines.append(f"{title}, at init -> after {s.steps} steps")
        rows = []
        for b in _rows(blocks):
            row = [b]
            for v in measured:
                a, z = v.init.get(stat, {}).get(b), v.after.get(stat, {}).get(b)
                row.append(f"{fmt(a, fixed=True)} -> {fmt(z, fixed=True)}")
            rows.append(row)
        lines += [table(["block"] + [v.name for v in measured], rows), ""]

    def loss(v: object) -> str:
        end, se = v.end_loss()  # type: ignore[attr-defined]
        return f"{fmt(v.start_loss, fixed=True)} -> {fmt(end, fixed=True)} ± {fmt(se, fixed=True)}"  # type: ignore[attr-defined]

    summary = [
        ["loss, start -> end of burst"] + [loss(v) if v.losses else "-" for v in measured],
        ["lowest/top block gradient"]
        + [
            f"{fmt(v.grad_ratio('init'), fixed=True)} -> {fmt(v.grad_ratio(), fixed=True)}"
            for v in measured
        ],
        ["alerts"] + [str(len(v.new_alerts)) for v in measured],
    ]
    lines += [table([""] + [v.name for v in measured], summary), ""]
    alerted = [v for v in measured if v.new_alerts]
    if alerted:
        lines.append("What would alert:")
        for v in alerted:
            lines += alert_lines(v.name, v.new_alerts)
    else:
        lines.append("What would alert: nothing.")
    return "\n".join(lines)


class _Reporter:
    """Progress on stderr: a bar on a terminal, else one line per init measured."""

    def __init__(self, settings: CheckSettings, enabled: bool | None, stream: TextIO) -> None:
        self.inits = ["own init", *settings.scheme_names]
        self.units = settings.units
        self.stream = stream
        self.bar = Progress(self.units * len(self.inits), stream=stream, enabled=enabled)
        self.lines = enabled is None and not self.bar.enabled
        self.started = time.perf_counter()

    def __call__(self, name: str, done: int, total: int) -> None:
        if total == 0:  # an init that will be skipped: the count leaves it out
            if name in self.inits:
                self.inits.remove(name)
                self.bar.total = max(1, self.units * len(self.inits))
            return
        i = self.inits.index(name) if name in self.inits else 0
        label = f"{name} ({i + 1}/{len(self.inits)})"
        self.bar.update(i * self.units + done, f"measuring {label}: {done}/{total}")
        if self.lines and done == total:
            now = time.perf_counter()
            took, self.started = now - self.started, now
            print(f"  measured {label} in {took:.0f} s", file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``initwatch check``: the header at once, progress while measuring, then the result."""
    from initwatch.preflight import run_check, source_of

    out = out or sys.stdout
    settings = settings_from_args(args)
    if args.plot:
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise UsageError(f"--plot: no such directory: {folder}", NAME)
    from initwatch.zoo import FAMILIES

    source = None
    if settings.model not in FAMILIES:  # a config to read, or a bad name: its error comes first
        source = source_of(settings)
    print(header(settings), file=out, flush=True)
    source = source or source_of(settings)
    print(f"  model: {source.description}", file=out, flush=True)
    reporter = _Reporter(settings, args.progress, sys.stderr)
    try:
        with threads(args.threads):
            result = run_check(settings, progress=reporter, source=source)
    finally:
        reporter.close()
    print("", file=out)
    print(format_result(result), file=out)
    if args.plot:
        from initwatch.plots import check_profiles

        check_profiles(result, args.plot)
        print(f"\nDepth profiles drawn to {args.plot}", file=out)
    print(f"({result.seconds:.0f} s)", file=out)
    return 0
