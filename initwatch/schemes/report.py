"""What a re-initialization did: every parameter touched and every structural change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from initwatch.anatomy.render import table


@dataclass
class Change:
    """One parameter (or slice of one) re-initialized, or one structural edit.

    Args:
        target: parameter name (with ``[rows 0/3]``-style slice for fused tensors) or module path.
        action: ``"xavier_normal"``, ``"xavier_uniform"``, ``"normal"``, ``"zeros"``,
            ``"remove_norm"``, ``"deepnorm_residual"``, ``"rezero_gate"``, ``"skip"``.
        role: anatomy role (``"q"``, ``"ffn_out"``, ``"token_embedding"``, ``"norm"``...).
        block: block name (``"encoder.3"``) or stack name.
        gain: the Xavier gain used, or None.
        std: the standard deviation the init targets, or None.
        note: why (e.g. "beta for v/o/ffn", "shared with encoder: scaled once").

    Example::

        >>> Change("layers.0.linear1.weight", "xavier_normal", "ffn_in", "encoder.0", 0.3, 0.02).role
        'ffn_in'
    """

    target: str
    action: str
    role: str
    block: str
    gain: float | None = None
    std: float | None = None
    note: str = ""


@dataclass
class ReinitReport:
    """The result of :func:`initwatch.reinit`: what changed and why.

    Args:
        scheme: ``"deepnet"``, ``"t-fixup"`` or ``"rezero"``.
        constants: the constants used, e.g. ``{"encoder": {"alpha": 2.21, "beta": 0.32}}``.
        changes: every parameter initialized and every structural edit, in order.
        model_class: the model's class name.
        family: the anatomy family.

    Example::

        >>> import initwatch
        >>> from initwatch import zoo
        >>> report = initwatch.reinit(zoo.build("torch_encoder", layers=4), "deepnet")
        >>> round(report.constants["encoder"]["alpha"], 4)
        1.6818
        >>> print(report)  # doctest: +ELLIPSIS
        deepnet on TransformerEncoder...
    """

    scheme: str
    constants: dict[str, dict[str, float]]
    changes: list[Change] = field(default_factory=list)
    model_class: str = ""
    family: str = ""

    @property
    def parameters(self) -> list[Change]:
        """Changes that re-initialized parameter values."""
        return [c for c in self.changes if c.action in _INIT_ACTIONS]

    @property
    def structure(self) -> list[Change]:
        """Structural edits (norms removed, residual scaling, added gates)."""
        return [c for c in self.changes if c.action in _STRUCT_ACTIONS]

    @property
    def skipped(self) -> list[Change]:
        """What the scheme would have touched but left alone, with the reason."""
        return [c for c in self.changes if c.action == "skip"]

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"scheme", "constants", "changes": [dict, ...], ...}``."""
        return {
            "scheme": self.scheme,
            "constants": {k: dict(v) for k, v in self.constants.items()},
            "changes": [asdict(c) for c in self.changes],
            "model_class": self.model_class,
            "family": self.family,
        }

    def __str__(self) -> str:
        consts = ", ".join(
            f"{stack}: " + " ".join(f"{k}={v:.4g}" for k, v in vals.items())
            for stack, vals in self.constants.items()
        )
        rows = [
            [
                c.block,
                c.role,
                c.target,
                c.action,
                "" if c.gain is None else f"{c.gain:.4g}",
                "" if c.std is None else f"{c.std:.4g}",
                c.note,
            ]
            for c in self.changes
        ]
        head = (
            f"{self.scheme} on {self.model_class} ({self.family}): {len(self.parameters)} "
            f"parameter inits, {len(self.structure)} structural changes, "
            f"{len(self.skipped)} skipped; {consts}"
        )
        return (
            head + "\n" + table(["block", "role", "target", "action", "gain", "std", "note"], rows)
        )


_INIT_ACTIONS = {
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "normal",
    "zeros",
}
_STRUCT_ACTIONS = {
    "remove_norm",
    "deepnorm_residual",
    "admin_residual",
    "rezero_gate",
    "skipinit_gate",
    "fixup_scalars",
    "keep_eager",
}
