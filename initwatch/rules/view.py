"""Read a frame the way the rules need it: parameters grouped into units, streams by depth."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np

from initwatch.blocks import Blocks, aggregate, combine
from initwatch.frame import Frame, LayerInfo

# Activation sources that carry the residual stream (or, in models without blocks, the
# sequence of layers). Branch outputs ("attn", "cross", "ffn") are left out: they are small at
# init under ReZero, T-Fixup and DeepNet by design.
STREAM_KINDS = ("linear", "module", "act")


def finite(x: float | None) -> TypeGuard[float]:
    """True for a real, finite number (and then the type checker reads ``x`` as a float).

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

    Its values come from the one per-block aggregation (:mod:`initwatch.blocks`), the same
    numbers TensorBoard's per-block tags show.

    Args:
        name: the block's layer name (``"encoder.3"``) or the module path (``"net.2"``).
        stack: the stack, ``"model"`` when none.
        params: the parameters in the unit.
        is_block: True for a transformer block.
        blocks: the frame's aggregation and the unit's position in it (set by
            :func:`param_units`; a unit built by hand is aggregated on its own).

    Example::

        >>> Unit("encoder.0", "encoder", [], True).name
        'encoder.0'
    """

    name: str
    stack: str
    params: list[LayerInfo] = field(default_factory=list)
    is_block: bool = False
    blocks: tuple[Blocks, int] | None = field(default=None, repr=False, compare=False)

    def _value(self, frame: Frame, stat: str) -> float:
        if self.blocks is not None:
            table, i = self.blocks
            return float(table.values[stat][i]) if table.given[stat][i] else math.nan
        values, given = combine(self.params, frame)
        return float(values[stat][0]) if given[stat][0] else math.nan

    def grad_norm(self, frame: Frame, skip_blocks: bool = False) -> float:
        """The unit's gradient norm (:mod:`initwatch.blocks`); NaN when it has none, or when
        ``skip_blocks`` and the unit is a block (the grace of a zero-started scheme).

        Example::

            >>> ps = [LayerInfo("a", "param", 0, "a"), LayerInfo("b", "param", 1, "b")]
            >>> f = Frame(0, ps, {"grad_norm": {"a": 3.0, "b": 4.0}})
            >>> Unit("m", "model", ps).grad_norm(f)
            5.0
        """
        if skip_blocks and self.is_block:
            return math.nan
        return self._value(frame, "grad_norm")

    def update_ratio(self, frame: Frame) -> float:
        """The unit's ||update|| / ||weight|| (:mod:`initwatch.blocks`: usable tensors, each
        weighted by its weight norm).

        A unit none of whose parameters moved (a ratio of exactly 0: not in the optimizer, or
        frozen by hand) is left out (NaN); a parameter that did not move while others did
        counts as zero. NaN when nothing is usable.

        Example::

            >>> ps = [LayerInfo("w", "param", 0, "w"), LayerInfo("b", "param", 1, "b")]
            >>> f = Frame(0, ps, {"update_ratio": {"w": 1e-3, "b": 1.0},
            ...                   "weight_norm": {"w": 10.0, "b": 1e-6}})
            >>> round(Unit("m", "model", ps).update_ratio(f), 6)  # the tiny bias barely counts
            0.001
        """
        r = self._value(frame, "update_ratio")
        return math.nan if r == 0 else r


def param_units(frame: Frame, blocks_only: bool = True) -> dict[str, list[Unit]]:
    """Parameters grouped into units (:func:`initwatch.blocks.aggregate`), per stack, in
    forward order; units without a usable parameter (all frozen, or zero by construction)
    are left out.

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
    key = f"units:{blocks_only}"
    table = aggregate(frame)  # first: a frame built from dictionaries is read afresh
    found = frame.cache.get(key)
    if found is not None:
        return found
    has_blocks = any(table.is_block)
    usable_counts = table.values["usable"].tolist()
    out: dict[str, list[Unit]] = {}
    for i, name in enumerate(table.names):
        is_block = table.is_block[i]
        if (blocks_only and has_blocks and not is_block) or usable_counts[i] <= 0:
            continue
        unit = Unit(name, table.stacks[i], table.members[i], is_block, (table, i))
        out.setdefault(unit.stack, []).append(unit)
    frame.cache[key] = out
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
    key = ("streams", stat)
    frame.table  # noqa: B018 (a frame built from dictionaries is read afresh first)
    found = frame.cache.get(key)
    if found is not None:
        return found
    ix = frame.index()
    vals = frame.column(stat)
    ok = np.isfinite(vals)
    blocks = ok & ix.of_kind("block")
    is_blocks = bool(blocks.any())
    where = np.flatnonzero(blocks if is_blocks else ok & ix.of_kind(STREAM_KINDS))
    groups: dict[tuple[str, str], Stream] = {}
    layers = frame.layers
    for k, v in zip(where.tolist(), vals[where].tolist(), strict=True):
        i = layers[k]
        stack = i.stack or "model"
        g = groups.get((stack, i.kind))
        if g is None:
            g = groups[(stack, i.kind)] = Stream(stack, is_blocks, [])
        g.items.append((i, v))
    found = frame.cache[key] = list(groups.values())
    return found
