"""What a scheme module declares, once: the :class:`Scheme` record the registry holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from initwatch.vocabulary import ModelKind, StackKind

if TYPE_CHECKING:
    from initwatch.anatomy.model import Anatomy, Block
    from initwatch.schemes.base import Plan
    from initwatch.schemes.report import Change

Constants = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Scheme:
    """One re-initialization scheme, as every other part of initwatch sees it.

    ``inspect``'s "schemes" line, the remedies' numbers, the rules' grace period, ``restore``
    and ``reinit`` all read these fields; nothing else restates them.

    Args:
        name: the canonical name (``"deepnet"``).
        title: the name in prose (``"DeepNet"``).
        aliases: other spellings :func:`~initwatch.schemes.scheme_name` accepts.
        options: the scheme's own ``reinit`` options (beyond the common ones).
        applies: ``applies(anatomy)`` is None when the scheme applies, else the reason it
            does not.
        constants: ``constants(kind, depth, cross)``: the scheme's constants per stack for a
            stack kind (``"encoder-only"``, ``"decoder-only"``, ``"encoder-decoder"``), the
            blocks per stack (``{"encoder": N, "decoder": M}``) and whether the decoder's blocks
            have cross-attention (three sublayers).
        plan: ``plan(model, anatomy, options) -> Plan``: everything it will do, computed
            before the model is touched.
        starts_from_zero: True when the residual branches start at (or near) zero by
            construction, so the rules grant a grace period to the vanishing-gradient alert.
        rebuild: ``rebuild(model, block, state) -> Change | None``: rebuild the scheme's own
            block structure on a fresh model from a checkpoint's keys (None when the scheme
            has no structure of its own beyond removed norms).
        removes_norms: True when the scheme removes residual-path norms.
        keys: leaf-name prefixes of the ``state_dict`` entries its structure adds
            (``"deepnorm_alpha"``): how ``restore`` and the resume check recognise a checkpoint
            of the scheme. A scheme with no keys and no removed norms only draws weights, so
            its checkpoints are plain ones.
        read: ``read(model, options) -> Anatomy`` for schemes that read models
            :func:`initwatch.inspect` does not (residual networks); None: ``inspect``.
        featured: one of the schemes ``initwatch demo`` runs by default (DeepNet, T-Fixup,
            ReZero: the three the README leads with); ``--schemes all`` runs every scheme.

    Example::

        >>> from initwatch.schemes.registry import SCHEMES
        >>> SCHEMES["rezero"].starts_from_zero, SCHEMES["deepnet"].starts_from_zero
        (True, False)
    """

    name: str
    title: str
    options: tuple[str, ...]
    applies: Callable[[Anatomy], str | None]
    constants: Callable[[ModelKind, Mapping[str, int], bool], Constants]
    plan: Callable[[nn.Module, Anatomy, Mapping[str, Any]], Plan]
    starts_from_zero: bool = False
    rebuild: Callable[[nn.Module, Block, Mapping[str, Any]], Change | None] | None = None
    removes_norms: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)
    keys: tuple[str, ...] = field(default_factory=tuple)
    read: Callable[[nn.Module, Mapping[str, Any]], Anatomy] | None = None
    featured: bool = False

    @property
    def weights_only(self) -> bool:
        """True when the scheme only draws weights (no structure, no key of its own).

        Example::

            >>> from initwatch.schemes.registry import SCHEMES
            >>> SCHEMES["xavier"].weights_only, SCHEMES["rezero"].weights_only
            (True, False)
        """
        return not self.keys and not self.removes_norms


def everywhere(anatomy: Anatomy) -> str | None:
    """``applies`` of a scheme that applies to every anatomy initwatch reads (Pre-LN, Post-LN,
    no norms): None.

    Example::

        >>> from initwatch import inspect, zoo
        >>> everywhere(inspect(zoo.build("gpt2"))) is None
        True
    """
    return None


_LAYOUT_NAMES = {"pre": "Pre-LN", "none": "no norms"}


def post_ln_only(anatomy: Anatomy, needs: str) -> str | None:
    """``applies`` of a scheme for Post-LN blocks only: None for a Post-LN anatomy, else the
    layout and ``needs`` (what the scheme is for).

    Example::

        >>> from initwatch import inspect, zoo
        >>> post_ln_only(inspect(zoo.build("gpt2")), "DeepNet needs Post-LN")
        'Pre-LN: DeepNet needs Post-LN'
        >>> post_ln_only(inspect(zoo.build("bert")), "DeepNet needs Post-LN") is None
        True
    """
    if anatomy.layout == "post":
        return None
    return f"{_LAYOUT_NAMES.get(anatomy.layout, anatomy.layout)}: {needs}"


def stack_kind(depth: Mapping[str, int]) -> ModelKind:
    """The stack kind of a depth dict: ``"encoder-only"``, ``"decoder-only"`` or
    ``"encoder-decoder"``.

    Example::

        >>> stack_kind({"encoder": 6, "decoder": 6}), stack_kind({"decoder": 12})
        ('encoder-decoder', 'decoder-only')
    """
    kinds = {k for k, v in depth.items() if v}
    if kinds == {"encoder", "decoder"}:
        return "encoder-decoder"
    return "decoder-only" if kinds == {"decoder"} else "encoder-only"


_KIND_STACKS: dict[str, tuple[StackKind, ...]] = {
    "encoder-only": ("encoder",),
    "decoder-only": ("decoder",),
    "encoder-decoder": ("encoder", "decoder"),
}


def kind_depths(kind: ModelKind, depth: Mapping[str, int]) -> dict[StackKind, int]:
    """The stacks of a stack kind with their depths (the inverse of :func:`stack_kind`): the
    blocks per stack a scheme's constants are computed from.

    Example::

        >>> kind_depths("encoder-decoder", {"encoder": 6, "decoder": 4})
        {'encoder': 6, 'decoder': 4}
        >>> kind_depths("decoder-only", {"encoder": 0})
        Traceback (most recent call last):
        ...
        ValueError: depth={'encoder': 0}: a decoder-only model needs the decoder's depth > 0
    """
    stacks = _KIND_STACKS.get(kind)
    if stacks is None:
        raise ValueError(f"kind={kind!r}: expected encoder-only, decoder-only or encoder-decoder")
    out = {s: depth.get(s, 0) for s in stacks}
    for stack, n in out.items():
        if n <= 0:
            raise ValueError(f"depth={dict(depth)!r}: a {kind} model needs the {stack}'s depth > 0")
    return out
