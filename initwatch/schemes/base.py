"""Shared machinery of the schemes: options, plans, the pretrained guard, execution."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard, get_args

import torch
from torch import nn

from initwatch.anatomy.model import Anatomy, Block, Norm, Slot, Stack
from initwatch.errors import AlreadyAppliedError, PretrainedWeightsError, SchemeNotApplicableError
from initwatch.rng import seeded
from initwatch.schemes.pretrained import decide_pretrained
from initwatch.schemes.pretrained import is_pretrained as is_pretrained
from initwatch.schemes.report import Change, ReinitReport
from initwatch.schemes.saved import record
from initwatch.schemes.spec import Constants
from initwatch.schemes.structure import applied_structure, keep_eager, remove_norm
from initwatch.vocabulary import InitAction, Role

COMMON_OPTIONS = ("allow_pretrained", "pretrained", "anatomy", "stacks", "depth", "seed")
MARKER = "_initwatch_reinit"


def xavier_std(fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    """Standard deviation of Xavier (Glorot) init: ``gain * sqrt(2 / (fan_in + fan_out))``.

    Example::

        >>> round(xavier_std(768, 768), 4)
        0.0361
    """
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


@dataclass
class Init:
    """A planned initialization of one weight (a slot, or a whole parameter by name)."""

    role: str
    block: str
    action: InitAction
    std: float
    gain: float | None = None
    slot: Slot | None = None
    param: str | None = None  # parameter name when not a slot
    zero_bias: bool = True
    zero_row: int | None = None  # padding row of an embedding
    note: str = ""
    constant: str | None = None  # the plan constant this init applies ("embedding_scale")
    bias: str | None = None  # bias parameter zeroed with a whole-parameter init


@dataclass
class Plan:
    """Everything a scheme will do, computed before the model is touched."""

    scheme: str
    constants: Constants
    inits: list[Init] = field(default_factory=list)
    structure: list[tuple[Change, Callable[[], None]]] = field(default_factory=list)
    skips: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # emitted once the plan is applied


def check_options(scheme: str, options: Mapping[str, Any], own: Iterable[str]) -> None:
    """Raise a ``ValueError`` naming unknown options and listing the valid ones."""
    valid = set(COMMON_OPTIONS) | set(own)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for scheme {scheme!r}; valid options: "
            f"{', '.join(sorted(valid))}"
        )


def stacks_to_touch(anatomy: Anatomy, options: Mapping[str, Any]) -> list[str]:
    """The stacks named by the ``stacks`` option (default: all), validated."""
    present: list[str] = [s.kind for s in anatomy.stacks]
    wanted = options.get("stacks")
    if wanted is None:
        return present
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    bad = [w for w in wanted if w not in present]
    if bad or not wanted:
        raise ValueError(f"stacks={wanted!r}: this model has stacks {present}")
    return wanted


def start_plan(
    name: str, anatomy: Anatomy, options: Mapping[str, Any], consts: Constants
) -> tuple[Plan, list[Stack]]:
    """A scheme's plan holding the constants of the stacks the ``stacks`` option names
    (default: all), and those stacks in forward order.

    Example::

        >>> from initwatch import inspect, zoo
        >>> a = inspect(zoo.build("bart"))
        >>> p, stacks = start_plan("rezero", a, {"stacks": "decoder"}, {"encoder": {}, "decoder": {}})
        >>> p.constants, [s.kind for s in stacks]
        ({'decoder': {}}, ['decoder'])
    """
    touch = stacks_to_touch(anatomy, options)
    plan = Plan(name, {k: v for k, v in consts.items() if k in touch})
    return plan, [s for s in anatomy.stacks if s.kind in touch]


def override(consts: Constants, options: Mapping[str, Any], name: str, positive: str = "") -> None:
    """Replace the constant ``name`` of every stack by the option of that name (a number, or
    a ``{stack: number}`` dict), in place; with ``positive`` (what to say), refuse a value <= 0.

    Example::

        >>> consts = {"encoder": {"alpha": 2.0}, "decoder": {"alpha": 3.0}}
        >>> override(consts, {"alpha": {"decoder": 1.5}}, "alpha")
        >>> consts
        {'encoder': {'alpha': 2.0}, 'decoder': {'alpha': 1.5}}
        >>> override(consts, {"alpha": -1}, "alpha", "DeepNorm needs alpha > 0")
        Traceback (most recent call last):
        ...
        ValueError: alpha=-1.0 for the encoder: DeepNorm needs alpha > 0
    """
    for stack, vals in consts.items():
        vals[name] = per_stack(options.get(name), stack, vals[name], name)
        if positive and vals[name] <= 0:
            raise ValueError(f"{name}={vals[name]} for the {stack}: {positive}")


def refuse(title: str, anatomy: Anatomy, reason: str | None, why: str = "") -> None:
    """Raise :class:`~initwatch.errors.SchemeNotApplicableError` when ``reason`` (the scheme's
    ``applies``) is not None: the scheme, the model, the reason and ``why`` (what the scheme
    needs and what to use instead).

    Example::

        >>> from initwatch import inspect, zoo
        >>> refuse("DeepNet", inspect(zoo.build("gpt2")), "Pre-LN: DeepNet needs Post-LN")
        Traceback (most recent call last):
        ...
        initwatch.errors.SchemeNotApplicableError: DeepNet does not apply to GPT2LMHeadModel (gpt2): Pre-LN: DeepNet needs Post-LN
    """
    if reason is not None:
        raise SchemeNotApplicableError(
            f"{title} does not apply to {anatomy.model_class} ({anatomy.family}): {reason}"
            + (f". {why}" if why else "")
        )


def depths(anatomy: Anatomy, options: Mapping[str, Any]) -> dict[str, int]:
    """N and M per stack: the anatomy's depths, overridden by the ``depth`` option."""
    out = dict(anatomy.depth)
    depth = options.get("depth")
    if depth is None:
        return out
    if isinstance(depth, int):
        return {k: depth for k in out}
    if isinstance(depth, Mapping) and set(depth) <= set(out):
        out.update({k: int(v) for k, v in depth.items()})
        return out
    raise ValueError(f"depth={depth!r}: give an int or a dict over the stacks {list(out)}")


def has_cross(anatomy: Anatomy) -> bool:
    """True when some block has a cross-attention sublayer (a decoder fed an encoder's output).

    Example::

        >>> from torch import nn
        >>> from initwatch import inspect
        >>> has_cross(inspect(nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32), 2)))
        True
    """
    return any(sub.kind == "cross" for b in anatomy.blocks for sub in b.sublayers)


def per_stack(value: Any, stack: str, default: float, name: str) -> float:
    """An option that is a number (every stack) or a ``{stack: number}`` dict."""
    if value is None:
        return default
    if isinstance(value, Mapping):
        return float(value.get(stack, default))
    if isinstance(value, (int, float)):
        return float(value)
    raise ValueError(f"{name}={value!r}: give a number or a dict like {{'encoder': 0.5}}")


def head_dim(anatomy: Anatomy, slot: Slot) -> int:
    """Per-head width of a q projection."""
    return slot.fan_out // anatomy.heads if anatomy.heads else slot.fan_out


# The matrices a residual branch's output is a product of (value, output, FFN in / out), which
# DeepNet's beta and T-Fixup's scale multiply, and those that only form attention logits or a
# GLU gate, left at gain 1 (torchscale scales fc1 / fc2 but not the gate, keeping the FFN
# output proportional to the scale squared).
VALUE_ROLES: tuple[Role, ...] = ("v", "o", "xv", "xo", "ffn_in", "ffn_out")
LOGIT_ROLES: tuple[Role, ...] = ("q", "k", "xq", "xk", "ffn_gate")


def _is_init_action(name: str) -> TypeGuard[InitAction]:
    return name in get_args(InitAction)


def init_action(rule: str, dist: Any, choices: str = "'uniform' or 'normal'") -> InitAction:
    """The init of ``rule`` (``"xavier"``, ``"kaiming"``) drawn from the ``distribution``
    option ``dist`` (``"uniform"`` or ``"normal"``); a ``ValueError`` naming ``choices`` for
    any other distribution.

    Example::

        >>> init_action("kaiming", "normal")
        'kaiming_normal'
        >>> init_action("xavier", "gauss")
        Traceback (most recent call last):
        ...
        ValueError: distribution='gauss': choose 'uniform' or 'normal'
    """
    action = f"{rule}_{dist}"
    if dist not in ("uniform", "normal") or not _is_init_action(action):
        raise ValueError(f"distribution={dist!r}: choose {choices}")
    return action


def value_gains(gain: float, note: str) -> tuple[dict[Role, float], dict[Role, str]]:
    """Gains and notes for :func:`slot_inits`: ``gain`` on the :data:`VALUE_ROLES`, 1 on the
    :data:`LOGIT_ROLES`.

    Example::

        >>> gains, notes = value_gains(0.5, "gain beta")
        >>> gains["v"], gains["q"], notes["ffn_out"], notes["ffn_gate"]
        (0.5, 1.0, 'gain beta', 'gain 1')
    """
    gains = {r: gain for r in VALUE_ROLES} | {r: 1.0 for r in LOGIT_ROLES}
    notes = {r: note for r in VALUE_ROLES} | {r: "gain 1" for r in LOGIT_ROLES}
    return gains, notes


def slot_inits(
    anatomy: Anatomy,
    blocks: Iterable[Block],
    gains: Mapping[Role, float],
    action: InitAction,
    notes: Mapping[Role, str],
    q_correction: bool = True,
    std: Callable[[Slot, float], float] | None = None,
) -> list[Init]:
    """Inits for every slot of ``blocks`` whose role has a gain in ``gains``: Xavier's std
    with that gain, or ``std(slot, gain)`` when given (Kaiming's ``gain / sqrt(fan_in)``).

    Where attention logits are not scaled by 1/sqrt(d_head) (T5, GPT-Neo) the q gain is
    multiplied by d_head^(-1/2), so the logits have the scale Xavier assumes.
    """
    out = []
    for block in blocks:
        for slot in block.slots:
            if slot.role not in gains:
                continue
            gain = gains[slot.role]
            note = notes.get(slot.role, "")
            if q_correction and not anatomy.attn_scaled and slot.role in ("q", "xq"):
                dh = head_dim(anatomy, slot)
                gain = gain / math.sqrt(dh)
                note = (
                    note + "; " if note else ""
                ) + f"x d_head^-1/2 (d_head={dh}): no logit scaling"
            out.append(
                Init(
                    slot.role,
                    block.name,
                    action,
                    xavier_std(slot.fan_in, slot.fan_out, gain) if std is None else std(slot, gain),
                    gain,
                    slot=slot,
                    note=note,
                )
            )
    return out


def norm_removals(
    model: nn.Module, stacks: Sequence[Stack], which: str
) -> list[tuple[Change, Callable[[], None]]]:
    """Structural steps removing the residual-path norms of ``stacks``: ``which`` is ``"all"``
    (block, embedding and final norms), ``"blocks"`` (block norms only) or ``"none"``."""
    if not removes_norms(which):
        return []
    found: list[tuple[str, Norm]] = []
    for stack in stacks:
        found += [(b.name, n) for b in stack.blocks for n in b.norms]
        if which == "all":
            found += [(stack.kind, n) for n in stack.stack_norms]
    steps = []
    for owner, norm in found:
        change = Change(norm.path, "remove_norm", f"norm ({norm.where})", owner, note=norm.kind)
        steps.append((change, bind(remove_norm, model, norm.path)))
    torch_layers = {
        b.path
        for s in stacks
        for b in s.blocks
        if isinstance(
            model.get_submodule(b.path), (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
        )
    }
    for path in sorted(torch_layers):
        change = Change(path, "keep_eager", "block", path, note="no fused eval fast path")
        steps.append((change, bind(keep_eager, model, path)))
    return steps


def removes_norms(which: str) -> bool:
    """Whether the ``norms`` option removes any norm: False for ``"none"``, True for
    ``"all"`` and ``"blocks"``; anything else is refused.

    Example::

        >>> removes_norms("blocks"), removes_norms("none")
        (True, False)
    """
    if which not in ("all", "blocks", "none"):
        raise ValueError(f"norms={which!r}: choose 'all', 'blocks' or 'none'")
    return which != "none"


def bind(fn: Callable[..., object], *args: Any) -> Callable[[], None]:
    """A structural step: ``fn(*args)``, called when the plan is applied.

    Example::

        >>> seen = []
        >>> step = bind(seen.append, "applied")
        >>> seen
        []
        >>> step()
        >>> seen
        ['applied']
    """

    def step() -> None:
        fn(*args)

    return step


def _param_of(model: nn.Module, init: Init) -> nn.Parameter:
    if init.slot is not None:
        return getattr(model.get_submodule(init.slot.module), init.slot.weight)
    assert init.param is not None  # an Init names a slot or a whole parameter
    return model.get_parameter(init.param)


def _key(init: Init, param: torch.Tensor) -> tuple[int, int]:
    return (id(param), init.slot.index if init.slot is not None and init.slot.fused else -1)


def _target(init: Init) -> str:
    if init.slot is None:
        return init.param or ""
    return init.slot.param_name + _part(init.slot)


def _part(slot: Slot) -> str:
    """Which part of a fused tensor a slot is (``"[rows 1/3]"``), or ``""``."""
    return f"[{slot.fused} {slot.index}/{slot.parts}]" if slot.fused else ""


def resolve(model: nn.Module, plan: Plan) -> list[tuple[Init, nn.Parameter]]:
    """Pair each init with its parameter, drop repeats of shared tensors, skip frozen ones."""
    seen: dict[tuple[int, int], str] = {}
    todo = []
    for init in plan.inits:
        param = _param_of(model, init)
        key = _key(init, param)
        if key in seen:
            _skip(plan, init, f"shared with {seen[key]}: initialized once")
            continue
        seen[key] = _target(init)
        if not param.requires_grad:
            _skip(plan, init, "frozen (requires_grad=False): left alone")
            continue
        todo.append((init, param))
    return todo


def _skip(plan: Plan, init: Init, why: str) -> None:
    plan.skips.append(Change(_target(init), "skip", init.role, init.block, note=why))


def guard(
    model: nn.Module,
    todo: list[tuple[Init, nn.Parameter]],
    options: Mapping[str, Any],
    scope: list[tuple[str, nn.Parameter]] | None = None,
) -> None:
    """Refuse a second application and, unless allowed, changing pretrained weights: those the
    plan re-initializes, and those of the blocks it restructures (``scope``): removing the norms
    of a pretrained block, or gating it, changes what it computes just as surely."""
    previous = getattr(model, MARKER, None)
    present = applied_structure(model)
    if previous is not None or present:
        what = f"scheme {previous['scheme']!r}" if previous else "initwatch structure"
        raise AlreadyAppliedError(
            f"{what} was already applied to this {type(model).__name__} "
            f"({'; '.join(present[:3]) or 'marker set'}). Applying a scheme twice would "
            "re-initialize trained weights and stack structural edits. Build a fresh model, or "
            "use initwatch.restore(model, checkpoint) to load a re-initialized checkpoint."
        )
    given = options.get("pretrained")
    if options.get("allow_pretrained") or given is False:
        return
    decision = decide_pretrained(model, given)
    candidates = list(zip(_names(todo), (p for _, p in todo), strict=True)) + list(scope or [])
    ids = {id(p) for _, p in candidates}
    params = dict(model.named_parameters())
    hit = [v for v in decision.verdicts if v.trained and id(params.get(v.name)) in ids]
    if decision.pretrained or hit:
        names = list(dict.fromkeys(n for n, _ in candidates))
        how = decision.describe()
        if hit and not decision.pretrained:
            how = "; ".join(v.describe() for v in hit[:2])
        raise PretrainedWeightsError(
            f"the {len(names)} weights this scheme would change (e.g. {', '.join(names[:3])}) "
            f"look pretrained: {how}. Re-initializing or restructuring them would erase the "
            "trained weights. To fine-tune, leave the scheme off (scheme=None) and let "
            "initwatch monitor the run. To train this architecture from scratch, build it from "
            "its config (AutoModel.from_config(config)), or pass pretrained=False (these weights "
            "are not trained) or allow_pretrained=True to overwrite them on purpose."
        )


def _names(todo: list[tuple[Init, nn.Parameter]]) -> list[str]:
    return [_target(i) for i, _ in todo]


@torch.no_grad()
def _apply_init(model: nn.Module, init: Init, param: nn.Parameter) -> list[Change]:
    view = init.slot.weight_view(model) if init.slot is not None else param
    if init.action == "zeros":
        view.zero_()
    elif init.action.endswith("_uniform"):
        bound = init.std * math.sqrt(3.0)
        view.uniform_(-bound, bound)
    else:
        view.normal_(0.0, init.std)
    if init.zero_row is not None:
        view[init.zero_row].zero_()
    changes = [
        Change(_target(init), init.action, init.role, init.block, init.gain, init.std, init.note)
    ]
    if init.bias is not None:
        model.get_parameter(init.bias).zero_()
        changes.append(
            Change(init.bias, "zeros", init.role + " bias", init.block, note="bias of " + init.role)
        )
    if init.slot is not None and init.zero_bias:
        bias = init.slot.bias_view(model)
        if bias is not None:
            bias.zero_()
            name = f"{init.slot.module}.{init.slot.bias}" + _part(init.slot)
            changes.append(
                Change(
                    name,
                    "zeros",
                    init.role + " bias",
                    init.block,
                    note="bias of a re-initialized projection",
                )
            )
    return changes


def execute(
    model: nn.Module, anatomy: Anatomy, plan: Plan, options: Mapping[str, Any]
) -> ReinitReport:
    """Check everything, then apply the plan in place and return the report.

    Nothing is changed when a check fails (the refused call leaves the model as it was).
    """
    todo = resolve(model, plan)
    scope = [
        (f"{block.path}.{name}", p)
        for stack in anatomy.stacks
        if stack.kind in plan.constants
        for block in stack.blocks
        for name, p in model.get_submodule(block.path).named_parameters()
    ]
    guard(model, todo, options, scope)
    changes: list[Change] = []
    seed = options.get("seed")
    with seeded(None if seed is None else int(seed), (p for _, p in todo)):
        for init, param in todo:
            changes += _apply_init(model, init, param)
    for change, step in plan.structure:
        step()
        changes.append(change)
    changes += plan.skips
    _drop_unapplied_constants(plan, todo)
    for message in plan.warnings:
        warnings.warn(f"initwatch: {message}", RuntimeWarning, stacklevel=3)
    object.__setattr__(
        model,
        MARKER,
        {"scheme": plan.scheme, "constants": plan.constants, "params": {id(p) for _, p in todo}},
    )
    record(model, plan.scheme, plan.constants)  # save_pretrained carries it in config.json
    return ReinitReport(plan.scheme, plan.constants, changes, anatomy.model_class, anatomy.family)


def _drop_unapplied_constants(plan: Plan, todo: list[tuple[Init, nn.Parameter]]) -> None:
    """Remove from the report's constants those whose every init was skipped (a table shared
    with another stack, a frozen one): the constants line lists only what was applied."""
    applied = {(i.block, i.constant) for i, _ in todo if i.constant}
    for init in plan.inits:
        if init.constant and (init.block, init.constant) not in applied:
            plan.constants.get(init.block, {}).pop(init.constant, None)


def applied_scheme(model: nn.Module) -> str | None:
    """The scheme initwatch applied (or restored) somewhere in ``model``, else None.

    Example::

        >>> from initwatch import zoo, reinit
        >>> model = zoo.build("gpt2")
        >>> applied_scheme(model) is None
        True
        >>> _ = reinit(model, "rezero")
        >>> applied_scheme(model)
        'rezero'
    """
    for module in model.modules():
        marker = getattr(module, MARKER, None)
        if marker is not None:
            return str(marker.get("scheme"))
    return None
