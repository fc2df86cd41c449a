"""Which modules and parameters a Watch monitors, and the names they get in frames and tags."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import nn

from initwatch.adapters import in_adapter
from initwatch.anatomy.model import Anatomy, Block
from initwatch.errors import InitWatchError
from initwatch.frame import LayerInfo
from initwatch.zero import is_engine

PRESETS = ("default", "blocks", "linear")


class LayerPatternError(InitWatchError, ValueError):
    """A ``layers=`` pattern matched no module. The message lists the presets and names of the
    model that do match, and shows a working call in the API the caller used (``call``, a
    format with ``{}`` where the pattern list goes; :meth:`for_call` rewrites it).

    Example::

        >>> e = LayerPatternError("x*", "x*", ("'decoder.0'",), "transformer.h.*")
        >>> print(e.for_call("InitWatch(layers={})"))  # doctest: +NORMALIZE_WHITESPACE
        layers='x*': pattern 'x*' matches no module. Expected 'default', 'blocks' or 'linear',
        or module paths / display names / glob patterns such as 'decoder.0';
        e.g. InitWatch(layers=['transformer.h.*'])
    """

    def __init__(
        self,
        layers: str | Sequence[str],
        pattern: str,
        names: Sequence[str],
        example: str,
        call: str = "initwatch.Watch(model, layers={})",
    ) -> None:
        self.layers, self.pattern, self.names, self.example = layers, pattern, tuple(names), example
        presets = ", ".join(map(repr, PRESETS[:-1])) + f" or {PRESETS[-1]!r}"
        super().__init__(
            f"layers={layers!r}: pattern {pattern!r} matches no module. Expected {presets}, "
            f"or module paths / display names / glob patterns such as {', '.join(self.names)}; "
            f"e.g. {call.format([example])}"
        )

    def for_call(self, call: str) -> LayerPatternError:
        """The same error, its example written as ``call`` (e.g. ``"InitWatch(layers={})"``)."""
        return LayerPatternError(self.layers, self.pattern, self.names, self.example, call)


# Bounded activations and their saturation band: (centre, half width, inclusive).
# An element y is saturated when |y - centre| > half width (>= when inclusive):
# tanh / softsign |y| > 0.99, sigmoid y < 0.01 or y > 0.99, hardtanh / relu6 at its clamp values.
_BANDS: dict[type, tuple[float, float, bool]] = {
    nn.Tanh: (0.0, 0.99, False),
    nn.Softsign: (0.0, 0.99, False),
    nn.Sigmoid: (0.5, 0.49, False),
    nn.Hardsigmoid: (0.5, 0.5, True),
}
_TORCH_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.GLU,
)


@dataclass(eq=False)
class Target:
    """A monitored module: where its forward hook goes and what its output is called.

    Args:
        info: the layer description that appears in frames.
        module: the module whose output is measured (element 0 when it returns a tuple).
        band: saturation band ``(centre, half_width, inclusive)`` for bounded activations.
        grad_signal: also measure ``dL/d(output)`` (blocks; modules of unreadable models).

    Example::

        >>> t = select_layers(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))[1]
        >>> t.info.name, t.band
        ('1', (0.0, 0.99, False))
    """

    info: LayerInfo
    module: nn.Module
    band: tuple[float, float, bool] | None = None
    grad_signal: bool = False


@dataclass(eq=False)
class ParamTarget:
    """A parameter tensor and its description.

    Example::

        >>> [p.info.name for p in select_parameters(nn.Linear(2, 2))]
        ['weight', 'bias']
    """

    info: LayerInfo
    param: nn.Parameter


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside ``torch.compile`` / DDP / DataParallel / DeepSpeed engine
    wrappers.

    Example::

        >>> m = nn.Linear(2, 2)
        >>> unwrap(nn.DataParallel(m)) is m
        True
    """
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and (
            isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel)
            or is_engine(model)
        ):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def is_activation(module: nn.Module) -> bool:
    """True for activation-function modules (torch's and Hugging Face's ``ACT2FN`` classes).

    Example::

        >>> is_activation(nn.GELU()), is_activation(nn.Linear(2, 2))
        (True, False)
    """
    return isinstance(module, _TORCH_ACTIVATIONS) or type(module).__module__.startswith(
        "transformers.activations"
    )


def saturation_band(module: nn.Module) -> tuple[float, float, bool] | None:
    """The saturation band of a bounded activation, None for unbounded ones.

    Example::

        >>> saturation_band(nn.Sigmoid()), saturation_band(nn.ReLU())
        ((0.5, 0.49, False), None)
    """
    if isinstance(module, nn.Hardtanh):  # also ReLU6
        lo, hi = float(module.min_val), float(module.max_val)
        return ((lo + hi) / 2, (hi - lo) / 2, True)
    return next((b for cls, b in _BANDS.items() if isinstance(module, cls)), None)


# Activations whose outputs are exactly zero on a whole region of inputs: the only ones whose
# zero fraction means something (dead units). GELU, SiLU, tanh... are zero at a single point.
_ZERO_PRODUCING: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.Threshold,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Hardsigmoid,
)
_ZERO_PRODUCING += (nn.Hardswish,)


def counts_zeros(module: nn.Module) -> bool:
    """True for ReLU-family activations, whose fraction of exact zeros is measured.

    Example::

        >>> counts_zeros(nn.ReLU()), counts_zeros(nn.GELU()), counts_zeros(nn.Linear(2, 2))
        (True, False, False)
    """
    if isinstance(module, _ZERO_PRODUCING):
        return True
    if isinstance(module, nn.Hardtanh):  # a clamp whose lower end is 0
        return float(module.min_val) == 0.0
    name = type(module).__name__
    return type(module).__module__.startswith("transformers.activations") and "relu" in name.lower()


def _act_kind(name: str) -> str:
    n = name.lower()
    for kind, marks in (
        ("gelu", ("gelu",)),
        ("silu", ("silu", "swish", "swiglu")),
        ("sigmoid", ("sigmoid",)),
        ("tanh", ("tanh",)),
        ("relu", ("relu", "elu", "threshold")),
    ):
        if any(m in n for m in marks):
            return kind
    return n


def activation_kinds(model: nn.Module) -> list[str]:
    """The activation functions a model uses, as kinds: ``"relu"`` (ReLU family, ELU),
    ``"gelu"``, ``"silu"``, ``"tanh"``, ``"sigmoid"`` (else the lower-case class name).

    Read from activation modules (torch's and Hugging Face's ``ACT2FN`` classes) and from the
    ``activation`` attribute of ``nn.TransformerEncoderLayer`` / ``DecoderLayer`` (a function,
    ``F.relu`` by default). Remedies name only what is there: a GELU model is not told about
    sigmoid or tanh.

    Example::

        >>> activation_kinds(nn.Sequential(nn.Linear(2, 2), nn.GELU(), nn.Linear(2, 2), nn.Tanh()))
        ['gelu', 'tanh']
        >>> activation_kinds(nn.TransformerEncoderLayer(8, 2, 16))
        ['relu']
    """
    kinds: set[str] = set()
    for module in model.modules():
        if is_activation(module):
            kinds.add(_act_kind(type(module).__name__))
        elif isinstance(module, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
            fn = getattr(module, "activation", None)
            if isinstance(fn, nn.Module):
                continue  # a module activation is counted on its own
            name = getattr(fn, "__name__", None)
            if name:
                kinds.add(_act_kind(name))
    return sorted(kinds)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + ".")


def _block_of(anatomy: Anatomy | None, path: str) -> Block | None:
    if anatomy is None:
        return None
    return next((b for b in anatomy.blocks if _under(path, b.path)), None)


def _scope(block: Block, sub_index: int) -> str | None:
    """Longest module prefix shared by a sublayer's slots and output, if below the block."""
    sub = block.sublayers[sub_index]
    paths = [s.module for s in sub.slots] + [sub.output]
    parts = [p.split(".") for p in paths]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    prefix = ".".join(common)
    return prefix if len(prefix) > len(block.path) and prefix not in paths else None


def _sublayer_of(block: Block, path: str) -> str | None:
    for i, sub in enumerate(block.sublayers):
        scope = _scope(block, i)
        parents = {s.module.rsplit(".", 1)[0] for s in sub.slots}
        parents = {p for p in parents if len(p) > len(block.path)}
        if (scope and _under(path, scope)) or any(_under(path, p) for p in parents):
            return sub.kind
    kinds = [s.kind for s in block.sublayers]
    return "ffn" if "ffn" in kinds else None


def _info(name: str, kind: str, path: str, block: Block | None) -> LayerInfo:
    return LayerInfo(
        name=name,
        kind=kind,
        depth=0,
        path=path,
        stack=block.stack if block else None,
        block=block.index if block else None,
    )


def _display(path: str, block: Block | None) -> str:
    if block is None:
        return path or "root"
    rel = path[len(block.path) :].lstrip(".")
    return f"{block.name}.{rel}" if rel else block.name


def _anatomy_targets(model: nn.Module, anatomy: Anatomy) -> Iterator[tuple[str, Target]]:
    """(preset, target) pairs in forward order for a readable transformer."""
    modules = dict(model.named_modules())
    for block in anatomy.blocks:
        acts: dict[str | None, list[tuple[str, nn.Module]]] = {}
        for path, mod in modules.items():
            if _under(path, block.path) and path != block.path and is_activation(mod):
                acts.setdefault(_sublayer_of(block, path), []).append((path, mod))
        for sub in block.sublayers:
            for i, (path, mod) in enumerate(acts.pop(sub.kind, [])):
                name = f"{block.name}.{sub.kind}.act" + (f"_{i}" if i else "")
                info = _info(name, "act", path, block)
                yield "default", Target(info, mod, band=saturation_band(mod))
            if sub.output in modules:
                info = _info(f"{block.name}.{sub.kind}", sub.kind, sub.output, block)
                yield "default", Target(info, modules[sub.output])
        for i, (path, mod) in enumerate(acts.pop(None, [])):
            name = f"{block.name}.act" + (f"_{i}" if i else "")
            yield "default", Target(_info(name, "act", path, block), mod, band=saturation_band(mod))
        if block.path in modules:
            info = _info(block.name, "block", block.path, block)
            yield "blocks", Target(info, modules[block.path], grad_signal=True)


def _fallback_target(path: str, mod: nn.Module) -> tuple[str, Target] | None:
    """(preset, target) of one module of a model the anatomy cannot read, or None."""
    if is_activation(mod):
        info = _info(_display(path, None), "act", path, None)
        return "default", Target(info, mod, band=saturation_band(mod))
    if _has_params(mod):
        info = _info(_display(path, None), "module", path, None)
        return "blocks", Target(info, mod, grad_signal=True)
    return None


def _head_activation(path: str, mod: nn.Module, block: Block | None) -> tuple[str, Target] | None:
    """An activation module outside the blocks of a readable transformer (a pooler's tanh, a
    classification head's activation): what decides a fine-tune, watched by default."""
    if block is not None or not is_activation(mod):
        return None
    info = _info(_display(path, None), "act", path, None)
    return "default", Target(info, mod, band=saturation_band(mod))


def _candidates(model: nn.Module, anatomy: Anatomy | None) -> list[tuple[str, Target]]:
    """Every module as a (preset, target) pair, in forward order.

    Transformer blocks contribute their named targets (sublayers, activations, block output)
    followed by their other modules; everything else follows ``named_modules`` order.
    """
    per_block: dict[str, list[tuple[str, Target]]] = {}
    for preset, target in _anatomy_targets(model, anatomy) if anatomy else ():
        per_block.setdefault(f"{target.info.stack}.{target.info.block}", []).append(
            (preset, target)
        )
    seen = {id(t.module) for pairs in per_block.values() for _, t in pairs}
    found: list[tuple[str, Target]] = []
    for path, mod in model.named_modules():
        block = _block_of(anatomy, path)
        if block is not None:
            found.extend(per_block.pop(block.name, []))
        if id(mod) in seen:
            continue
        if in_adapter(path):  # LoRA's A / B / dropout: B's output is zero at first, by design
            continue
        pair = _head_activation(path, mod, block) if anatomy else _fallback_target(path, mod)
        if pair is None:
            kind = "linear" if _is_linear(mod) else "module"
            info = _info(_display(path, block), kind, path, block)
            pair = ("linear" if kind == "linear" else "any", Target(info, mod))
        found.append(pair)
    return found


def select_layers(
    model: nn.Module, anatomy: Anatomy | None = None, layers: str | Sequence[str] = "default"
) -> list[Target]:
    """The modules to monitor, in forward order, with their display names.

    Args:
        model: the model (wrappers are unwrapped).
        anatomy: what :func:`initwatch.inspect` read, or None for models it cannot read; those
            are watched by module path (modules with parameters, and activation modules).
        layers: ``"blocks"`` (block outputs only), ``"default"`` (blocks, attention / FFN
            sublayer outputs and activation modules, those of task heads such as a pooler's
            tanh included), ``"linear"`` (default plus every
            ``nn.Linear`` / ``Conv1D``), or a list of module paths / display names / glob patterns.

    Example::

        >>> mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> [(t.info.name, t.info.kind) for t in select_layers(mlp)]
        [('0', 'module'), ('1', 'act'), ('2', 'module')]
        >>> [t.info.name for t in select_layers(mlp, layers=["2"])]
        ['2']
    """
    model = unwrap(model)
    candidates = _candidates(model, anatomy)
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if isinstance(layers, str) and layers in PRESETS:
        wanted = {"blocks": {"blocks"}, "default": {"blocks", "default"}}.get(
            layers, {"blocks", "default", "linear"}
        )
        chosen = [t for preset, t in candidates if preset in wanted]
    else:
        chosen = []
        for pattern in patterns:
            hits = [
                t
                for _, t in candidates
                if fnmatch.fnmatchcase(t.info.name, pattern)
                or fnmatch.fnmatchcase(t.info.path, pattern)
            ]
            if not hits:
                example, names = _examples(candidates)
                raise LayerPatternError(layers, pattern, names, example)
            chosen.extend(t for t in hits if t not in chosen)
        order = {id(t): i for i, (_, t) in enumerate(candidates)}
        chosen.sort(key=lambda t: order[id(t)])
    return _numbered(chosen)


def _examples(candidates: list[tuple[str, Target]]) -> tuple[str, list[str]]:
    """A pattern that matches (the first block and its siblings, e.g. ``'transformer.h.*'``;
    else the first module below the root) and up to six quoted names, those watched by
    default first."""
    blocks = [t for _, t in candidates if t.info.kind == "block"]
    below = [t.info.name for _, t in candidates if t.info.name != "root"] or ["root"]
    parent = blocks[0].info.path.rpartition(".")[0] if blocks else ""
    example = f"{parent}.*" if parent else (blocks[0].info.name if blocks else below[0])
    watched = [t.info.name for p, t in candidates if p in ("blocks", "default")]
    names = [example] + [n for n in dict.fromkeys(watched + below) if n != example]
    return example, [repr(n) for n in names[:6]]


def _numbered(targets: list[Target]) -> list[Target]:
    counts: dict[str, int] = {}
    for t in targets:
        t.info.depth = counts.get(t.info.kind, 0)
        counts[t.info.kind] = t.info.depth + 1
    return targets


def _param_roles(model: nn.Module, anatomy: Anatomy) -> tuple[dict[str, list[str]], set[str]]:
    """Parameter name -> anatomy roles; and the names of zero-by-construction biases."""
    roles: dict[str, list[str]] = {}
    zero: set[str] = set()
    names = dict(model.named_parameters())

    def tag(prefix: str, role: str) -> None:
        for n in names:
            if _under(n, prefix) and n != prefix:
                roles.setdefault(n, []).append(role)

    for block in anatomy.blocks:
        for slot in block.slots:
            roles.setdefault(slot.param_name, []).append(slot.role)
            if slot.bias is not None:
                bias = f"{slot.module}.{slot.bias}" if slot.module else slot.bias
                if bias in names:
                    roles.setdefault(bias, []).append(slot.role)
                    if slot.role in ("k", "xk") and slot.fused is None:
                        zero.add(bias)
        for norm in block.norms:
            tag(norm.path, "norm")
    for stack in anatomy.stacks:
        for norm in stack.stack_norms:
            tag(norm.path, "norm")
        for emb in (stack.token_embedding, stack.position_embedding):
            if emb:
                tag(emb, "embedding")
    return roles, zero


def select_parameters(model: nn.Module, anatomy: Anatomy | None = None) -> list[ParamTarget]:
    """Every parameter tensor (shared tensors once), described for rules and sinks.

    ``role`` is the anatomy role (``"q"``, ``"ffn_out"``...; fused tensors join their roles with
    ``"+"``, e.g. ``"q+k+v"``; ``"norm"`` and ``"embedding"`` for those modules), or None.
    ``zero_by_construction`` marks separate attention key biases, whose gradient is zero
    because softmax ignores a shift common to all logits (the k slice of a fused bias cannot be
    marked on its own: the fused tensor's gradient is not zero), and LoRA's ``lora_A`` /
    ``lora_B`` (``B`` starts at zero, so ``A``'s gradient is zero at first; the Watch judges the
    adapted weight's effective update instead, :mod:`initwatch.adapters`). ``trainable`` is False for
    frozen parameters; parameters without a gradient at a step are marked by the Watch.

    Example::

        >>> [(p.info.name, p.info.trainable) for p in select_parameters(nn.Linear(2, 2))]
        [('weight', True), ('bias', True)]
    """
    model = unwrap(model)
    roles, zero = _param_roles(model, anatomy) if anatomy else ({}, set())
    out = []
    for i, (name, param) in enumerate(model.named_parameters()):
        block = _block_of(anatomy, name)
        info = LayerInfo(
            name=name,
            kind="param",
            depth=i,
            path=name,
            stack=block.stack if block else None,
            block=block.index if block else None,
            role="+".join(dict.fromkeys(roles[name])) if name in roles else None,
            zero_by_construction=name in zero or in_adapter(name),
            trainable=param.requires_grad,
        )
        out.append(ParamTarget(info, param))
    return out
