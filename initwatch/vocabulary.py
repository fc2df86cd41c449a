"""The fixed vocabularies and argument shapes of the public API, as types.

Each ``Literal`` lists the values a field or parameter takes (``mypy`` checks a literal passed
by the user against it); the argument aliases say what a parameter accepts.

Example::

    >>> from typing import get_args
    >>> get_args(Layout)
    ('pre', 'post', 'mixed')
    >>> get_args(OnAlertAction)
    ('warn', 'stop', 'raise', 'ignore')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    import torch

    from initwatch.alerts import Alert
    from initwatch.policy import OnAlert
    from initwatch.rules import Rules
    from initwatch.sinks import Sink

Layout = Literal["pre", "post", "mixed"]
"""Where a model's blocks put their LayerNorm (``"mixed"``: stacks differ)."""

Placement = Literal["pre", "post"]
"""Where one norm sits: before its sublayer (Pre-LN) or after the residual add (Post-LN)."""

Residual = Literal["sequential", "parallel", "mixed"]
"""How a block adds its branches: one after the other, or both from the block input."""

NormKind = Literal["layernorm", "rmsnorm", "rmsnorm_1p"]
"""The normalization: LayerNorm, RMSNorm, or Gemma's RMSNorm with a ``(1 + w)`` scale."""

SublayerKind = Literal["attn", "cross", "ffn"]
"""A residual branch: self-attention, cross-attention or feed-forward."""

Severity = Literal["warning", "error"]
"""How bad an alert is."""

OnAlertAction = Literal["warn", "stop", "raise", "ignore"]
"""The built-in actions of the alert policy."""

OnAlertSpec = Union[OnAlertAction, "OnAlert", Callable[["Alert"], Any]]
"""``on_alert``: a built-in action, or a function called with every alert."""

LayerPreset = Literal["default", "blocks", "linear"]
"""The named selections of ``layers``."""

LayersSpec = LayerPreset | str | Sequence[str]
"""``layers``: a preset, a module path or glob pattern, or several."""

RulesSpec = Union["Rules", Mapping[str, Any], Literal[False], None]
"""``rules``: a ``Rules`` object, a dict of thresholds for ``Rules(**thresholds)``, None for the
default rules, or False for none."""

MicroBatchLoss = Literal["mean", "sum"]
"""How the micro-batch losses of one optimizer step make the step's loss."""


@runtime_checkable
class SummaryWriterLike(Protocol):
    """What the TensorBoard sink calls on a writer: ``torch.utils.tensorboard.SummaryWriter``
    and tensorboardX's have all of it.

    Example::

        >>> from torch.utils.tensorboard import SummaryWriter
        >>> import tempfile
        >>> isinstance(SummaryWriter(tempfile.mkdtemp()), SummaryWriterLike)
        True
    """

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None) -> Any: ...

    def add_text(self, tag: str, text_string: str, global_step: int | None = None) -> Any: ...

    def add_image(
        self, tag: str, img_tensor: Any, global_step: int | None = None, dataformats: str = "CHW"
    ) -> Any: ...

    def add_custom_scalars(self, layout: Any) -> Any: ...

    def flush(self) -> Any: ...

    def close(self) -> Any: ...


@runtime_checkable
class OptimizerLike(Protocol):
    """An optimizer the Watch reads: a ``torch.optim.Optimizer`` or a framework's wrapper of
    one (Lightning's ``LightningOptimizer``, accelerate's ``AcceleratedOptimizer``), which all
    have ``param_groups``.

    Example::

        >>> import torch
        >>> isinstance(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
        ...            OptimizerLike)
        True
    """

    param_groups: list[dict[str, Any]]


@runtime_checkable
class SchedulerLike(Protocol):
    """A learning-rate scheduler the Watch reads its warmup and peak lr from: torch's
    schedulers (``LambdaLR``, ``OneCycleLR``, ``SequentialLR``, ``ReduceLROnPlateau``...) and
    the frameworks' wrappers of them; what it cannot read stays unknown.

    Example::

        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> isinstance(torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), SchedulerLike)
        True
    """

    def step(self, *args: Any, **kwargs: Any) -> Any: ...


ScalarLike = Union["torch.Tensor", float]
"""A value the Watch records: a tensor (one element, kept on the device) or a number."""


WriterSpec = Union[SummaryWriterLike, "Sink", None]
"""``writer``: a TensorBoard writer, any :class:`~initwatch.sinks.Sink`, or None."""

__all__ = [
    "Layout",
    "LayerPreset",
    "LayersSpec",
    "MicroBatchLoss",
    "NormKind",
    "OnAlertAction",
    "OnAlertSpec",
    "OptimizerLike",
    "Placement",
    "Residual",
    "RulesSpec",
    "ScalarLike",
    "SchedulerLike",
    "Severity",
    "SublayerKind",
    "SummaryWriterLike",
    "WriterSpec",
]
