"""``initwatch report LOGDIR``: alerts, worst layers and a verdict from the TensorBoard event
files initwatch wrote, including a run that is still being written.

Example::

    >>> from initwatch.commands.report import find_runs
    >>> find_runs(__import__("tempfile").mkdtemp())
    []
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, cast

from initwatch.alerts import Alert
from initwatch.commands._text import table, wrap
from initwatch.commands.args import UsageError
from initwatch.numbers import fmt
from initwatch.vocabulary import Severity

NAME = "report"
HELP = (
    "Read the TensorBoard event files initwatch wrote under LOGDIR (a finished run or one still "
    "being written) and print the alerts, the worst layers and a short verdict."
)
EXAMPLES = """\
examples:
  initwatch report runs/initwatch-demo            # every initwatch run under a directory
  initwatch report lightning_logs/version_3 --plot heatmap.png
"""
PREFIX = "initwatch/"


def heatmap_stats() -> tuple[str, ...]:
    """The statistics ``--plot`` can draw: the catalogue's depth profiles (imported when the
    command's options are built, so ``initwatch --help`` loads no numpy or torch).

    Example::

        >>> "grad_norm" in heatmap_stats()
        True
    """
    from initwatch import catalogue

    return tuple(s.name for s in catalogue.CATALOGUE if s.depth_profile)


_EVENTS = "events.out.tfevents."
_BLOCK = re.compile(r"^(encoder|decoder)\.(\d+)$")
# The alert Markdown as initwatch wrote it before each alert was also written as plain data
# (``initwatch/alert_data``): kept only to read runs of those versions.
_ALERT = re.compile(
    r"\*\*(?P<severity>\w+) · (?P<kind>\w+)\*\* at `(?P<layer>[^`]*)` "
    r"\(step (?P<step>\d+), value (?P<value>[^,]+), threshold (?P<threshold>[^,)]+)"
    r"(?:, still since step (?P<first>\d+))?\): (?P<message>.*?)\n\n→ (?P<remedy>.*)",
    re.S,
)
# The layout of initwatch.alert_text.markdown before alert_data (a labelled value after the
# headline, the evidence, the remedy's alternatives as a list; a "still" update is its headline).
_ALERT_V2 = re.compile(
    r"\*\*(?P<severity>\w+) · (?P<kind>\w+)\*\* at `(?P<layer>[^`]*)` "
    r"\(step (?P<step>\d+)(?:, still since step (?P<first>\d+))?\): (?P<value>[^\n]*)"
    r"(?:\n\n(?P<message>.*?))?(?:\n\n\*\*What to do:\*\*\n\n(?P<remedy>.*))?\Z",
    re.S,
)


@dataclass
class Run:
    """The initwatch data of one TensorBoard run.

    Args:
        name: the run's path relative to LOGDIR (``"."`` for LOGDIR itself).
        path: the run directory.
        scalars: ``{tag: [(step, value), ...]}`` of every scalar in the run.
        alerts: the alerts, oldest first: read from the plain-data records
            (``initwatch/alert_data``), or parsed from the Markdown text for runs written by
            initwatch versions before those records.
        finished: True when the run wrote its ``initwatch/summary`` (it was closed).
        images: the heatmap image tags.

    Example::

        >>> Run("x", "x", {"initwatch/grad_norm/encoder.0": [(0, 1.0)]}).last_step
        0
    """

    name: str
    path: str
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    finished: bool = False
    images: list[str] = field(default_factory=list)
    unreadable: int = 0

    @property
    def steps(self) -> list[int]:
        """Every step that has an initwatch scalar, in order."""
        seen = {s for tag, pts in self.scalars.items() if tag.startswith(PREFIX) for s, _ in pts}
        return sorted(seen)

    @property
    def last_step(self) -> int | None:
        """The last step with initwatch data."""
        steps = self.steps
        return steps[-1] if steps else None

    def stat(self, stat: str) -> dict[str, list[tuple[int, float]]]:
        """``{layer: [(step, value), ...]}`` of ``initwatch/<stat>/<layer>``."""
        head = f"{PREFIX}{stat}/"
        return {t[len(head) :]: pts for t, pts in self.scalars.items() if t.startswith(head)}

    def at(self, stat: str, step: int | None = None) -> dict[str, float]:
        """``{layer: value}`` of a statistic at ``step`` (default: each layer's latest)."""
        out = {}
        for layer, pts in self.stat(stat).items():
            pts = [p for p in pts if step is None or p[0] == step]
            if pts:
                out[layer] = pts[-1][1]
        return out

    @property
    def new_alerts(self) -> list[Alert]:
        """Alerts without their "still" updates."""
        return [a for a in self.alerts if not a.is_update]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``initwatch report``.

    Example::

        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["runs"]).stat
        'grad_norm'
    """
    parser.add_argument(
        "logdir",
        metavar="LOGDIR",
        help="a TensorBoard log directory (searched recursively) or one event file",
    )
    parser.add_argument("--plot", metavar="PNG", help="save the depth x step heatmap here")
    parser.add_argument(
        "--stat",
        choices=heatmap_stats(),
        default="grad_norm",
        help="the statistic of the heatmap (default grad_norm)",
    )
    parser.add_argument(
        "--top", type=int, default=3, help="worst layers listed per statistic (default 3)"
    )


# ------------------------------------------------------------------------------ reading


def find_runs(logdir: str) -> list[str]:
    """Directories under ``logdir`` (itself included) that hold TensorBoard event files.

    Example::

        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); os.makedirs(os.path.join(d, "a"))
        >>> open(os.path.join(d, "a", "events.out.tfevents.1.x"), "wb").close()
        >>> [os.path.basename(p) for p in find_runs(d)]
        ['a']
    """
    if os.path.isfile(logdir):
        return [logdir] if os.path.basename(logdir).startswith(_EVENTS) else []
    if not os.path.isdir(logdir):
        raise FileNotFoundError(2, "No such file or directory", logdir)
    runs = []
    for root, dirs, files in os.walk(logdir):
        dirs.sort()
        if any(f.startswith(_EVENTS) for f in files):
            runs.append(root)
    return runs


def parse_alerts(markdown: str) -> list[Alert]:
    """Alerts from the Markdown text of runs written before initwatch wrote each alert as plain
    data (``initwatch/alert_data``); newer runs are read from that data, not from this text.

    The pattern is the Markdown those versions wrote; unparsable paragraphs are skipped.

    Example::

        >>> text = ("**error · nonfinite** at `encoder.1` (step 3, value nan, threshold 0): NaN"
        ...         "\\n\\n→ lower lr")
        >>> [(a.step, a.kind, a.layer, a.remedy) for a in parse_alerts(text)]
        [(3, 'nonfinite', 'encoder.1', 'lower lr')]
    """
    out = []
    for part in markdown.split("\n\n---\n\n"):
        m = _ALERT.search(part)
        remedy, threshold = (m["remedy"].strip(), m["threshold"]) if m else ("", "")
        if m is None:
            m = _ALERT_V2.search(part.strip())
            if m is None:
                continue
            items = [ln[2:] for ln in (m["remedy"] or "").splitlines() if ln.startswith("- ")]
            remedy = "; or ".join(items)
        first = int(m["first"]) if m["first"] else None
        try:
            out.append(
                Alert(
                    step=int(m["step"]),
                    kind=m["kind"],
                    layer=m["layer"],
                    value=_number(m["value"]),
                    threshold=_number(threshold),
                    severity=cast(Severity, m["severity"]),  # checked by Alert
                    message=(m["message"] or "").strip(),
                    remedy=remedy,
                    first_step=first,
                    repeat=int(first is not None and first != int(m["step"])),
                )
            )
        except ValueError:  # a kind or severity this version does not know
            continue
    return out


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_records(records: Sequence[bytes | str]) -> tuple[list[Alert], int]:
    """Alerts from their plain-data records (one JSON object each, as
    :func:`initwatch.sinks.tensorboard.alert_records` writes them), and how many records could
    not be read (e.g. a kind added by a newer initwatch).

    Example::

        >>> from initwatch.sinks.tensorboard import alert_records
        >>> a = Alert(3, "nonfinite", "encoder.1", float("nan"), 0.0, "error", "NaN", "lower lr")
        >>> alerts, bad = read_records(alert_records([a]) + ['{"kind": "new_kind"}'])
        >>> [(x.step, x.kind, x.remedy) for x in alerts], bad
        ([(3, 'nonfinite', 'lower lr')], 1)
    """
    import dataclasses
    import json

    known = {f.name for f in dataclasses.fields(Alert)}
    out, bad = [], 0
    for raw in records:
        try:
            data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            out.append(Alert.from_dict({k: v for k, v in data.items() if k in known}))
        except (ValueError, TypeError, AttributeError):
            bad += 1
    return out, bad


def _text(event: Any) -> str:
    values = event.tensor_proto.string_val
    return values[0].decode("utf-8", "replace") if values else ""


def load_run(path: str, logdir: str) -> Run | None:
    """Read one run with TensorBoard's ``EventAccumulator`` (every event kept); None when it
    holds no initwatch data. A file still being written is read up to its last whole record.

    Example::

        >>> import tempfile
        >>> load_run(tempfile.mkdtemp(), ".") is None
        True
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0, "images": 1})
    acc.Reload()
    tags = acc.Tags()
    scalar_tags = tags.get("scalars", [])
    tensor_tags = tags.get("tensors", [])
    ours = [t for t in scalar_tags if t.startswith(PREFIX)]
    text_tags = [t for t in tensor_tags if t.startswith(PREFIX)]
    if not ours and not text_tags:
        return None
    rel = os.path.relpath(path, logdir) if os.path.isdir(logdir) else os.path.basename(path)
    run = Run(name=rel, path=path)
    for tag in scalar_tags:
        run.scalars[tag] = [(int(e.step), float(e.value)) for e in acc.Scalars(tag)]
    data = f"{PREFIX}alert_data"
    by_step: dict[int, list[Alert]] = {}
    if data in text_tags:
        for event in acc.Tensors(data):
            alerts, bad = read_records(list(event.tensor_proto.string_val))
            by_step.setdefault(int(event.step), []).extend(alerts)
            run.unreadable += bad
    legacy: dict[int, list[Alert]] = {}
    for tag in (t for t in text_tags if t.startswith(f"{PREFIX}alerts")):
        for event in acc.Tensors(tag):  # runs of older versions: parse the Markdown
            if int(event.step) not in by_step:
                legacy.setdefault(int(event.step), []).extend(parse_alerts(_text(event)))
    for step, alerts in legacy.items():
        by_step[step] = sorted(alerts, key=lambda a: a.repeat > 0)
    run.alerts = [a for step in sorted(by_step) for a in by_step[step]]
    run.finished = any(t.startswith(f"{PREFIX}summary") for t in text_tags)
    run.images = [t for t in tags.get("images", []) if t.startswith(PREFIX)]
    return run


def load(logdir: str) -> list[Run]:
    """Every initwatch run under ``logdir``.

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        UsageError: no event files, or none with initwatch data.

    Example::

        >>> load("/no/such/dir")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: ...
    """
    paths = find_runs(logdir)
    if not paths:
        raise UsageError(f"no TensorBoard event files under {logdir}", "report")
    runs = [r for r in (load_run(p, logdir) for p in paths) if r is not None]
    if not runs:
        raise UsageError(
            f"the event files under {logdir} hold no initwatch data (no 'initwatch/' tags): "
            "was the run watched by InitWatch, InitWatchCallback or a Watch with a writer?",
            "report",
        )
    return runs


# ------------------------------------------------------------------------------ judging


def depth_key(name: str) -> tuple[int, str, int]:
    """Sort key putting blocks in forward order (encoder before decoder), others after.

    Example::

        >>> sorted(["encoder.10", "head", "encoder.2", "decoder.0"], key=depth_key)
        ['encoder.2', 'encoder.10', 'decoder.0', 'head']
    """
    m = _BLOCK.match(name)
    if m:
        return (0 if m[1] == "encoder" else 1, m[1], int(m[2]))
    return (2, name, 0)


def blocks_of(table_: dict[str, Any]) -> list[str]:
    """The block names (``encoder.3``...) among a table's keys, in depth order; every key when
    there are no blocks (models initwatch watches by module path).

    Example::

        >>> blocks_of({"encoder.1": 1, "encoder.0": 2, "head": 3})
        ['encoder.0', 'encoder.1']
    """
    names = [n for n in table_ if _BLOCK.match(n)]
    return sorted(names or list(table_), key=depth_key)


@dataclass
class Verdict:
    """A run's verdict: ``healthy`` or ``unhealthy``, with the reason.

    Example::

        >>> Verdict(True, "no alerts").label
        'healthy'
    """

    healthy: bool
    reason: str

    @property
    def label(self) -> str:
        """``"healthy"`` or ``"UNHEALTHY"``."""
        return "healthy" if self.healthy else "UNHEALTHY"


def grad_ratio(run: Run, step: int | None = None) -> float:
    """Smallest block gradient norm over the largest of the top quarter of blocks."""
    values = run.at("grad_norm", step)
    blocks = [b for b in blocks_of(values) if math.isfinite(values[b])]
    if len(blocks) < 2:
        return math.nan
    top = max(values[b] for b in blocks[-max(1, len(blocks) // 4) :])
    return min(values[b] for b in blocks) / top if top > 0 else math.nan


def loss_series(run: Run) -> list[tuple[int, float]]:
    """The loss initwatch logged (``initwatch/global/loss``), else a ``*loss*`` scalar."""
    for tag in (f"{PREFIX}global/loss", "train_loss", "train/loss", "loss"):
        if run.scalars.get(tag):
            return run.scalars[tag]
    for tag, pts in run.scalars.items():
        if "loss" in tag and pts:
            return pts
    return []


def verdict(run: Run) -> Verdict:
    """Judge a run from its alerts, its gradient profile and its loss.

    Example::

        >>> verdict(Run("r", "r")).healthy
        True
    """
    new = run.new_alerts
    loss = loss_series(run)
    trend = ""
    if len(loss) >= 2:
        trend = f"loss {fmt(loss[0][1], fixed=True)} -> {fmt(loss[-1][1], fixed=True)}"
    if new:
        kinds: dict[str, Alert] = {}
        for a in new:
            kinds.setdefault(a.kind, a)
        parts = [f"{k} since step {a.step} at {a.layer}" for k, a in kinds.items()]
        errors = sum(a.severity == "error" for a in new)
        head = f"{len(new)} alert{'s' if len(new) > 1 else ''}"
        if errors:
            head += f" ({errors} error{'s' if errors > 1 else ''})"
        text = f"{head}: {'; '.join(parts)}"
        if trend:
            text += f"; {trend}"
        return Verdict(False, text + " (remedies above)")
    ratio = grad_ratio(run)
    bits = ["no alerts"]
    if math.isfinite(ratio):
        bits.append(f"lowest block gradient {fmt(ratio, fixed=True)}x the top blocks'")
    if trend:
        bits.append(trend)
    return Verdict(True, ", ".join(bits))


def worst_layers(run: Run, top: int = 3) -> list[tuple[str, list[tuple[str, float]]]]:
    """For each statistic, the ``top`` worst layers at the last step: ``[(label, [(layer,
    value), ...]), ...]``.

    Example::

        >>> r = Run("r", "r", {"initwatch/grad_norm/encoder.00": [(0, 1e-6)],
        ...                    "initwatch/grad_norm/encoder.01": [(0, 0.5)]})
        >>> worst_layers(r, top=1)[0]
        ('smallest gradient norm', [('encoder.0', 1e-06)])
    """
    step = run.last_step
    out = []
    from initwatch import catalogue
    from initwatch.sinks.layout import TagNames

    for stat, label, highest in catalogue.worst_checks():
        values = run.at(stat, step)
        values = {k: v for k, v in values.items() if math.isfinite(v)}
        if not values:
            continue
        ranked = sorted(values.items(), key=lambda kv: kv[1], reverse=highest)
        # the layers as the alerts name them (tags pad the block index for TensorBoard)
        out.append((label, [(TagNames.plain(k), v) for k, v in ranked[: max(1, top)]]))
    return out


# ------------------------------------------------------------------------------ output


def format_run(run: Run, top: int = 3) -> str:
    """The report of one run.

    Example::

        >>> print(format_run(Run("demo/vanilla", "p")).splitlines()[0])
        run demo/vanilla: no initwatch steps yet (still being written)
    """
    steps = run.steps
    state = "finished" if run.finished else "still being written"
    if not steps:
        return f"run {run.name}: no initwatch steps yet ({state})"
    lines = [
        f"run {run.name}: steps {steps[0]}-{steps[-1]} ({len(steps)} logged), {state}",
    ]
    new = run.new_alerts
    if new:
        lines.append(f"  alerts ({len(new)}):")
        for a in new:
            lines.append(f"    step {a.step}: {a.severity} {a.kind} at {a.layer}")
            lines.append(wrap(a.message, indent="      "))
            lines.append(wrap("remedy: " + a.remedy, indent="      "))
    else:
        lines.append("  alerts: none")
    if run.unreadable:
        lines.append(
            f"  ({run.unreadable} alert record{'s' if run.unreadable > 1 else ''} could not be "
            "read: written by a newer initwatch?)"
        )
    worst = worst_layers(run, top)
    if worst:
        lines.append(f"  worst layers at step {steps[-1]}:")
        rows = [
            [label, ", ".join(f"{name} ({fmt(v, fixed=True)})" for name, v in ranked)]
            for label, ranked in worst
        ]
        lines += ["    " + ln for ln in table(["statistic", "layers"], rows).splitlines()]
    v = verdict(run)
    lines.append(wrap(f"verdict: {v.label}: {v.reason}", indent="  "))
    return "\n".join(lines)


def order(runs: Sequence[Run]) -> list[tuple[Run, Verdict]]:
    """The runs with their verdicts, unhealthy first (then in their order on disk).

    Example::

        >>> from initwatch.alerts import Alert
        >>> bad = Run("b", "b", alerts=[Alert(1, "nonfinite", "x", 0.0, 0.0, "error", "m", "r")])
        >>> [r.name for r, _ in order([Run("a", "a"), bad])]
        ['b', 'a']
    """
    judged = [(r, verdict(r)) for r in runs]
    return sorted(judged, key=lambda rv: rv[1].healthy)


def format_report(runs: Sequence[Run], top: int = 3) -> str:
    """The report: with several runs, a summary first (how many are unhealthy, and a table),
    then each run, unhealthy runs first.

    Example::

        >>> print(format_report([Run("a", "a")]))
        run a: no initwatch steps yet (still being written)
    """
    ranked = order(runs)
    parts = []
    if len(runs) > 1:
        sick = [r.name for r, v in ranked if not v.healthy]
        if sick:
            head = f"{len(sick)} of {len(runs)} runs UNHEALTHY: {', '.join(sick)}"
        else:
            head = f"all {len(runs)} runs healthy"
        rows = [
            [r.name, str(len(r.new_alerts)), v.label, fmt(grad_ratio(r), fixed=True)]
            for r, v in ranked
        ]
        parts.append(head + "\n\n" + table(["run", "alerts", "verdict", "low/top grad"], rows))
    parts += [format_run(r, top) for r, _ in ranked]
    return "\n\n".join(parts)


def update_ratio_band(run: Run) -> dict[str, float]:
    """The update/weight ratio's healthy target and alert band of a run: the threshold lines the
    TensorBoard sink wrote (``initwatch/threshold/log10_update_ratio/*``: the rules' own, a
    fine-tune's included), else the default thresholds.

    Example::

        >>> update_ratio_band(Run("r", "r"))
        {'target': 0.001, 'high': 0.1, 'low': 1e-05}
    """
    from initwatch.rules.thresholds import Thresholds

    th = Thresholds()
    out = {"target": th.update_ratio_target, "high": th.update_ratio_high}
    out["low"] = th.update_ratio_low
    for name in out:
        pts = run.scalars.get(f"{PREFIX}threshold/log10_update_ratio/{name}")
        if pts:
            out[name] = 10.0 ** pts[-1][1]
    return out


def _ratio_panel(ax: Any, run: Run) -> None:
    """The update/weight ratio of every block over steps (log axis, one line per block
    coloured by depth), the target line and the alert band (Karpathy's ratio-vs-1e-3 plot)."""
    from matplotlib import colormaps

    series = run.stat("update_ratio")
    rows = blocks_of(series)
    band = update_ratio_band(run)
    ax.axhspan(band["low"], band["high"], color="0.93", zorder=0)
    cmap = colormaps["viridis"]
    for i, name in enumerate(rows):
        pts = [(s, v) for s, v in series[name] if v > 0 and math.isfinite(v)]
        if pts:
            colour = cmap(i / max(1, len(rows) - 1))
            ax.plot(
                *zip(*pts, strict=True),
                color=colour,
                lw=0.8,
                label=name if i in (0, len(rows) - 1) else None,
            )
    ax.axhline(band["target"], color="black", lw=1.2, label=f"target {fmt(band['target'])}")
    ax.set_yscale("log")
    ax.set_title(
        f"{run.name}: update/weight ratio per block (input: purple, output: yellow); grey: the "
        f"alert band {band['low']:g} to {band['high']:g}",
        fontsize=10,
    )
    ax.set_xlabel("step")
    ax.legend(fontsize=7, loc="upper right")


def heatmap(runs: Sequence[Run], stat: str, path: str) -> str:
    """Save the depth x step heatmap of ``log10(stat)`` per run (one panel each) to ``path``,
    and below them the update/weight ratio of every block over steps with its 1e-3 target line
    and alert band (one panel per run that has ``update_ratio``).

    Example::

        >>> import tempfile, os
        >>> r = Run("r", "r", {f"initwatch/grad_norm/encoder.{i}": [(0, 1.0), (10, 0.1)]
        ...                    for i in range(3)})
        >>> out = os.path.join(tempfile.mkdtemp(), "h.png")
        >>> heatmap([r], "grad_norm", out) == out
        True
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib: pip install 'initwatch[plot]'", "report"
        ) from None
    shown = [r for r in runs if r.stat(stat)]
    if not shown:
        raise UsageError(f"--plot: no run has initwatch/{stat} scalars", "report")
    shown = shown[:8]
    panels = []
    for run in shown:
        series = run.stat(stat)
        rows = blocks_of(series)
        steps = sorted({s for name in rows for s, _ in series[name]})
        col = {s: i for i, s in enumerate(steps)}
        m = np.full((len(rows), len(steps)), np.nan)
        for i, name in enumerate(rows):
            for s, v in series[name]:
                if v > 0 and math.isfinite(v):
                    m[i, col[s]] = math.log10(v)
        panels.append((run, rows, steps, m))
    finite = np.concatenate([m[np.isfinite(m)] for *_, m in panels] or [np.zeros(1)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    heights = [max(2.2, 0.16 * len(rows) + 1.2) for _, rows, _, _ in panels]
    ratios = [r for r in shown if r.stat("update_ratio")]
    heights += [3.0] * len(ratios)
    fig = Figure(figsize=(10, sum(heights)), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, run in zip(axes[len(panels) :], ratios, strict=True):
        _ratio_panel(ax, run)
    for ax, (run, rows, steps, m) in zip(axes, panels, strict=False):
        im = ax.imshow(
            np.ma.masked_invalid(m), aspect="auto", interpolation="nearest", vmin=lo, vmax=hi
        )
        ax.set_title(f"{run.name}: log10 {stat} (one colour scale for all runs)", fontsize=10)
        ax.set_ylabel("block")
        ticks = list(range(0, len(rows), max(1, len(rows) // 16)))
        ax.set_yticks(ticks, [rows[i] for i in ticks], fontsize=7)
        xt = list(range(0, len(steps), max(1, len(steps) // 10)))
        ax.set_xticks(xt, [str(steps[i]) for i in xt], fontsize=7)
        ax.set_xlabel("step")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path)
    return path


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``initwatch report``: read, print, optionally plot."""
    out = out or sys.stdout
    if args.plot:
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            raise UsageError(f"--plot: no such directory: {folder}", "report")
    runs = load(args.logdir)
    print(format_report(runs, top=args.top), file=out)
    if args.plot:
        heatmap(runs, args.stat, args.plot)
        print(
            f"\nHeatmap of log10 {args.stat} and the update/weight ratio over steps drawn to "
            f"{args.plot}",
            file=out,
        )
    return 0
