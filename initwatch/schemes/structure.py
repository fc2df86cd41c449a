"""Structural edits that keep existing state_dict keys: removed norms, DeepNorm residuals,
ReZero gates. All are hooks or small modules, so no ``forward`` is rewritten."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from initwatch.errors import InitWatchError

DEEPNORM_BUFFER = "deepnorm_alpha"
ADMIN_OMEGA = "admin_omega"  # Admin's omega: admin_omega_<kind> (buffer), ..._param_<kind>
REZERO_PARAM = "rezero_alpha"
# Shape of a ReZero gate: (1,), not a 0-dim scalar, which FSDP1, FSDP2 and DeepSpeed refuse to
# shard. restore() accepts checkpoints of either shape (initwatch <= 0.1 saved 0-dim gates).
REZERO_SHAPE = (1,)
_RESIDUAL_ATTR = "_initwatch_residual"


class RemovedNorm(nn.Identity):
    """The identity, standing where a residual-path norm was removed.

    It keeps the removed norm's ``eps`` (and ``variance_epsilon``): ``nn.TransformerEncoderLayer``
    reads ``norm1.eps`` in its eval fast-path check, and would fail on a plain ``nn.Identity``.

    Example::

        >>> RemovedNorm(eps=1e-5)(torch.ones(2)).tolist()
        [1.0, 1.0]
    """

    def __init__(self, eps: float = 1e-5, kind: str = "layernorm") -> None:
        super().__init__()
        self.eps = eps
        self.variance_epsilon = eps
        self.kind = kind

    def extra_repr(self) -> str:
        return f"removed {self.kind}, eps={self.eps}"


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent, _, name = path.rpartition(".")
    return (model.get_submodule(parent) if parent else model), name


def remove_norm(model: nn.Module, path: str) -> None:
    """Replace the norm at ``path`` by a :class:`RemovedNorm`."""
    owner, name = _parent(model, path)
    old = getattr(owner, name)
    eps = getattr(old, "eps", getattr(old, "variance_epsilon", 1e-5))
    kind = type(old).__name__
    setattr(owner, name, RemovedNorm(float(eps) if isinstance(eps, (int, float)) else 1e-5, kind))


class KeepEager:
    """A no-op forward pre-hook: its presence keeps ``nn.TransformerEncoderLayer`` off the fused
    eval fast path, which would run the original norms and residuals."""

    def __call__(self, module: nn.Module, args: Any) -> None:
        return None


def norm_missing(model: nn.Module, path: str, state: Mapping[str, Any]) -> bool:
    """True when a checkpoint (``state``) lacks every parameter of the norm at ``path``: the
    scheme that wrote it removed that norm.

    Example::

        >>> m = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        >>> norm_missing(m, "1", m.state_dict()), norm_missing(m, "1", {"0.weight": 0})
        (False, True)
    """
    names = [n for n, _ in model.get_submodule(path).named_parameters()]
    return bool(names) and not any(f"{path}.{n}" in state for n in names)


def keep_eager(model: nn.Module, path: str) -> None:
    """Keep the ``torch.nn`` transformer layer at ``path`` on the eager path: attach
    :class:`KeepEager` (once), and turn off the nested-tensor fast path of every
    ``nn.TransformerEncoder`` above it, whose check reads ``layers[0].norm1.weight`` (gone once
    the norm is removed) and which would feed the layers nested tensors."""
    block = model.get_submodule(path)
    if not any(isinstance(h, KeepEager) for h in block._forward_pre_hooks.values()):
        block.register_forward_pre_hook(KeepEager())
    parts = path.split(".")
    for n in range(len(parts)):
        owner = model.get_submodule(".".join(parts[:n])) if n else model
        if isinstance(owner, nn.TransformerEncoder):
            owner.use_nested_tensor = False


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    for key in ("hidden_states", "src", "tgt", "x", "input"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    return None


def _skip_attr(index: int) -> str:
    return f"{_RESIDUAL_ATTR}_{index}"


def _put(block: nn.Module, index: int, value: torch.Tensor | None) -> None:
    object.__setattr__(block, _skip_attr(index), value)


def _first_forward_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    t = _first_tensor(args, kwargs)
    if t is None and isinstance(kwargs.get("query"), torch.Tensor):
        return kwargs["query"]
    return t


class DeepNormBlockInput:
    """Block forward pre-hook: remembers the block input (the skip of the first sublayer).

    It runs on ``block(...)`` only: where a checkpoint recomputes the block's ``forward``
    (transformers 5), the recomputation skips it, and the first sublayer's entry hook
    (:class:`DeepNormEntry`) supplies the skip instead. ``own_first`` is True when no entry
    hook exists, so this hook is the skip's only source.
    """

    def __init__(self, own_first: bool = False) -> None:
        self.own_first = own_first

    def __call__(self, block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = _first_tensor(args, kwargs)
        object.__setattr__(block, _RESIDUAL_ATTR, x)
        if self.own_first:
            _put(block, 0, x)


class DeepNormBlockOutput:
    """Block forward hook: forgets the remembered tensors, so no activation (and no autograd
    graph of a forward that is never backpropagated) outlives the block's forward."""

    def __init__(self, sublayers: int = 0) -> None:
        self.sublayers = sublayers

    def __call__(self, block: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        object.__setattr__(block, _RESIDUAL_ATTR, None)
        for i in range(self.sublayers):
            _put(block, i, None)


class DeepNormEntry:
    """Forward pre-hook on the module that first reads a sublayer's input (its q, xq or ffn_in
    projection): that input is the sublayer's skip ``x``.

    It runs inside the block's ``forward``, so a recomputation by activation checkpointing
    (of ``forward`` or of ``__call__``) captures the skip again. On a normal forward the
    first sublayer's entry is checked against the block input; if the projection does not
    read the block input itself, the block input is used and a warning says checkpointing
    the block's ``forward`` is not supported for this model.
    """

    def __init__(self, block: nn.Module, index: int) -> None:
        self.block = block
        self.index = index
        self.warned = False

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = _first_forward_tensor(args, kwargs)
        if self.index == 0:
            ref = getattr(self.block, _RESIDUAL_ATTR, None)
            if ref is not None and x is not ref:
                if not self.warned:
                    self.warned = True
                    warnings.warn(
                        f"DeepNorm: {type(module).__name__} does not read the input of its "
                        f"block ({type(self.block).__name__}) unchanged; the block input is "
                        "used as the skip, which is exact, but a checkpoint that recomputes "
                        "only the block's forward would lose alpha. Checkpoint the whole "
                        "block call (torch.utils.checkpoint(block, ...)) instead.",
                        stacklevel=2,
                    )
                x = ref
        if x is not None:
            _put(self.block, self.index, x)


class DeepNormNormInput:
    """Norm forward pre-hook: turns the norm input ``x + G(x)`` into ``scale * x + G(x)``, with
    ``scale`` the block's tensor ``name``: DeepNorm's scalar alpha, or Admin's per-unit omega."""

    def __init__(self, block: nn.Module, index: int = 0, name: str = DEEPNORM_BUFFER) -> None:
        self.block = block
        self.index = index
        self.name = name

    def __call__(self, norm: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        skip = getattr(self.block, _skip_attr(self.index), None)
        if skip is None:
            raise InitWatchError(
                f"DeepNorm: the norm of sublayer {self.index} of a "
                f"{type(self.block).__name__} ran without its skip input, so alpha cannot be "
                "applied. Call the block itself (block(x)), not its norm alone; if a wrapper "
                "replays only part of the block, wrap the whole block call instead."
            )
        x = args[0]
        if not (x.is_nested or skip.is_nested) and skip.shape != x.shape:
            if skip.numel() != x.numel():
                raise InitWatchError(
                    f"DeepNorm: the skip of sublayer {self.index} of a "
                    f"{type(self.block).__name__} has shape {tuple(skip.shape)}, its norm "
                    f"input {tuple(x.shape)}; describe the model so that the sublayer's first "
                    "projection reads the sublayer's input."
                )
            skip = skip.reshape(x.shape)
        # forget the skip now: a checkpoint's recomputation may stop inside this norm (early
        # stop), before its forward hook, and must not leave an activation held by the block
        _put(self.block, self.index, None)
        scale = getattr(self.block, getattr(self, "name", DEEPNORM_BUFFER))  # pickles of <= 0.2
        return (x + (scale - 1.0).to(x.dtype) * skip, *args[1:])


class DeepNormNormOutput:
    """Norm forward hook: the norm's output is the skip of the next sublayer when that
    sublayer has no entry hook (``feeds_next``)."""

    def __init__(self, block: nn.Module, index: int = 0, feeds_next: bool = False) -> None:
        self.block = block
        self.index = index
        self.feeds_next = feeds_next

    def __call__(self, norm: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.feeds_next:
            _put(self.block, self.index + 1, output)


def add_deepnorm(
    model: nn.Module,
    block_path: str,
    sublayers: list[tuple[str | None, str]],
    alpha: float,
) -> None:
    """Make every Post-LN sublayer of a block compute ``LN(alpha * x + G(x))`` exactly.

    Args:
        model: the model.
        block_path: the block.
        sublayers: per sublayer, in forward order, ``(entry, norm)``: the path of the module
            that first reads the sublayer's input (its skip; None when unknown: the block input
            or the previous norm's output is used) and the path of its Post-LN norm.
        alpha: the skip scale.

    ``alpha`` is stored as a persistent buffer ``deepnorm_alpha`` on the block, so checkpoints
    carry it and :func:`initwatch.restore` can rebuild the structure. The skip is captured by
    hooks inside the block's forward, so activation checkpointing (which recomputes the
    forward in the backward pass) recomputes the same function.
    """
    block = model.get_submodule(block_path)
    ref = next(iter(block.parameters()), None)
    block.register_buffer(
        DEEPNORM_BUFFER,
        torch.tensor(float(alpha), device=ref.device if ref is not None else None),
    )
    hook_skip_scale(model, block_path, sublayers, [DEEPNORM_BUFFER] * len(sublayers))


def add_admin(
    model: nn.Module,
    block_path: str,
    sublayers: list[tuple[str | None, str]],
    omegas: list[tuple[str, torch.Tensor]],
    learnable: bool,
) -> None:
    """Make every Post-LN sublayer of a block compute Admin's ``LN(x * omega + G(x))`` exactly,
    with the same hooks as :func:`add_deepnorm`.

    Args:
        model: the model.
        block_path: the block.
        sublayers: as for :func:`add_deepnorm`.
        omegas: per sublayer, in the same order, the name of its omega on the block and its
            value (a vector over the hidden units).
        learnable: omega as ``nn.Parameter`` (the paper) or as a persistent buffer (the
            constant of ``admin-torch``'s default); checkpoints carry either.
    """
    block = model.get_submodule(block_path)
    ref = next(iter(block.parameters()), None)
    kw: dict[str, Any] = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
    for name, value in dict(omegas).items():
        value = value.detach().to(**kw).clone()
        if learnable:
            block.register_parameter(name, nn.Parameter(value))
        else:
            block.register_buffer(name, value)
    hook_skip_scale(model, block_path, sublayers, [name for name, _ in omegas])


def hook_skip_scale(
    model: nn.Module, block_path: str, sublayers: list[tuple[str | None, str]], names: list[str]
) -> None:
    """Attach the skip-scaling hooks: sublayer i's norm input becomes ``scale_i * x + G(x)``,
    ``scale_i`` the block's tensor ``names[i]`` (DeepNorm's alpha, Admin's omega)."""
    block = model.get_submodule(block_path)
    entries = [entry for entry, _ in sublayers]
    block.register_forward_pre_hook(
        DeepNormBlockInput(own_first=bool(entries) and entries[0] is None), with_kwargs=True
    )
    block.register_forward_hook(DeepNormBlockOutput(len(sublayers)))
    for i, (entry, norm_path) in enumerate(sublayers):
        if entry is not None:
            model.get_submodule(entry).register_forward_pre_hook(
                DeepNormEntry(block, i), with_kwargs=True
            )
        norm = model.get_submodule(norm_path)
        feeds_next = i + 1 < len(sublayers) and entries[i + 1] is None
        norm.register_forward_pre_hook(DeepNormNormInput(block, i, names[i]))
        norm.register_forward_hook(DeepNormNormOutput(block, i, feeds_next))


class ReZeroScale:
    """Forward hook on a branch's output module: multiplies the branch output by the gate."""

    def __init__(self, block: nn.Module, name: str) -> None:
        self.block = block
        self.name = name

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        alpha = getattr(self.block, self.name)
        if isinstance(output, tuple):
            return (output[0] * alpha.to(output[0].dtype), *output[1:])
        return output * alpha.to(output.dtype)


def add_rezero(model: nn.Module, block_path: str, gates: list[str]) -> list[str]:
    """Register ReZero gates (shape :data:`REZERO_SHAPE`, initialized to 0) on a block;
    returns their names."""
    block = model.get_submodule(block_path)
    ref = next(iter(block.parameters()), None)
    kw: dict[str, Any] = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
    for name in gates:
        block.register_parameter(name, nn.Parameter(torch.zeros(REZERO_SHAPE, **kw)))
    return [f"{block_path}.{name}" for name in gates]


def _gated(module: nn.Module, block: nn.Module, gate: str) -> bool:
    return any(
        isinstance(h, ReZeroScale) and h.block is block and h.name == gate
        for h in module._forward_hooks.values()
    )


class ReZeroFollow:
    """Block forward pre-hook: keeps each gate on the module that now sits at its branch output
    path. PEFT replaces a LoRA-targeted projection by a wrapper holding the original as
    ``base_layer`` (the gate must scale the wrapper's output, LoRA delta included), and
    ``merge_and_unload`` puts the original back; the gate moves with the path."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, str]] = []  # (path relative to the block, gate)

    def __call__(self, block: nn.Module, args: tuple[Any, ...]) -> None:
        for rel, gate in self.outputs:
            module = block.get_submodule(rel)
            if _gated(module, block, gate):
                continue
            for inner in module.modules():
                for key, hook in list(inner._forward_hooks.items()):
                    if isinstance(hook, ReZeroScale) and hook.block is block and hook.name == gate:
                        del inner._forward_hooks[key]
            module.register_forward_hook(ReZeroScale(block, gate))


def hook_rezero(model: nn.Module, block_path: str, gate: str, output_path: str) -> None:
    """Scale the output of ``output_path`` by the block's gate ``gate`` (and keep it there when
    the module at that path is wrapped or unwrapped later, see :class:`ReZeroFollow`)."""
    block = model.get_submodule(block_path)
    model.get_submodule(output_path).register_forward_hook(ReZeroScale(block, gate))
    if block_path and not output_path.startswith(block_path + "."):
        return  # a branch output outside the block: nothing to follow
    follow = next(
        (h for h in block._forward_pre_hooks.values() if isinstance(h, ReZeroFollow)), None
    )
    if follow is None:
        follow = ReZeroFollow()
        block.register_forward_pre_hook(follow)
    rel = output_path[len(block_path) + 1 :] if block_path else output_path
    follow.outputs.append((rel, gate))


SKIPINIT_PARAM = "skipinit_alpha"
FIXUP_PREFIX = "fixup_"


class FixupInput:
    """Forward pre-hook: adds the block's scalar ``name`` to the module's input (Fixup's bias
    before each layer of the branch, and before the projection shortcut)."""

    def __init__(self, block: nn.Module, name: str) -> None:
        self.block = block
        self.name = name

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        bias = getattr(self.block, self.name)
        return (args[0] + bias.to(args[0].dtype), *args[1:])


class FixupOutput:
    """Forward hook: ``output * scale + bias`` with the block's scalars (``scale`` None: 1):
    Fixup's bias after each layer (before its activation) and the multiplier of the branch."""

    def __init__(self, block: nn.Module, bias: str, scale: str | None = None) -> None:
        self.block = block
        self.bias = bias
        self.scale = scale

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if self.scale is not None:
            output = output * getattr(self.block, self.scale).to(output.dtype)
        return output + getattr(self.block, self.bias).to(output.dtype)


def add_scalars(model: nn.Module, block_path: str, values: dict[str, float]) -> None:
    """Register trainable scalars (shape :data:`REZERO_SHAPE`) on a block."""
    block = model.get_submodule(block_path)
    ref = next(iter(block.parameters()), None)
    kw: dict[str, Any] = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
    for name, value in values.items():
        block.register_parameter(name, nn.Parameter(torch.full(REZERO_SHAPE, float(value), **kw)))


_OUR_HOOKS = (
    FixupInput,
    FixupOutput,
    DeepNormBlockInput,
    DeepNormEntry,
    DeepNormBlockOutput,
    DeepNormNormInput,
    DeepNormNormOutput,
    ReZeroFollow,
    ReZeroScale,
)


def applied_structure(model: nn.Module) -> list[str]:
    """Descriptions of initwatch structure already present in ``model`` (empty if none).

    Example::

        >>> applied_structure(nn.Linear(2, 2))
        []
    """
    found = []
    for path, mod in model.named_modules():
        if isinstance(mod, RemovedNorm):
            found.append(f"{path}: norm removed")
        if DEEPNORM_BUFFER in mod._buffers:
            found.append(f"{path}: DeepNorm residual")
        if any(n.startswith(ADMIN_OMEGA) for n in [*mod._buffers, *mod._parameters]):
            found.append(f"{path}: Admin residual")
        if any(n.startswith(REZERO_PARAM) for n in mod._parameters):
            found.append(f"{path}: ReZero gate")
        if any(n.startswith((SKIPINIT_PARAM, FIXUP_PREFIX)) for n in mod._parameters):
            found.append(f"{path}: SkipInit/Fixup scalars")
        hooks = list(mod._forward_hooks.values()) + list(mod._forward_pre_hooks.values())
        if any(isinstance(h, _OUR_HOOKS) for h in hooks) and not found:
            found.append(f"{path}: initwatch hook")
    return found
