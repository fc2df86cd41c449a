"""A frame: the statistics of one logging step, as host data (step x layer x statistic)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Statistic names. Activation statistics are keyed by monitored module (LayerInfo.kind in
# "block", "attn", "cross", "ffn", "act", "linear", "module"); parameter statistics by parameter name.
ACT_STATS = (
    "act_rms",  # root mean square of the module output
    "act_mean",
    "act_std",
    "act_absmax",
    "act_zero_frac",  # fraction of exact zeros (ReLU family)
    "act_sat_frac",  # fraction within the saturation band of tanh / sigmoid
    "act_nonfinite",  # count of NaN / Inf entries
)
BACKWARD_STATS = ("out_grad_rms",)  # RMS of dL/d(output) of each block: the residual stream signal
PARAM_STATS = (
    "grad_norm",
    "weight_norm",
    "grad_weight_ratio",
    "update_ratio",  # ||delta W|| / ||W|| of the optimizer step (estimated on a fixed sample)
    "grad_nonfinite",
)
GLOBAL_STATS = ("grad_norm_global", "lr", "loss", "skipped_step")


@dataclass
class LayerInfo:
    """A monitored layer or parameter, in depth order.

    Args:
        name: display name used in tags, e.g. ``"encoder.3"`` or ``"encoder.3.attn"`` or a
            module path for models the anatomy does not read.
        kind: ``"block"``, ``"attn"``, ``"cross"``, ``"ffn"``, ``"act"``, ``"linear"``,
            ``"module"`` (activation sources) or ``"param"``.
        depth: position in forward order among layers of the same kind (0 = closest to input).
        path: module path (for parameters: the parameter name).
        stack: ``"encoder"``, ``"decoder"`` or None.
        block: index of the block within its stack, or None.
        role: for parameters, the anatomy role (``"q"``, ``"k"``, ``"ffn_out"``, ...) or None.
        zero_by_construction: True for parameters whose gradient is identically zero by design
            (attention key biases), which rules must never flag.
        trainable: False for frozen parameters.

    Example::

        >>> LayerInfo(name="encoder.0", kind="block", depth=0, path="layers.0").kind
        'block'
    """

    name: str
    kind: str
    depth: int
    path: str
    stack: str | None = None
    block: int | None = None
    role: str | None = None
    zero_by_construction: bool = False
    trainable: bool = True


@dataclass
class Frame:
    """Statistics of one logging step.

    Args:
        step: the training step.
        layers: every activation source and parameter that has statistics, in depth order.
        values: ``values[stat][layer_name] -> float`` (NaN where not measured).
        globals: ``globals[stat] -> float`` for run-wide values (``grad_norm_global``, ``lr``...).

    Example::

        >>> f = Frame(step=5, layers=[], values={"act_rms": {"encoder.0": 1.0}}, globals={})
        >>> f.get("act_rms", "encoder.0")
        1.0
    """

    step: int
    layers: list[LayerInfo]
    values: dict[str, dict[str, float]]
    globals: dict[str, float] = field(default_factory=dict)

    def get(self, stat: str, layer: str, default: float = math.nan) -> float:
        """The value of ``stat`` for ``layer``, or ``default`` when it was not measured."""
        return self.values.get(stat, {}).get(layer, default)

    def series(self, stat: str, kind: str | None = None) -> list[tuple[LayerInfo, float]]:
        """``(layer, value)`` pairs for ``stat`` in depth order, optionally of one layer kind."""
        table = self.values.get(stat, {})
        return [
            (info, table[info.name])
            for info in self.layers
            if info.name in table and (kind is None or info.kind == kind)
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for reports and tests)."""
        return {
            "step": self.step,
            "layers": [vars(i).copy() for i in self.layers],
            "values": {k: dict(v) for k, v in self.values.items()},
            "globals": dict(self.globals),
        }
