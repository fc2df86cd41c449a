"""Parameter statistics per block: the one aggregation the sinks, the rules and the report read.

Per-tensor statistics (gradient norm, weight norm, update ratio...) are combined into *units*:
one per transformer block (``"encoder.3"``), and one per module for parameters outside blocks
(``"wte"``, ``"net.2"``). How each statistic combines is declared in the catalogue
(:attr:`initwatch.catalogue.Statistic.block`); which tensors take part is decided here, once:

* ``weight_norm``: the L2 norm over every measured tensor of the unit;
* ``grad_norm``: the L2 norm over the tensors with a gradient this step (a non-finite tensor
  norm makes it non-finite);
* ``grad_weight_ratio``: that gradient norm over the weight norm of the same tensors;
* ``update_ratio``: ``||ΔW|| / ||W||`` over the unit's *usable* tensors (trainable, not zero
  by construction; the Watch marks a tensor without a gradient this step as zero by
  construction) with a finite update ratio, each weighted by its weight norm
  (``sqrt(Σ (r·w)² / Σ w²)``); when no weight norm is known, the median of their ratios. A
  frozen tensor, or one without a gradient, does not dilute it;
* ``grad_nonfinite``: how many of the unit's tensors had a non-finite gradient;
* ``usable``: how many usable tensors the unit holds (rules judge only units with some).

TensorBoard's per-block tags and the alerts quote these same numbers.

Example::

    >>> from initwatch.frame import Frame, LayerInfo, Table
    >>> ps = [LayerInfo("h.0.w", "param", 0, "h.0.w", "decoder", 0),
    ...       LayerInfo("h.0.frozen", "param", 1, "h.0.frozen", "decoder", 0, trainable=False)]
    >>> f = Frame(0, ps, {"update_ratio": {"h.0.w": 1e-3}, "weight_norm": {"h.0.w": 1.0,
    ...                   "h.0.frozen": 3.0}})
    >>> aggregate(f).table("update_ratio")
    {'decoder.0': 0.001}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from initwatch.catalogue import names
from initwatch.frame import Frame, LayerInfo, Table

STATS = tuple(n for n in names("param"))  # the per-block statistics, in catalogue order


def param_group(info: LayerInfo, block_names: dict | None = None) -> str:
    """The unit a parameter is aggregated into: its block (``"encoder.3"``, or the name of the
    block layer of its stack and index in ``block_names``) or its module path (``"root"`` for a
    parameter of the top module).

    Example::

        >>> param_group(LayerInfo("h.0.attn.c_attn.weight", "param", 0, "h.0.attn.c_attn.weight",
        ...                       stack="decoder", block=0))
        'decoder.0'
        >>> param_group(LayerInfo("wte.weight", "param", 1, "wte.weight"))
        'wte'
    """
    if info.block is not None:
        found = (block_names or {}).get((info.stack, info.block))
        if found is not None:
            return found
        if info.stack is not None:
            return f"{info.stack}.{info.block}"
    return info.name.rsplit(".", 1)[0] if "." in info.name else "root"


def usable(p: LayerInfo) -> bool:
    """A tensor whose gradient and update count: trainable and not zero by construction (the
    Watch marks a tensor without a gradient this step as zero by construction).

    Example::

        >>> usable(LayerInfo("k.bias", "param", 0, "k.bias", zero_by_construction=True))
        False
    """
    return p.trainable and not p.zero_by_construction


@dataclass
class Blocks:
    """Per-unit parameter statistics of one frame.

    Args:
        names: unit names in depth order (first tensor's position).
        stacks: each unit's stack (``"model"`` outside stacks).
        is_block: True for a transformer block.
        lora: True for a unit holding a LoRA-adapted weight (role ``"lora"``).
        members: each unit's parameters.
        values: ``{stat: array over units}``; given: ``{stat: bool array}``, which units
            have the statistic.

    Example::

        >>> ps = [LayerInfo("a.w", "param", 0, "a.w"), LayerInfo("a.b", "param", 1, "a.b")]
        >>> b = aggregate(Frame(0, ps, {"grad_norm": {"a.w": 3.0, "a.b": 4.0}}))
        >>> b.names, b.value("grad_norm", "a")
        (['a'], 5.0)
    """

    names: list[str]
    stacks: list[str]
    is_block: list[bool]
    lora: list[bool]
    members: list[list[LayerInfo]]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    given: dict[str, np.ndarray] = field(default_factory=dict)

    def table(self, stat: str) -> dict[str, float]:
        """``{unit: value}`` of the units that have ``stat``, in depth order."""
        vals, given = self.values[stat].tolist(), self.given[stat].tolist()
        return {n: v for n, v, ok in zip(self.names, vals, given, strict=True) if ok}

    def value(self, stat: str, unit: str) -> float:
        """One unit's value (NaN when it has none)."""
        i = self.names.index(unit)
        return float(self.values[stat][i]) if self.given[stat][i] else math.nan


def combine(
    params: Sequence[LayerInfo], frame: Frame, ids: Sequence[int] | None = None, n: int = 1
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The aggregation itself: per-unit values of ``params`` (unit ``ids[i]`` of ``n``; all
    in one unit by default), as ``(values, given)`` arrays per statistic (see the module
    docstring for which tensors take part in which statistic), read from the frame's table.

    Example::

        >>> ps = [LayerInfo("w", "param", 0, "w"), LayerInfo("b", "param", 1, "b")]
        >>> f = Frame(0, ps, {"update_ratio": {"w": 1e-3, "b": 1.0},
        ...                   "weight_norm": {"w": 10.0, "b": 1e-6}})
        >>> round(float(combine(ps, f)[0]["update_ratio"][0]), 6)  # the tiny bias barely counts
        0.001
    """
    table = frame.table
    cols = np.array([table.cols.get(p.name, -1) for p in params], dtype=np.int64)
    return _combine(table, cols, params, ids, n)


def _combine(
    table: Table,
    cols: np.ndarray,
    params: Sequence[LayerInfo],
    ids: Sequence[int] | np.ndarray | None,
    n: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    ids_ = np.zeros(len(params), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    ok = np.fromiter(
        (p.trainable and not p.zero_by_construction for p in params), bool, len(params)
    )
    known = cols >= 0
    safe = np.where(known, cols, 0)

    def column(stat: str) -> tuple[np.ndarray, np.ndarray]:
        row = table.row(stat)
        if row is None:
            return np.full(len(cols), math.nan), np.zeros(len(cols), dtype=bool)
        vals, given = row
        has = known & given[safe]
        return np.where(has, vals[safe], math.nan), has

    def total(x: np.ndarray) -> np.ndarray:
        return np.bincount(ids_, weights=x, minlength=n) if len(x) else np.zeros(n)

    def count(mask: np.ndarray) -> np.ndarray:
        return total(mask.astype(np.float64)) > 0

    g, has_g = column("grad_norm")
    w, has_w = column("weight_norm")
    r, has_r = column("update_ratio")
    bad, has_bad = column("grad_nonfinite")
    values: dict[str, np.ndarray] = {}
    given: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        w2 = np.where(has_w, w * w, 0.0)
        values["weight_norm"], given["weight_norm"] = np.sqrt(total(w2)), count(has_w)
        gn = np.sqrt(total(np.where(has_g, g * g, 0.0)))
        values["grad_norm"], given["grad_norm"] = gn, count(has_g)
        wg = np.sqrt(total(np.where(has_g, w2, 0.0)))
        values["grad_weight_ratio"] = np.where(wg > 0, gn / np.where(wg > 0, wg, 1.0), math.nan)
        given["grad_weight_ratio"] = given["grad_norm"]
        in_r = ok & has_r & np.isfinite(r)
        weighted = in_r & np.isfinite(w) & (w > 0)
        num = total(np.where(weighted, (r * w) ** 2, 0.0))
        den = total(np.where(weighted, w2, 0.0))
        ur = np.where(den > 0, np.sqrt(num / np.where(den > 0, den, 1.0)), math.nan)
        given["update_ratio"] = count(in_r)
        for unit in np.flatnonzero(given["update_ratio"] & ~(den > 0)).tolist():
            ur[unit] = float(np.median(r[in_r & (ids_ == unit)]))  # no weight norm known
        values["update_ratio"] = ur
        values["grad_nonfinite"] = total(np.where(has_bad, bad, 0.0))
        given["grad_nonfinite"] = count(has_bad)
        values["usable"] = total(ok.astype(np.float64))
        given["usable"] = np.ones(n, dtype=bool)
    return values, given


def _units(frame: Frame) -> tuple[np.ndarray, np.ndarray, list, list, list]:
    """Which layers are parameters and the unit of each (made once per layer index: the
    Watch's frames share one)."""
    ix = frame.index()
    found = ix.cache.get("units")
    if found is not None:
        return found
    layers = frame.layers
    block_names = {
        (i.stack, i.block): i.name for i in layers if i.kind == "block" and i.block is not None
    }
    positions = np.flatnonzero(ix.is_param)
    index: dict[str, int] = {}
    names: list[str] = []
    stacks: list[str] = []
    is_block: list[bool] = []
    ids = []
    for pos in positions.tolist():
        p = layers[pos]
        name = param_group(p, block_names)
        k = index.get(name)
        if k is None:
            k = index[name] = len(names)
            names.append(name)
            stacks.append(p.stack or "model")
            is_block.append(p.block is not None)
        ids.append(k)
    found = ix.cache["units"] = (positions, np.array(ids, dtype=np.int64), names, stacks, is_block)
    return found


def aggregate(frame: Frame) -> Blocks:
    """The per-unit parameter statistics of ``frame`` (computed once per frame and kept).

    Example::

        >>> ps = [LayerInfo("fc.weight", "param", 0, "fc.weight")]
        >>> f = Frame(0, ps, {"weight_norm": {"fc.weight": 2.0}})
        >>> aggregate(f).table("weight_norm")
        {'fc': 2.0}
    """
    table = frame.table  # (re)made first: a frame built from dictionaries may have changed
    found = frame.cache.get("blocks")
    if found is not None:
        return found
    positions, ids, names, stacks, is_block = _units(frame)
    layers = frame.layers
    params = [layers[i] for i in positions.tolist()]
    members: list[list[LayerInfo]] = [[] for _ in names]
    lora = [False] * len(names)
    for k, p in zip(ids.tolist(), params, strict=True):
        members[k].append(p)
        lora[k] = lora[k] or p.role == "lora"
    out = Blocks(names, stacks, is_block, lora, members)
    cols = frame.index().cols[positions]
    out.values, out.given = _combine(table, cols, params, ids, len(names))
    frame.cache["blocks"] = out
    return out


__all__ = ["STATS", "Blocks", "aggregate", "combine", "param_group", "usable"]
