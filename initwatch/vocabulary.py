"""The fixed vocabularies and argument shapes of the public API, as types.

Each ``Literal`` lists the values a field or parameter takes (``mypy`` checks a literal passed
by the user against it); the argument aliases say what a parameter accepts.

Example::

    >>> from typing import get_args
    >>> get_args(Layout)
    ('pre', 'post', 'mixed', 'none')
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

Placement = Literal["pre", "post"]
"""Where one norm sits: before its sublayer (Pre-LN) or after the residual add (Post-LN)."""

Layout = Literal[Placement, "mixed", "none"]
"""Where a model's blocks put their LayerNorm (``"mixed"``: stacks differ; ``"none"``: a model
described without norms, or a residual network)."""

NormPlacement = Literal[Placement, "stack"]
"""Where a norm of an anatomy sits: a block norm's placement, or ``"stack"`` for the embedding
and final norms of a stack."""

BlockResidual = Literal["sequential", "parallel"]
"""How a block adds its branches: one after the other, or both from the block input."""

Residual = Literal[BlockResidual, "mixed"]
"""How a model's blocks add their branches (``"mixed"``: stacks differ)."""

NormKind = Literal["layernorm", "rmsnorm", "rmsnorm_1p", "batchnorm"]
"""The normalization: LayerNorm, RMSNorm, Gemma's RMSNorm with a ``(1 + w)`` scale, or the
BatchNorm of a residual network (SkipInit, Fixup)."""

SublayerKind = Literal["attn", "cross", "ffn"]
"""A residual branch: self-attention, cross-attention or feed-forward."""

NormSite = Literal[SublayerKind, "final", "embedding"]
"""What a norm belongs to: a sublayer, the end of a stack, or its embeddings."""

StackKind = Literal["encoder", "decoder"]
"""A stack of blocks: the encoder or the decoder."""

ModelKind = Literal["encoder-only", "decoder-only", "encoder-decoder"]
"""Which stacks a model has: the kind the schemes' constants are given for."""

AttnRole = Literal["q", "k", "v", "o"]
"""The matrices of self-attention."""

CrossRole = Literal["xq", "xk", "xv", "xo"]
"""The matrices of cross-attention (the self-attention roles with the prefix ``x``)."""

FfnRole = Literal["ffn_in", "ffn_gate", "ffn_out"]
"""The matrices of the feed-forward (``ffn_gate``: the gate of a GLU)."""

Role = Literal[AttnRole, CrossRole, FfnRole]
"""A logical weight matrix of a block (a slot)."""

Fused = Literal["rows", "cols", "heads"]
"""How a slot sits in a fused q|k|v tensor: contiguous row blocks (``nn.MultiheadAttention``),
column blocks (GPT-2's ``Conv1D``) or per-head interleaved rows (GPT-NeoX)."""

InitAction = Literal[
    "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform", "normal", "zeros"
]
"""How a scheme draws a weight (``normal``: the plan's own std; ``zeros``: all zero)."""

StructureAction = Literal[
    "remove_norm",
    "deepnorm_residual",
    "admin_residual",
    "rezero_gate",
    "skipinit_gate",
    "fixup_scalars",
    "keep_eager",
]
"""A structural edit a scheme makes (norm removed, residual rescaled, gate or scalars added, a
torch layer kept off its fused fast path)."""

ChangeAction = Literal[InitAction, StructureAction, "skip"]
"""What one line of a re-initialization report did (``"skip"``: left alone, with the reason)."""

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
    "AttnRole",
    "BlockResidual",
    "ChangeAction",
    "CrossRole",
    "FfnRole",
    "Fused",
    "InitAction",
    "Layout",
    "LayerPreset",
    "LayersSpec",
    "MicroBatchLoss",
    "ModelKind",
    "NormKind",
    "NormPlacement",
    "NormSite",
    "OnAlertAction",
    "OnAlertSpec",
    "OptimizerLike",
    "Placement",
    "Residual",
    "Role",
    "RulesSpec",
    "ScalarLike",
    "SchedulerLike",
    "Severity",
    "StackKind",
    "StructureAction",
    "SublayerKind",
    "SummaryWriterLike",
    "WriterSpec",
]
