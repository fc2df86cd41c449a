"""``initwatch demo``: one deep Post-LN transformer trained with Lightning once per init, each run
under :class:`~initwatch.integrations.lightning.InitWatch`: PyTorch's default ("vanilla") init,
then DeepNet, T-Fixup and ReZero (``--schemes all``: every registered scheme that applies). Built-in synthetic
data (:mod:`initwatch.demo_task`).

Example::

    >>> from initwatch.commands.demo import DemoSettings, run_demo
    >>> results = run_demo(DemoSettings(schemes=("deepnet",), steps=4, depth=2, width=16,
    ...                                 logdir=__import__("tempfile").mkdtemp()))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from initwatch.alerts import Alert
from initwatch.commands._text import Progress, alert_lines, table, threads
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
    from initwatch.demo_task import TaskConfig

NAME = "demo"
HELP = (
    "Train a deep Post-LN transformer with PyTorch's default init (vanilla) and under each "
    "scheme (DeepNet, T-Fixup, ReZero, ...), each run watched by InitWatch; print final loss, "
    "steps to a target loss and the alerts with their remedies."
)
DEFAULT_LOGDIR = os.path.join("runs", "initwatch-demo")
EXAMPLES = """\
examples:
  initwatch demo                                  # vanilla, deepnet, t-fixup, rezero
  initwatch demo --schemes all                    # vanilla + every registered scheme that applies
  initwatch demo --schemes vanilla,deepnet --steps 150
  initwatch demo --fast                           # 100 steps per run
  tensorboard --logdir runs/initwatch-demo        # then open the "initwatch" dashboard
"""


def not_applicable(depth: int = 24, width: int = 64) -> dict[str, str]:
    """The registered schemes that cannot apply to the demo model, each with the reason (the
    scheme's ``applies`` on the model's anatomy): ``--schemes`` refuses them before anything
    trains.

    Example::

        >>> sorted(not_applicable(depth=2))
        ['fixup', 'scaled', 'skipinit']
        >>> not_applicable(depth=2)["scaled"]
        'Post-LN: the scaled init is for Pre-LN (use deepnet, admin or ds-init)'
    """
    from initwatch.anatomy import inspect
    from initwatch.demo_task import TaskConfig, build_model
    from initwatch.schemes.registry import SCHEMES

    cfg = TaskConfig(depth=depth, width=width, heads=4, ffn=2 * width)
    anatomy = inspect(build_model(cfg, seed=0))
    reasons = {n: s.applies(anatomy) for n, s in SCHEMES.items()}
    return {n: reason for n, reason in reasons.items() if reason is not None}


def variants(depth: int = 24, width: int = 64, *, every: bool = False) -> tuple[str, ...]:
    """The default runs: ``"vanilla"`` (PyTorch's own init), then the registry's featured
    schemes (:mod:`initwatch.schemes.registry`) that apply to the demo model, in registry
    order; ``every=True`` (``--schemes all``): every registered scheme that applies.

    Example::

        >>> variants()
        ('vanilla', 'deepnet', 't-fixup', 'rezero')
        >>> len(variants(every=True)) > 4
        True
    """
    from initwatch.schemes.registry import SCHEMES

    refused = not_applicable(depth, width)
    chosen = (n for n, s in SCHEMES.items() if every or s.featured)
    return ("vanilla", *(n for n in chosen if n not in refused))


@dataclass
class DemoSettings:
    """Everything one ``initwatch demo`` invocation does.

    Args:
        steps: optimizer steps per run.
        depth: Post-LN blocks.
        schemes: which runs, in order: ``"vanilla"`` and scheme names.
        logdir: the TensorBoard runs go to ``<logdir>/<scheme>``.
        seed: seeds the weights (the same for every run) and the batches.
        lr: Adam's fixed learning rate (no warmup).
        width: model width d (the FFN is 2d wide).
        target: the loss whose first crossing is reported as "steps to target".
        log_every: InitWatch measures every this many steps (None: about 30 times a run).
        progress: draw a progress bar on stderr (None: when stderr is a terminal).

    Example::

        >>> DemoSettings().task_config().depth
        24
    """

    steps: int = 300
    depth: int = 24
    schemes: tuple[str, ...] = field(default_factory=variants)
    logdir: str = DEFAULT_LOGDIR
    seed: int = 0
    lr: float = 1e-3
    width: int = 64
    target: float = 0.5
    log_every: int | None = None
    progress: bool | None = None

    def task_config(self) -> TaskConfig:
        """The model and task size (:class:`~initwatch.demo_task.TaskConfig`)."""
        from initwatch.demo_task import TaskConfig

        return TaskConfig(depth=self.depth, width=self.width, heads=4, ffn=2 * self.width)

    @property
    def every(self) -> int:
        """InitWatch's ``log_every_n_steps``."""
        return self.log_every or max(1, self.steps // 30)


# The fast mode the tests run: vanilla's lower blocks lose their gradient by step ~10 and the
# schemes reach the target loss by step ~70 (seeds 0-2), in a third of the default's time.
FAST = {"steps": 100}


@dataclass
class RunResult:
    """The outcome of one demo run.

    Args:
        scheme: ``"vanilla"`` or the scheme name.
        losses: the training loss of every step.
        alerts: the alerts InitWatch raised (new ones and "still" updates).
        wall_s: seconds the run took, Lightning's startup included.
        logdir: the run's TensorBoard directory.
        target: the target loss.
        chance: the loss of a uniform guess, ``ln(vocab)``.

    Example::

        >>> r = RunResult("vanilla", [2.8] * 20, [], 1.0, "runs/x", 0.5, math.log(16))
        >>> r.verdict
        'FAILED: stuck at chance'
    """

    scheme: str
    losses: list[float]
    alerts: list[Alert]
    wall_s: float
    logdir: str
    target: float
    chance: float
    notes: list[str] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        """Mean loss of the last tenth of the run."""
        from initwatch.demo_task import final_loss

        return final_loss(self.losses)

    @property
    def steps_to_target(self) -> int | None:
        """Steps until the trailing 10-step mean loss first reached the target (None: never)."""
        from initwatch.demo_task import steps_to

        return steps_to(self.losses, self.target, window=10)

    @property
    def new_alerts(self) -> list[Alert]:
        """The alerts without their "still" updates."""
        return [a for a in self.alerts if not a.repeat]

    @property
    def verdict(self) -> str:
        """``trained``, ``trained, with alerts`` or ``FAILED: ...``."""
        final = self.final_loss
        if not math.isfinite(final) or any(not math.isfinite(v) for v in self.losses):
            return "FAILED: diverged (non-finite loss)"
        if self.steps_to_target is None:
            if final > self.chance - 0.1:
                return "FAILED: stuck at chance"
            return "FAILED: did not reach the target"
        return "trained, with alerts" if self.new_alerts else "trained"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``initwatch demo``.

    Example::

        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--steps", "10"]).steps
        10
    """
    parser.add_argument(
        "--steps", type=positive, default=None, help="optimizer steps per run (default 300)"
    )
    add_depth_flag(parser, "Post-LN blocks (default 24)")
    parser.add_argument(
        "--schemes",
        default=None,
        help="comma-separated runs, in order ('vanilla' = PyTorch's own init; default: "
        "vanilla,deepnet,t-fixup,rezero; 'all': vanilla and every registered scheme that "
        "applies to the demo model)",
    )
    parser.add_argument(
        "--logdir",
        default=DEFAULT_LOGDIR,
        help=f"TensorBoard runs go to LOGDIR/<scheme> (default {DEFAULT_LOGDIR})",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and data seed (default 0)")
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=1e-3,
        help="Adam learning rate, fixed, no warmup (default 1e-3)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help=f"{FAST['steps']} steps per run instead of 300: enough for vanilla to fail and the "
        "schemes to reach the target (a third of the full demo's time); --steps still wins",
    )
    add_threads_flag(parser, "the demo's matrices are too small to gain from more")
    add_progress_flags(parser)


def parse_schemes(text: str, depth: int = 24, width: int = 64) -> tuple[str, ...]:
    """``"vanilla,deepnet"`` -> ``("vanilla", "deepnet")``, with aliases resolved.

    Raises:
        UsageError: an unknown name, or a scheme that does not apply to the demo model of
            ``depth`` blocks of width ``width`` (:func:`not_applicable`); the message lists
            the valid ones.

    Example::

        >>> parse_schemes("vanilla, T-Fixup")
        ('vanilla', 't-fixup')
    """
    if not any(s.strip() for s in text.split(",")):
        raise UsageError(f"--schemes {text!r}: expected e.g. vanilla,deepnet", NAME)
    return scheme_list(
        text,
        NAME,
        vanilla=True,
        unavailable=not_applicable(depth, width),
        target="the demo's Post-LN transformer",
    )


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """The :class:`DemoSettings` of a parsed command line.

    Example::

        >>> from initwatch.cli import build_parser
        >>> s = settings_from_args(build_parser().parse_args(["demo", "--fast"]))
        >>> s.steps, s.depth
        (100, 24)
    """
    base: dict[str, Any] = dict(FAST) if args.fast else {}
    if args.steps is not None:
        base["steps"] = args.steps
    if args.depth is not None:
        base["depth"] = args.depth
    if args.schemes is not None and args.schemes.strip().lower() != "all":
        base["schemes"] = parse_schemes(args.schemes, base.get("depth", 24))
    else:
        base["schemes"] = variants(depth=base.get("depth", 24), every=args.schemes is not None)
    return DemoSettings(
        logdir=args.logdir,
        seed=args.seed,
        lr=args.lr,
        progress=args.progress,
        **base,
    )


# ------------------------------------------------------------------------------------ running


def _lightning_module(model: Any, lr: float) -> Any:
    import lightning as L
    import torch

    from initwatch.demo_task import loss_fn

    class DemoModule(L.LightningModule):
        """The demo model in Lightning: Adam at a fixed learning rate, no warmup."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.model(tokens)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            tokens, targets = batch
            loss = loss_fn(self.model(tokens), targets)
            self.log("train_loss", loss, on_step=True, logger=True)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=lr)

    return DemoModule()


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up banner and its hints about dataloader workers."""
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    loggers = [logging.getLogger(n) for n in names]
    try:  # the logger rank_zero_info writes to depends on which package was imported last
        from lightning_utilities.core import rank_zero

        loggers.append(rank_zero.log)
    except (ImportError, AttributeError):
        pass
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*enable_nested_tensor.*")
            warnings.filterwarnings("ignore", message=r".*TensorBoardLogger.*tensorboardX.*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _clear_old_run(path: str) -> None:
    """Remove the event files an earlier demo left in ``path`` (so runs do not overlap)."""
    if not os.path.isdir(path):
        return
    for name in os.listdir(path):
        if name.startswith("events.out.tfevents.") or name == "hparams.yaml":
            os.remove(os.path.join(path, name))


def train_one(settings: DemoSettings, scheme: str, bar: Progress, offset: int) -> RunResult:
    """Train one variant with Lightning under InitWatch; returns its :class:`RunResult`.

    Example::

        >>> s = DemoSettings(steps=2, depth=2, width=16, logdir=__import__("tempfile").mkdtemp())
        >>> train_one(s, "deepnet", Progress(2, enabled=False), 0).scheme  # doctest: +SKIP
        'deepnet'
    """
    import lightning as L
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger

    from initwatch.demo_task import TaskStream, build_model
    from initwatch.integrations.lightning import InitWatch

    cfg = settings.task_config()
    losses: list[float] = []
    label = f"{scheme:<8} ({settings.schemes.index(scheme) + 1}/{len(settings.schemes)})"

    def on_alert(alert: Alert) -> None:
        if not alert.repeat:
            bar.message(f"  {scheme}: step {alert.step} {alert.kind} at {alert.layer}")

    class Recorder(L.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *rest: Any) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            losses.append(float(loss.detach()))
            bar.update(
                offset + len(losses),
                f"{label} step {len(losses)}  loss {fmt(losses[-1], 3, fixed=True)}",
            )

    run_dir = os.path.join(settings.logdir, scheme)
    _clear_old_run(run_dir)
    start = time.perf_counter()
    model = build_model(cfg, seed=settings.seed)
    watch = InitWatch(
        scheme=None if scheme == "vanilla" else scheme,
        log_every_n_steps=settings.every,
        on_alert=on_alert,
    )
    logger = TensorBoardLogger(settings.logdir, name=scheme, version="", default_hp_metric=False)
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=settings.steps,
            logger=logger,
            callbacks=[watch, Recorder()],
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            log_every_n_steps=settings.every,
            num_sanity_val_steps=0,
        )
        data = torch.utils.data.DataLoader(TaskStream(cfg, seed=settings.seed), batch_size=None)
        trainer.fit(_lightning_module(model, settings.lr), train_dataloaders=data)
    logger.finalize("success")
    return RunResult(
        scheme=scheme,
        losses=losses,
        alerts=list(watch.alerts),
        wall_s=time.perf_counter() - start,
        logdir=logger.log_dir,
        target=settings.target,
        chance=cfg.chance_loss,
    )


def run_demo(settings: DemoSettings, bar: Progress | None = None) -> list[RunResult]:
    """Train every variant of ``settings.schemes`` in turn, after checking that every one
    applies to the demo model (:func:`parse_schemes`: a refused one trains nothing).

    Example::

        >>> import tempfile
        >>> s = DemoSettings(schemes=("vanilla",), steps=2, depth=2, width=16,
        ...                  logdir=tempfile.mkdtemp(), progress=False)
        >>> [r.scheme for r in run_demo(s)]  # doctest: +SKIP
        ['vanilla']
    """
    parse_schemes(",".join(settings.schemes), settings.depth, settings.width)
    bar = bar or Progress(settings.steps * len(settings.schemes), enabled=settings.progress)
    results = []
    try:
        for i, scheme in enumerate(settings.schemes):
            results.append(train_one(settings, scheme, bar, i * settings.steps))
    finally:
        bar.close()
    return results


# ------------------------------------------------------------------------------------ output


def header(settings: DemoSettings) -> str:
    """The line describing what the demo trains.

    Example::

        >>> print(header(DemoSettings()))  # doctest: +ELLIPSIS
        initwatch demo: a 24-block Post-LN transformer (d=64), reverse 12 tokens of 16, ...
    """
    cfg = settings.task_config()
    return (
        f"initwatch demo: a {cfg.depth}-block Post-LN transformer (d={cfg.width}), "
        f"{cfg.task} {cfg.length} tokens of {cfg.vocab}, Adam lr {settings.lr:g} with no warmup, "
        f"{settings.steps} steps, seed {settings.seed}; chance loss ln({cfg.vocab}) = "
        f"{fmt(cfg.chance_loss, fixed=True)}"
    )


def format_results(results: Sequence[RunResult], settings: DemoSettings) -> str:
    """The table, the alerts with their remedies and the TensorBoard command.

    Example::

        >>> r = RunResult("deepnet", [0.1] * 20, [], 3.0, "runs/d", 0.5, math.log(16))
        >>> print(format_results([r], DemoSettings(schemes=("deepnet",))))  # doctest: +ELLIPSIS
        scheme   final loss  steps to 0.5  alerts  verdict  time
        -------  ----------  ------------  ------  -------  ----
        deepnet  0.100       10            0       trained  3 s
        ...
    """
    rows = [
        [
            r.scheme,
            fmt(r.final_loss, 3, fixed=True),
            "never" if r.steps_to_target is None else str(r.steps_to_target),
            str(len(r.new_alerts)),
            r.verdict,
            f"{r.wall_s:.0f} s",
        ]
        for r in results
    ]
    head = ["scheme", "final loss", f"steps to {settings.target:g}", "alerts", "verdict", "time"]
    lines = [table(head, rows), ""]
    alerted = [r for r in results if r.new_alerts]
    if alerted:
        lines.append("Alerts and remedies:")
        for r in alerted:
            lines += alert_lines(r.scheme, r.new_alerts)
        lines.append("")
    quiet = [r.scheme for r in results if not r.new_alerts]
    if quiet:
        lines += [f"No alerts: {', '.join(quiet)}.", ""]
    logdir = settings.logdir
    shown = logdir if " " not in logdir else f'"{logdir}"'
    lines += [
        "See every layer in TensorBoard (the 'initwatch' dashboard is in the Custom Scalars tab,",
        "the alerts in the Text tab, the depth x step heatmaps in the Images tab):",
        f"  tensorboard --logdir {shown}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``initwatch demo``: train, then print the table and the TensorBoard command."""
    out = out or sys.stdout
    settings = settings_from_args(args)
    print(header(settings), file=out, flush=True)
    started = time.perf_counter()
    with threads(args.threads):
        results = run_demo(settings)
    print("", file=out)
    print(format_results(results, settings), file=out)
    print(f"\n({len(results)} runs in {time.perf_counter() - started:.0f} s)", file=out)
    return 0
