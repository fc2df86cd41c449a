"""Read a frame the way the rules need it: parameters grouped into units, streams by depth."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from initwatch.frame import Frame, LayerInfo

# Activation sources that carry the residual stream (or, in models without blocks, the
# sequence of layers). Branch outputs ("attn", "cross", "ffn") are left out: they are small at
# init under ReZero, T-Fixup and DeepNet by design.
STREAM_KINDS = ("linear", "module", "act")


def finite(x: float | None) -> bool:
    """True for a real, finite number.

    Example::

        >>> finite(1.0), finite(float("nan")), finite(None)
        (True, False, False)
    """
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def median(xs: list[float]) -> float:
    """The median of a non-empty list.

    Example::

        >>> median([3.0, 1.0, 2.0, 10.0])
        2.5
    """
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def fmt(x: float) -> str:
    """A number in 2 significant digits, the way messages quote evidence.

    Example::

        >>> fmt(0.000123456), fmt(12.0), fmt(314.2), fmt(float("nan"))
        ('1.2e-04', '12', '314', 'nan')
    """
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 10 <= abs(x) < 1e4:
        return f"{x:.0f}"
    if 1e-2 <= abs(x) < 10:
        return f"{x:.2g}"
    return f"{x:.1e}"


def name_list(names: list[str], limit: int = 6) -> str:
    """``a, b, c`` or ``a, b, ... (+3 more)``.

    Example::

        >>> name_list(["a", "b", "c"], limit=2)
        'a, b (+1 more)'
    """
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" (+{len(names) - limit} more)"


@dataclass
class Unit:
    """A group of parameters judged together: one block, or one module outside blocks.

    Args:
        name: the block's layer name (``"encoder.3"``) or the module path (``"net.2"``).
        stack: the stack, ``"model"`` when none.
        params: the parameters in the unit.
        is_block: True for a transformer block.

    Example::

        >>> Unit("encoder.0", "encoder", [], True).name
        'encoder.0'
    """

    name: str
    stack: str
    params: list[LayerInfo] = field(default_factory=list)
    is_block: bool = False

    def grad_norm(self, frame: Frame, skip_blocks: bool = False) -> float:
        """sqrt(sum of squared gradient norms) of its usable parameters (NaN when none).

        Example::

            >>> ps = [LayerInfo("a", "param", 0, "a"), LayerInfo("b", "param", 1, "b")]
            >>> f = Frame(0, ps, {"grad_norm": {"a": 3.0, "b": 4.0}})
            >>> Unit("m", "model", ps).grad_norm(f)
            5.0
        """
        total, seen = 0.0, False
        for p in self.params:
            g = frame.get("grad_norm", p.name)
            if not usable(p) or not finite(g) or (skip_blocks and p.block is not None):
                continue
            total += g * g
            seen = True
        return math.sqrt(total) if seen else math.nan

    def update_ratio(self, frame: Frame) -> float:
        """The unit's ||update|| / ||weight||, weighting each parameter by its weight norm.

        A unit none of whose parameters moved (not in the optimizer, or frozen by hand) is left
        out (NaN); a parameter that did not move while others did counts as zero. Falls back to
        the median of the parameters' ratios when weight norms are missing. NaN when nothing is
        usable.

        Example::

            >>> ps = [LayerInfo("w", "param", 0, "w"), LayerInfo("b", "param", 1, "b")]
            >>> f = Frame(0, ps, {"update_ratio": {"w": 1e-3, "b": 1.0},
            ...                   "weight_norm": {"w": 10.0, "b": 1e-6}})
            >>> round(Unit("m", "model", ps).update_ratio(f), 6)  # the tiny bias barely counts
            0.001
        """
        num, den, plain, moved = 0.0, 0.0, [], False
        for p in self.params:
            r = frame.get("update_ratio", p.name)
            if not usable(p) or not finite(r):
                continue
            moved = moved or r > 0
            w = frame.get("weight_norm", p.name)
            if finite(w) and w > 0:
                num += (r * w) ** 2
                den += w * w
            else:
                plain.append(r)
        if not moved:
            return math.nan
        if den > 0:
            return math.sqrt(num / den)
        return median(plain)


def usable(p: LayerInfo) -> bool:
    """A parameter rules may judge: trainable and not zero by construction.

    Example::

        >>> usable(LayerInfo("k.bias", "param", 0, "k.bias", zero_by_construction=True))
        False
    """
    return p.trainable and not p.zero_by_construction


def _unit_of(p: LayerInfo, block_names: dict[tuple[str | None, int], str]) -> tuple[str, str, bool]:
    stack = p.stack or "model"
    if p.block is not None:
        name = block_names.get((p.stack, p.block))
        if name is None:
            name = f"{p.stack}.{p.block}" if p.stack else f"block.{p.block}"
        return name, stack, True
    module = p.name.rsplit(".", 1)[0] if "." in p.name else p.name
    return module, stack, False


def param_units(frame: Frame, blocks_only: bool = True) -> dict[str, list[Unit]]:
    """Parameters grouped into units, per stack, in forward order.

    When the frame has parameters inside blocks and ``blocks_only`` is True, only block units
    are returned (embeddings, final norms and heads are not part of the depth comparison);
    otherwise every module with parameters outside blocks is a unit too.

    Example::

        >>> from initwatch.frame import Frame, LayerInfo
        >>> ps = [LayerInfo("l1.weight", "param", 0, "l1.weight"),
        ...       LayerInfo("l1.bias", "param", 1, "l1.bias")]
        >>> [u.name for u in param_units(Frame(0, ps, {}))["model"]]
        ['l1']
    """
    block_names = {
        (i.stack, i.block): i.name
        for i in frame.layers
        if i.kind == "block" and i.block is not None
    }
    params = [i for i in frame.layers if i.kind == "param"]
    has_blocks = any(p.block is not None for p in params)
    units: dict[str, Unit] = {}
    for p in params:
        name, stack, is_block = _unit_of(p, block_names)
        if blocks_only and has_blocks and not is_block:
            continue
        u = units.get(name)
        if u is None:
            u = units[name] = Unit(name, stack, [], is_block)
        u.params.append(p)
    out: dict[str, list[Unit]] = {}
    for u in units.values():
        out.setdefault(u.stack, []).append(u)
    return out


@dataclass
class Stream:
    """Activation sources of one group along the depth, with one statistic each.

    Args:
        stack: the stack the group belongs to (``"model"`` when none): the scope of alerts.
        blocks: True when the group is made of transformer blocks.
        items: ``(layer, value)`` pairs in forward order.

    Example::

        >>> Stream("model", False, []).stack
        'model'
    """

    stack: str
    blocks: bool
    items: list[tuple[LayerInfo, float]]


def stream_groups(frame: Frame, stat: str) -> list[Stream]:
    """Activation sources along the depth, grouped, for depth-wise rules on ``stat``.

    Blocks (one group per stack) when the frame has any; otherwise layers of kind
    ``"linear"``, ``"module"`` and ``"act"``, one group per kind and stack. Values that are not
    finite are dropped.

    Example::

        >>> from initwatch.frame import Frame, LayerInfo
        >>> ls = [LayerInfo(f"e.{i}", "block", i, f"l.{i}", stack="encoder", block=i) for i in range(2)]
        >>> f = Frame(0, ls, {"act_rms": {"e.0": 1.0, "e.1": 2.0}})
        >>> [(g.stack, [v for _, v in g.items]) for g in stream_groups(f, "act_rms")]
        [('encoder', [1.0, 2.0])]
    """
    series = [(i, v) for i, v in frame.series(stat) if finite(v)]
    blocks = [(i, v) for i, v in series if i.kind == "block"]
    groups: dict[tuple[str, str], Stream] = {}
    for i, v in blocks or series:
        if not blocks and i.kind not in STREAM_KINDS:
            continue
        stack = i.stack or "model"
        g = groups.get((stack, i.kind))
        if g is None:
            g = groups[(stack, i.kind)] = Stream(stack, bool(blocks), [])
        g.items.append((i, v))
    return list(groups.values())
