"""Pictures of what initwatch measured, drawn with matplotlib (the ``plot`` extra).

Each init has one colour wherever it is drawn (:func:`scheme_colour`): the model's own init is
grey and each registered scheme keeps the colour of its place in the scheme registry, so a
scheme does not change colour between plots, whichever other schemes a plot shows.

Example::

    >>> scheme_colour("own init"), scheme_colour("vanilla")
    ('#444444', '#444444')
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from initwatch.preflight import CheckResult

OWN_COLOUR = "#444444"
# matplotlib's tab10 without its grey, then tab20's light shades: scheme i of the registry gets
# PALETTE[i % len(PALETTE)] (distinct for up to 18 schemes).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
)
_OWN_NAMES = ("own init", "vanilla", "none", "default")


def scheme_colour(name: str) -> str:
    """The colour of an init in every plot: grey for the model's own init, else the colour of
    the scheme's place in the registry (an unknown name gets the colour after the registry's).

    Example::

        >>> scheme_colour("deepnet"), scheme_colour("t-fixup"), scheme_colour("T-Fixup")
        ('#1f77b4', '#ff7f0e', '#ff7f0e')
    """
    if name.lower() in _OWN_NAMES:
        return OWN_COLOUR
    from initwatch.schemes.registry import SCHEMES, get

    order = list(SCHEMES)
    try:
        index = order.index(get(name).name)
    except ValueError:
        index = len(order)
    return PALETTE[index % len(PALETTE)]


def _figure(size: tuple[float, float], dpi: int = 90) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'initwatch[plot]'") from None
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, "No such directory", folder)
    fig.savefig(path)
    return path


def check_figure(result: CheckResult) -> Any:
    """The matplotlib ``Figure`` of a pre-flight check's depth profiles: one panel per
    statistic, block index on the x axis, a log scale, one colour per init
    (:func:`scheme_colour`), dashed at init and solid after the burst.

    Example::

        >>> from initwatch.preflight import OWN, CheckResult, CheckSettings, Variant
        >>> v = Variant("rezero", ["e.0", "e.1"], {"act_rms": {"e.0": 1.0, "e.1": 2.0}},
        ...             {"act_rms": {"e.0": 1.0, "e.1": 3.0}}, [2.0, 1.0])
        >>> fig = check_figure(CheckResult("m", [v], "rezero", "", CheckSettings("bert")))
        >>> {line.get_color() for line in fig.axes[0].lines} == {scheme_colour("rezero")}
        True
    """
    from initwatch.preflight import STATS

    measured = [v for v in result.variants if v.measured]
    fig = _figure((13, 4.2))
    axes = fig.subplots(1, len(STATS))
    for ax, (stat, title) in zip(axes, STATS, strict=True):
        for v in measured:
            xs = list(range(len(v.blocks)))
            for when, style in ((v.init, "--"), (v.after, "-")):
                ys = [when.get(stat, {}).get(b, math.nan) for b in v.blocks]
                ys = [y if y > 0 else math.nan for y in ys]
                label = v.name if style == "-" else None
                ax.plot(xs, ys, style, color=scheme_colour(v.name), label=label, lw=1.6)
        ax.set_yscale("log")
        ax.set_title(title.split(" (")[0], fontsize=10)
        ax.set_xlabel("block (input -> output)")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].legend(fontsize=8, title="dashed: init, solid: after", title_fontsize=7)
    s = result.settings
    fig.suptitle(
        f"initwatch check: {result.description} - {s.optimizer} lr {s.lr:g}, {s.steps} steps",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def check_profiles(result: CheckResult, path: str) -> str:
    """Draw :func:`check_figure` into ``path`` (PNG); returns ``path``.

    Example::

        >>> import tempfile, os
        >>> from initwatch.preflight import OWN, CheckResult, CheckSettings, Variant
        >>> v = Variant(OWN, ["e.0", "e.1"], {"act_rms": {"e.0": 1.0, "e.1": 2.0}},
        ...             {"act_rms": {"e.0": 1.0, "e.1": 3.0}}, [2.0, 1.0])
        >>> out = os.path.join(tempfile.mkdtemp(), "p.png")
        >>> check_profiles(CheckResult("m", [v], OWN, "", CheckSettings("bert")), out) == out
        True
    """
    return _save(check_figure(result), path)
