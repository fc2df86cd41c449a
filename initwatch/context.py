"""What is known about a run, so that remedies can fit this model and this run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from initwatch.vocabulary import Layout, Residual


@dataclass
class RunContext:
    """Facts about the model and the run that rules and remedies use.

    Integrations fill what their framework knows; every field is optional.

    Args:
        family: model family recognised by the anatomy (``"bert"``, ``"gpt2"``, ...), or None.
        layout: ``"pre"`` or ``"post"`` (LayerNorm placement), ``"mixed"`` (stacks differ),
            ``"none"`` (no norms), or None when unknown.
        residual: ``"sequential"``, ``"parallel"`` or ``"mixed"`` (stacks differ).
        depth: number of blocks per stack, e.g. ``{"encoder": 12}``.
        cross_attention: True when the decoder's blocks have cross-attention (three
            sublayers: DeepNet's decoder constants (3M)^(1/4), (12M)^(-1/4)).
        scheme: the re-initialization scheme applied (``"deepnet"``, ``"t-fixup"``,
            ``"rezero"``) or None.
        optimizer: optimizer class name, e.g. ``"AdamW"``.
        lr: current learning rate (first param group).
        base_lr: the peak / configured learning rate.
        warmup_steps: number of warmup steps, 0 when none, None when unknown.
        in_warmup: True while the learning rate is still ramping up.
        precision: ``"32"``, ``"bf16-mixed"``, ``"16-mixed"``, ...
        pretrained: True when the weights were loaded from a checkpoint (a fine-tune).
        grad_clip: the gradient-clipping threshold when the run clips (HF ``max_grad_norm``,
            Lightning ``gradient_clip_val``), None when it does not.
        grad_clip_algorithm: ``"norm"`` (clip the global norm) or ``"value"`` (clamp each
            element) when ``grad_clip`` is set.
        step: the current step.
        max_steps: planned number of optimizer steps, if known.
        activations: the activation functions the model uses, as kinds (``"relu"``,
            ``"gelu"``, ``"silu"``, ``"tanh"``, ``"sigmoid"``; see
            :func:`initwatch.selection.activation_kinds`); empty when unknown.
        extra: anything else an integration wants to pass along.

    Example::

        >>> ctx = RunContext(layout="post", depth={"encoder": 24}, optimizer="Adam", lr=1e-3)
        >>> ctx.total_depth
        24
        >>> ctx.clipping
        False
    """

    family: str | None = None
    layout: Layout | None = None
    residual: Residual | None = None
    depth: dict[str, int] = field(default_factory=dict)
    cross_attention: bool = False
    scheme: str | None = None
    optimizer: str | None = None
    lr: float | None = None
    base_lr: float | None = None
    warmup_steps: int | None = None
    in_warmup: bool = False
    precision: str | None = None
    pretrained: bool = False
    grad_clip: float | None = None
    grad_clip_algorithm: str | None = None
    step: int = 0
    max_steps: int | None = None
    activations: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_depth(self) -> int:
        """Number of blocks over all stacks (0 when unknown)."""
        return sum(self.depth.values())

    @property
    def fp16(self) -> bool:
        """True under float16 precision (``"16-mixed"``, ``"fp16"``...; not bfloat16): the one
        place the rules and the remedies ask.

        Example::

            >>> RunContext(precision="16-mixed").fp16, RunContext(precision="bf16-mixed").fp16
            (True, False)
        """
        p = (self.precision or "").lower()
        return "16" in p and "bf16" not in p and "bfloat" not in p

    @property
    def clipping(self) -> bool:
        """True when the run clips its gradients (``grad_clip`` set and positive)."""
        return self.grad_clip is not None and self.grad_clip > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints and reports."""
        return asdict(self)
