"""Remedies: what to do about an alert, chosen for this model and this run, with numbers."""

from __future__ import annotations

import math
from typing import Any

from initwatch.alerts import AlertKind
from initwatch.context import RunContext
from initwatch.numbers import fmt
from initwatch.schemes import deepnet, registry
from initwatch.schemes.spec import stack_kind

K = AlertKind


def deepnet_constants(depth: dict[str, int], cross: bool = False) -> dict[str, tuple[float, float]]:
    """DeepNet's (alpha, beta) per stack, read from the scheme itself
    (:func:`initwatch.schemes.deepnet.constants`), so a remedy quotes what ``reinit`` applies.

    Args:
        depth: blocks per stack, e.g. ``{"encoder": 24}``.
        cross: the decoder's blocks have cross-attention (three sublayers).

    Returns:
        ``{stack: (alpha, beta)}``.

    Example::

        >>> a, b = deepnet_constants({"decoder": 24})["decoder"]
        >>> round(a, 4), round(b, 4)
        (2.6321, 0.2686)
        >>> {k: round(v[0], 4) for k, v in deepnet_constants({"encoder": 6, "decoder": 6}).items()}
        {'encoder': 1.4179, 'decoder': 2.0598}
        >>> round(deepnet_constants({"decoder": 6}, cross=True)["decoder"][0], 4)
        2.0598
    """
    consts = registry.constants("deepnet", depth, cross)
    return {s: (v["alpha"], v["beta"]) for s, v in consts.items()}


def tfixup_scales(depth: dict[str, int]) -> dict[str, float]:
    """T-Fixup's weight scale per stack, read from :func:`initwatch.schemes.tfixup.constants`.

    Args:
        depth: blocks per stack.

    Example::

        >>> round(tfixup_scales({"decoder": 12})["decoder"], 4)
        0.3102
    """
    return {s: v["scale"] for s, v in registry.constants("t-fixup", depth).items()}


def _round2(x: float) -> float:
    if x <= 0 or not math.isfinite(x):
        return x
    return float(f"{x:.2g}")


def _depth(ev: dict[str, Any], ctx: RunContext) -> dict[str, int]:
    if ctx.depth:
        return {k: int(v) for k, v in ctx.depth.items() if v}
    n = ev.get("n_layers")
    stack = ev.get("stack") or "model"
    if isinstance(n, (int, float)) and n > 0 and ev.get("blocks", True):
        return {stack if stack != "model" else "encoder": int(n)}
    return {}


def _is_transformer(ev: dict[str, Any], ctx: RunContext) -> bool:
    return bool(ctx.layout or ctx.depth or ctx.family or ctx.scheme)


def _lr_text(ctx: RunContext, ev: dict[str, Any]) -> float | None:
    lr = ev.get("lr")
    if isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0:
        return float(lr)
    for v in (ctx.lr, ctx.base_lr):
        if v:
            return float(v)
    return None


def _opt(ctx: RunContext) -> str:
    return f"{ctx.optimizer} " if ctx.optimizer else ""


def _lower_lr(ctx: RunContext, ev: dict[str, Any], factor: float = 10.0) -> str:
    lr = _lr_text(ctx, ev)
    if lr is None:
        return f"lower the learning rate ~{fmt(factor)}x"
    new = fmt(lr / factor)
    text = f"lower the {_opt(ctx)}learning rate ~{fmt(factor)}x (from {fmt(lr)} to {new})"
    fw = _framework(ctx)
    if fw == "transformers":
        text += f" with `TrainingArguments(learning_rate={new})`"
    elif fw == "lightning":
        text += " where `configure_optimizers` builds the optimizer"
    return text


def _framework(ctx: RunContext) -> str | None:
    """``"lightning"``, ``"transformers"``, ``"plain"`` (a :class:`~initwatch.Watch` in the
    user's own loop) or None (unknown: every API is named)."""
    fw = getattr(ctx, "framework", None) or ctx.extra.get("framework")
    return str(fw) if fw else None


def _api(ctx: RunContext, lightning: str, hf: str, plain: str) -> str:
    """The framework's own way to say it; all three when the framework is unknown."""
    fw = _framework(ctx)
    if fw == "lightning":
        return lightning
    if fw == "transformers":
        return hf
    if fw == "plain":
        return plain
    return f"Lightning {lightning}, HF {hf}, or {plain}"


def _use_scheme(ctx: RunContext, name: str) -> str:
    """How this run applies a scheme: the callback of its framework, else ``reinit``."""
    fw = _framework(ctx)
    reinit = f'`initwatch.reinit(model, "{name}")` before training'
    if fw == "lightning":
        return f'`Trainer(callbacks=[InitWatch(scheme="{name}")])`'
    if fw == "transformers":
        return f'`Trainer(..., callbacks=[InitWatchCallback(scheme="{name}")])`'
    if fw == "plain":
        return reinit
    return (
        f'`InitWatch(scheme="{name}")` (Lightning), `InitWatchCallback(scheme="{name}")` '
        f"(HF Trainer) or {reinit}"
    )


def _warmup(ctx: RunContext) -> str:
    if ctx.warmup_steps:
        n = 2 * ctx.warmup_steps
        how = _api(
            ctx,
            f"(the warmup of the scheduler `configure_optimizers` returns: {n} steps)",
            f"(`TrainingArguments(warmup_steps={n})`)",
            f"(the warmup of your scheduler: {n} steps)",
        )
        return f"lengthen the learning-rate warmup (now {ctx.warmup_steps} steps, try {n}) {how}"
    steps = 1000 if not ctx.max_steps else int(min(4000, max(100, ctx.max_steps // 20)))
    sched = f"`LinearLR(optimizer, start_factor=0.01, total_iters={steps})`"
    how = _api(
        ctx,
        f'({sched} returned from `configure_optimizers` with `"interval": "step"`)',
        f"(`TrainingArguments(warmup_steps={steps})`)",
        f"({sched}, `scheduler.step()` after each `optimizer.step()`)",
    )
    return f"add a learning-rate warmup (linear, ~{steps} steps) {how}"


def _bf16(ctx: RunContext) -> str:
    return "train in bf16 " + _api(
        ctx,
        '(`Trainer(precision="bf16-mixed")`)',
        "(`TrainingArguments(bf16=True)`)",
        "(`torch.autocast(device_type, dtype=torch.bfloat16)`)",
    )


def _clip(ev: dict[str, Any], ctx: RunContext | None = None) -> str:
    """Suggest clipping, unless the run clips already (then nothing: never suggest what the
    run does)."""
    if ctx is not None and ctx.clipping:
        return ""
    base = ev.get("baseline")
    if isinstance(base, (int, float)) and math.isfinite(base) and base > 0:
        x = _round2(2 * base)
        why = f"twice the run's median gradient norm {fmt(base)}"
    else:
        x, why = 1.0, "the common default"
    how = _api(
        ctx or RunContext(),
        f"`Trainer(gradient_clip_val={fmt(x)})`",
        f"`TrainingArguments(max_grad_norm={fmt(x)})`",
        f"`torch.nn.utils.clip_grad_norm_(model.parameters(), {fmt(x)})` before `optimizer.step()`",
    )
    return f"clip gradients at max_norm={fmt(x)} ({why}): {how}"


def _deepnet(ctx: RunContext, depth: dict[str, int]) -> str:
    consts = deepnet_constants(depth, ctx.cross_attention)
    if not consts:
        return f"DeepNet (skip x alpha inside the LayerNorm, v/o/FFN init x beta): {_use_scheme(ctx, 'deepnet')}"
    if len(consts) == 1:
        (stack, (a, b)), n = next(iter(consts.items())), next(iter(depth.values()))
        f = deepnet.formulas(stack_kind(depth), ctx.cross_attention)[stack]
        x = "M" if "M" in f["alpha"] else "N"
        vals = f"alpha={f['alpha']}={a:.3f}, beta={f['beta']}={b:.3f} for {x}={n} blocks"
    else:
        vals = "; ".join(f"{s} alpha={a:.3f}, beta={b:.3f}" for s, (a, b) in consts.items())
        vals += f" for {depth.get('encoder')} encoder / {depth.get('decoder')} decoder blocks"
    return f"DeepNet ({vals}): {_use_scheme(ctx, 'deepnet')}"


def _tfixup(ctx: RunContext, depth: dict[str, int]) -> str:
    scales = tfixup_scales(depth)
    vals = ", ".join(f"{s} x{v:.3f}" for s, v in scales.items())
    what = f"no LayerNorm, no warmup, v/o/FFN weights scaled {vals}" if vals else "no LayerNorm"
    return f"T-Fixup ({what}): {_use_scheme(ctx, 't-fixup')}"


def _to_pre_ln(ctx: RunContext) -> str:
    """The family's own way to move its norms before the sublayers (Pre-LN), or that it has
    none (read from :mod:`initwatch.anatomy.families`)."""
    from initwatch.anatomy.families import layout_switch

    family = ctx.family
    switch = layout_switch(family) if family else None
    if switch:
        return f"switch to Pre-LN ({switch})"
    if family:
        return f"{family} has no Pre-LN switch (its norms sit after the sublayers by design): build a Pre-LN variant of the model only if you can retrain from scratch"
    return "switch to Pre-LN (each norm before its sublayer)"


# The variance-preserving init of each activation kind (initwatch.selection.activation_kinds).
_INIT_BY_ACT = {
    "relu": "Kaiming for ReLU (std sqrt(2/fan_in))",
    "gelu": "Kaiming-style with GELU's own gain 1/sqrt(E[gelu(z)^2])",
    "silu": "Kaiming-style with SiLU's own gain 1/sqrt(E[silu(z)^2])",
    "tanh": "Xavier with gain 5/3 for tanh",
    "sigmoid": "Xavier (gain 1) for sigmoid",
}
_SATURATING = ("sigmoid", "tanh")


def _init_advice(ctx: RunContext) -> str:
    """A variance-preserving init for the activations this model has (all when unknown)."""
    acts = [a for a in ctx.activations if a in _INIT_BY_ACT]
    if not ctx.activations:
        return "use a variance-preserving init (Kaiming for ReLU, Xavier for tanh)"
    if not acts:
        return "use a variance-preserving init for its activations"
    return "use a variance-preserving init (" + "; ".join(_INIT_BY_ACT[a] for a in acts) + ")"


def _replace_saturating(ctx: RunContext) -> str | None:
    """Replace sigmoid/tanh, when the model has them (or nothing is known); None otherwise."""
    if not ctx.activations:
        return "replace saturating activations (sigmoid, tanh) by ReLU or GELU"
    present = [a for a in _SATURATING if a in ctx.activations]
    if not present:
        return None
    return f"replace its {' and '.join(present)} by ReLU or GELU"


def _join(items: list[str]) -> str:
    items = [i for i in items if i]
    if not items:
        return ""
    text = items[0] if len(items) == 1 else "; or ".join(items)
    return text[0].upper() + text[1:] + "."


# ------------------------------------------------------------------ one function per kind
def _vanishing_gradient(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    depth = _depth(ev, ctx)
    where = f"{layer} and the other lower layers" if ev.get("n_affected", 1) > 1 else layer
    if ev.get("source") == "floor" and not _is_transformer(ev, ctx):
        lead = f"The gradient reaching {layer} is almost zero: check that it is used in the loss (no detach, no frozen path)"
        return _join([lead, _init_advice(ctx), _warmup(ctx)])
    if ctx.pretrained:
        return _join(
            [
                f"This is a fine-tune: keep the pretrained weights as they are; {_warmup(ctx)} and {_lower_lr(ctx, ev, 3)}",
                f"check that {where} {'are' if ev.get('n_affected', 1) > 1 else 'is'} not frozen or detached by accident",
            ]
        )
    if not _is_transformer(ev, ctx):
        n = ev.get("n_layers")
        lead = f"Gradients shrink across {n or 'the'} layers before reaching {where}"
        swap = _replace_saturating(ctx)
        init = _init_advice(ctx)
        return _join(
            [
                f"{lead}: {swap}" if swap else f"{lead}: {init}",
                init if swap else "",
                "add normalization (LayerNorm/BatchNorm) or residual connections",
            ]
        )
    scheme = (ctx.scheme or "").lower()
    if scheme == "deepnet":
        consts = deepnet_constants(depth, ctx.cross_attention)
        vals = ", ".join(f"{s}: alpha={a:.3f}, beta={b:.3f}" for s, (a, b) in consts.items())
        return _join(
            [
                f"DeepNet is already applied{f' ({vals})' if vals else ''}: check with `initwatch.inspect(model)` that it reached every block, then {_warmup(ctx)} and {_lower_lr(ctx, ev, 3)}",
                _to_pre_ln(ctx),
                f"try ReZero on a fresh model: {_use_scheme(ctx, 'rezero')}",
            ]
        )
    if scheme in registry.grace_schemes():  # branches that start from zero (T-Fixup, ReZero)
        name = registry.get(scheme).title
        return _join(
            [
                f"{name} is already applied and its grace period is over: {_lower_lr(ctx, ev, 3)} and {_warmup(ctx)}",
                f"try DeepNet on a fresh model (it keeps LayerNorm): {_deepnet(ctx, depth)}"
                if ctx.layout == "post"
                else _to_pre_ln(ctx),
            ]
        )
    if ctx.layout == "pre":
        return _join(
            [
                f"Pre-LN should not starve its lower blocks; {_warmup(ctx)} and {_lower_lr(ctx, ev, 3)}",
                f"try ReZero: {_use_scheme(ctx, 'rezero')}",
            ]
        )
    # Post-LN (or unknown layout) trained from scratch without a scheme: the deep-transformer case.
    lead = "Post-LN" if ctx.layout == "post" else "This"
    n_text = f"{sum(depth.values())}-block " if depth else ""
    return _join(
        [
            f"{lead} {n_text}model loses its gradient before {where}: use {_deepnet(ctx, depth)}",
            _tfixup(ctx, depth),
            _to_pre_ln(ctx),
            _warmup(ctx),
        ]
    )


def _exploding_gradient(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    g, base = ev.get("grad_norm"), ev.get("baseline")
    factor = 10.0
    if isinstance(g, (int, float)) and isinstance(base, (int, float)) and base and base > 0:
        factor = max(3.0, min(10.0, _round2(g / base)))
    items = [_clip(ev, ctx), _lower_lr(ctx, ev, factor), _warmup(ctx)]
    if _fp16(ctx):
        items.append("under fp16 keep dynamic loss scaling on or switch to bf16")
    depth = _depth(ev, ctx)
    if (
        not ctx.pretrained
        and not ctx.scheme
        and ctx.layout == "post"
        and depth
        and sum(depth.values()) >= 12
    ):
        items.append(f"for a deep Post-LN model, {_deepnet(ctx, depth)}")
    return _join(items)


def _fp16(ctx: RunContext) -> bool:
    return ctx.fp16


def _vanishing_activation(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    if ev.get("source") == "time":
        return _join(
            [
                f"Outputs of {layer} collapsed during training: {_lower_lr(ctx, ev)}",
                "check weight decay is not too strong",
                "look for dead units (LeakyReLU/GELU instead of ReLU)",
            ]
        )
    per = ev.get("per_layer")
    gain = (
        f"multiply the init gain by ~{fmt(1 / per)} " if isinstance(per, float) and per > 0 else ""
    )
    init = _init_advice(ctx).removeprefix("use a ")
    items = [
        f"The signal shrinks by ~{fmt(per)}x per layer before {layer}: {gain}({init})",
        "add normalization (LayerNorm/BatchNorm)",
    ]
    if _is_transformer(ev, ctx) and not ctx.pretrained:
        items.append("check the residual connections are intact (x + f(x), not f(x))")
    return _join(items)


def _exploding_activation(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    src = ev.get("source")
    if src == "fp16":
        return _join(
            [
                f"{layer} approaches fp16's limit 65504: {_bf16(ctx)}",
                f"keep {layer} in fp32 (`torch.autocast(..., enabled=False)` around it)",
                _lower_lr(ctx, ev, 3),
                "add a normalization before it",
            ]
        )
    if src == "time":
        return _join(
            [
                f"Outputs of {layer} grew {fmt(ev.get('ratio'))}x during training: {_lower_lr(ctx, ev)}",
                _warmup(ctx),
                "add weight decay (e.g. 0.01-0.1 with AdamW)",
                _clip(ev, ctx),
            ]
        )
    per = ev.get("per_layer")
    if ctx.pretrained:
        return _join(
            [
                f"Activations grow ~{fmt(per)}x per layer up to {layer}: {_lower_lr(ctx, ev, 3)}",
                _warmup(ctx),
            ]
        )
    if _is_transformer(ev, ctx) and ev.get("blocks", True):
        depth = _depth(ev, ctx)
        if ctx.scheme:
            return _grows_under_scheme(layer, ev, ctx, depth)
        n = sum(depth.values()) or ev.get("n_layers") or 1
        branch = 1 / math.sqrt(2 * n)
        items = [
            f"The residual stream grows ~{fmt(per)}x per block up to {layer}: scale each residual branch's output projection by 1/sqrt(2N)={branch:.3f} (GPT-2) for N={n}",
            "LayerNorm scaling by 1/sqrt(depth) (Curse of Depth)",
            f"ReZero, whose branches start at zero: {_use_scheme(ctx, 'rezero')}",
        ]
        if ctx.layout == "post":
            items.append(_deepnet(ctx, depth))
        return _join(items)
    gain = (
        f"divide the init gain by ~{fmt(per)}"
        if isinstance(per, float) and per > 0
        else "lower the init gain"
    )
    init = _init_advice(ctx).removeprefix("use a ")
    return _join(
        [
            f"Activations grow ~{fmt(per)}x per layer up to {layer}: {gain} ({init})",
            "add normalization (LayerNorm/BatchNorm)",
        ]
    )


def _grows_under_scheme(
    layer: str, ev: dict[str, Any], ctx: RunContext, depth: dict[str, int]
) -> str:
    """The residual stream grows although a scheme was applied: say what the scheme already
    did (read from the registry) and never suggest it again (branch scaling, LayerNorm
    changes, another scheme on this model)."""
    per = ev.get("per_layer")
    try:
        scheme = registry.get(ctx.scheme or "")
    except ValueError:
        scheme = None
    title = scheme.title if scheme is not None else str(ctx.scheme)
    did = []
    if scheme is not None:
        consts = registry.constants(scheme.name, depth, ctx.cross_attention) if depth else {}
        if any(consts.values()):
            vals = "; ".join(
                f"{s}: " + ", ".join(f"{k}={v:.3g}" for k, v in c.items())
                for s, c in consts.items()
            )
            did.append(f"scales the residual branches ({vals})")
        if scheme.removes_norms:
            did.append("removed the residual-path LayerNorms")
    what = f", which already {' and '.join(did)}" if did else ""
    return _join(
        [
            f"The residual stream grows ~{fmt(per)}x per block up to {layer} under {title}{what}: check with `initwatch.inspect(model)` that it reached every block, then {_lower_lr(ctx, ev, 3)}",
            _warmup(ctx),
            _clip(ev, ctx),
        ]
    )


def _nonfinite(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    where = ev.get("where")
    first = f"The first non-finite {'output' if where == 'activation' else 'value'} is at {layer}"
    if _fp16(ctx):
        return _join(
            [
                f"{first}: fp16 overflows above 65504 — {_bf16(ctx)}",
                "keep dynamic loss scaling on (`torch.amp.GradScaler`)",
                f"keep {layer} in fp32",
                _lower_lr(ctx, ev),
            ]
        )
    items = [
        f"{first}: {_lower_lr(ctx, ev)}",
        _clip(ev, ctx),
        _warmup(ctx),
        "check inputs and labels for NaN/Inf and ops such as log(0), sqrt(0) backward, division by ~0",
    ]
    return _join(items)


def _dead_units(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    frac = ev.get("fraction")
    return _join(
        [
            f"{fmt(100 * frac) if isinstance(frac, float) else '?'}% of {layer}'s outputs are zero: use LeakyReLU(0.01) or GELU instead of ReLU",
            _lower_lr(ctx, ev) + " (large steps push pre-activations below zero for good)",
            "check the bias init of the layer before it (zero or small positive, never large negative) and use Kaiming init",
            "add a normalization before the activation",
        ]
    )


def _saturation(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    frac = ev.get("fraction")
    return _join(
        [
            f"{fmt(100 * frac) if isinstance(frac, float) else '?'}% of {layer}'s outputs sit in the flat tails: lower the init gain of the layer before it ({_saturating_gain(ctx)}; halve it if still saturated)",
            "add a normalization (LayerNorm/BatchNorm) before the activation",
            "use a ReLU-family activation (ReLU, GELU)",
            _lower_lr(ctx, ev, 3),
        ]
    )


def _saturating_gain(ctx: RunContext) -> str:
    present = [a for a in _SATURATING if a in ctx.activations] or list(_SATURATING)
    return "; ".join(_INIT_BY_ACT[a] for a in present)


def _update_ratio_high(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    ratio, target = ev.get("ratio"), ev.get("target", 1e-3)
    factor = ev.get("factor") or (ratio / target if ratio else 10.0)
    factor = max(2.0, _round2(factor))
    lead = f"Each step changes {layer}'s weights by {fmt(ratio)} of their norm ({fmt(factor)}x the healthy ~{fmt(target)}): {_lower_lr(ctx, ev, factor)}"
    if ev.get("lora"):
        lead = f"Each step changes the LoRA-adapted weight {layer} (s * B @ A against the frozen weight) by {fmt(ratio)} of its norm ({fmt(factor)}x the healthy ~{fmt(target)}): {_lower_lr(ctx, ev, factor)}"
        return _join(
            [
                lead,
                "LoRA usually trains at 1e-4..3e-4 with AdamW; or lower lora_alpha (the update scales with lora_alpha / r)",
                _warmup(ctx),
            ]
        )
    items = [lead, _warmup(ctx)]
    if ctx.pretrained:
        items.append(
            "use layer-wise learning-rate decay (e.g. x0.9 per block from the top), as fine-tunes of pretrained weights do"
        )
    return _join(items)


def _update_ratio_low(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    ratio, target = ev.get("ratio"), ev.get("target", 1e-3)
    gap = max(2.0, _round2(target / ratio)) if ratio else 10.0
    lr = _lr_text(ctx, ev)
    # never suggest an lr past what the optimizer family tolerates (Adam ~1e-2, SGD ~1)
    ceiling = 1.0 if (ctx.optimizer or "").lower().startswith("sgd") else 1e-2
    factor = min(gap, max(2.0, _round2(ceiling / lr))) if lr else gap
    step = "" if factor == gap else f" (the gap is {fmt(gap)}x: raise in steps and re-check)"
    raise_text = (
        f"raise the {_opt(ctx)}learning rate ~{fmt(factor)}x (from {fmt(lr)} to {fmt(lr * factor)}){step}"
        if lr
        else f"raise the learning rate ~{fmt(factor)}x{step}"
    )
    return _join(
        [
            f"Each step changes {layer}'s weights by only {fmt(ratio)} of their norm ({fmt(1 / gap)}x the healthy ~{fmt(target)}): {raise_text}",
            "check that these parameters are in the optimizer and not over-regularized by weight decay",
        ]
    )


def _loss_diverging(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    r, base = ev.get("ratio"), ev.get("baseline")
    clipped = (
        f" (clipping at {fmt(ctx.grad_clip)} is on and did not stop it)" if ctx.clipping else ""
    )
    lead = (
        f"The loss rose to {fmt(r)}x its early value {fmt(base)}{clipped}: {_lower_lr(ctx, ev, 10)}"
    )
    items = [lead, _warmup(ctx), _clip(ev, ctx)]
    if ctx.pretrained:
        items.append("a fine-tune usually wants lr 1e-5..1e-4 with AdamW")
    items.append("if the lr is usual, check the data of these steps (a corrupt batch or shard)")
    return _join(items)


def _attention_collapse(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    frac, logit = ev.get("fraction"), ev.get("logit_absmax")
    pct = fmt(100 * frac) if isinstance(frac, float) else fmt(None)
    lead = (
        f"{pct}% of {layer}'s attention rows are one-hot (largest |q.k/sqrt(d)| {fmt(logit)}): "
        f"attention entropy collapse; {_lower_lr(ctx, ev, 3)}"
    )
    items = [lead, _warmup(ctx)]
    bound = (
        "bound the attention logits: QK-norm (a LayerNorm/RMSNorm on q and k before the dot "
        "product), sigma-reparam (spectral normalization of the q/k weights) or logit "
        "soft-capping (`cap * tanh(logits / cap)`, e.g. cap=50)"
    )
    if not ctx.pretrained:
        items.append(bound)
    return _join(items)


def _lr_schedule_collapse(layer: str, ev: dict[str, Any], ctx: RunContext) -> str:
    step, total, peak = ev.get("step"), ev.get("max_steps"), ev.get("peak")
    lead = (
        f"The learning rate is ~0 at step {fmt(step)} of {fmt(total)} (peak {fmt(peak)}): the "
        "schedule ends long before the run, most often a scheduler sized in epochs but stepped "
        "every optimizer step"
    )
    framework = ctx.extra.get("framework")
    lightning = (
        'in Lightning return `{"scheduler": scheduler, "interval": "epoch"}` from '
        "configure_optimizers, or size it in steps (e.g. "
        "`T_max=self.trainer.estimated_stepping_batches`)"
    )
    hf = (
        "with the Hugging Face Trainer pass `num_training_steps` = the number of optimizer steps "
        "(`max_steps`, or `len(train_dataloader) // gradient_accumulation_steps * "
        "num_train_epochs`) to `get_*_schedule_with_warmup`, not the number of epochs"
    )
    items = [lead]
    if framework == "lightning":
        items.append(lightning)
    elif framework == "transformers":
        items.append(hf)
    else:
        items += [lightning, hf]
    items.append("check a StepLR/ExponentialLR's `step_size` and `gamma` against max_steps")
    return _join(items)


_BY_KIND = {
    K.VANISHING_GRADIENT: _vanishing_gradient,
    K.EXPLODING_GRADIENT: _exploding_gradient,
    K.VANISHING_ACTIVATION: _vanishing_activation,
    K.EXPLODING_ACTIVATION: _exploding_activation,
    K.NONFINITE: _nonfinite,
    K.DEAD_UNITS: _dead_units,
    K.SATURATION: _saturation,
    K.UPDATE_RATIO_HIGH: _update_ratio_high,
    K.UPDATE_RATIO_LOW: _update_ratio_low,
    K.LOSS_DIVERGING: _loss_diverging,
    K.ATTENTION_COLLAPSE: _attention_collapse,
    K.LR_SCHEDULE_COLLAPSE: _lr_schedule_collapse,
}


def suggest(
    kind: str | AlertKind,
    layer: str,
    evidence: dict[str, Any] | None = None,
    context: RunContext | None = None,
) -> str:
    """What to do about an alert, for this model and this run, with concrete numbers.

    Uses everything :class:`~initwatch.RunContext` knows: layout (Pre-/Post-LN), depth, the
    scheme in use, optimizer and learning rate, warmup, precision and whether the weights are
    pretrained (a fine-tune is never told to re-initialize).

    Args:
        kind: an alert kind, e.g. ``"vanishing_gradient"``.
        layer: the layer the alert names.
        evidence: the numbers a rule measured (``ratio``, ``baseline``, ``lr``, ...); missing
            numbers give a more generic text.
        context: the run context.

    Returns:
        One or a few sentences.

    Example::

        >>> from initwatch.context import RunContext
        >>> ctx = RunContext(layout="post", depth={"encoder": 24}, optimizer="Adam", lr=1e-3)
        >>> text = suggest("vanishing_gradient", "encoder.0", {"ratio": 1e-3}, ctx)
        >>> "alpha=(2N)^(1/4)=2.632" in text and 'scheme="deepnet"' in text
        True
    """
    k = AlertKind(kind)
    ev = dict(evidence or {})
    ctx = context if context is not None else RunContext()
    return _BY_KIND[k](layer, ev, ctx)


__all__ = ["deepnet_constants", "suggest", "tfixup_scales"]
