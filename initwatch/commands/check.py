"""``initwatch check MODEL``: a pre-flight check of signal propagation across depth.

It builds the model with random weights, measures it on random inputs with a few forward and
backward passes, then runs a short burst of optimizer steps at the planned learning rate (some
failures, like a deep Post-LN stack's collapse, only show after the first updates). It does this
with the model's own init and under each scheme that applies, prints the per-block activation
RMS, backward-signal RMS and gradient norm side by side, flags what would alert, and recommends
an init with its reason. The model for this is microsoft/mup's coordinate check: a picture of
each layer's scale, made in seconds, before a long run is spent.

Example::

    >>> from initwatch.commands.check import CheckSettings, run_check
    >>> result = run_check(CheckSettings(model="torch_encoder", layers=4, hidden=32, steps=6))
    >>> [v.name for v in result.variants]
    ['own init', 'deepnet', 't-fixup', 'rezero']
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from initwatch.alerts import Alert
from initwatch.commands._text import alert_lines, fmt, parse_scheme_list, table, threads, wrap

HELP = (
    "Pre-flight check: build MODEL with random weights, measure per-block activation RMS, "
    "backward-signal RMS and gradient norm with its own init and under each scheme, over a few "
    "passes and a short burst of optimizer steps; flag what would alert and recommend an init."
)
OWN = "own init"
SCHEMES = ("deepnet", "t-fixup", "rezero")
OPTIMIZERS = ("adam", "adamw", "sgd")
STATS = (
    ("act_rms", "activation RMS per block (output of each block)"),
    ("out_grad_rms", "backward-signal RMS per block (dL/d block output)"),
    ("grad_norm", "gradient norm per block (all its parameters)"),
)
DEFAULT_MAX_PARAMS = 200_000_000


@dataclass
class CheckSettings:
    """What ``initwatch check`` builds and how it measures.

    Args:
        model: a family name (see :data:`initwatch.zoo.FAMILIES`), a Hugging Face config JSON
            file, or a ``save_pretrained`` directory (only its config is read).
        layers: blocks per stack (family default 12; for a config, overrides its depth).
        hidden: model width (family default 64; for a config, overrides its width).
        lr: the planned learning rate.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        steps: optimizer steps in the burst.
        passes: forward/backward passes at init (no update), averaged.
        batch: sequences (or images) per batch.
        seq: tokens per sequence.
        schemes: schemes to try (those that do not apply are skipped with the reason).
        seed: seeds weights and inputs.
        max_params: refuse to build a model larger than this (it runs on the CPU).

    Example::

        >>> CheckSettings(model="bert").steps
        30
    """

    model: str
    layers: int | None = None
    hidden: int | None = None
    lr: float = 1e-3
    optimizer: str = "adam"
    steps: int = 30
    passes: int = 3
    batch: int = 8
    seq: int = 32
    schemes: tuple[str, ...] = SCHEMES
    seed: int = 0
    max_params: int = DEFAULT_MAX_PARAMS


@dataclass
class Variant:
    """The measurements of one init (the model's own, or a scheme).

    Args:
        name: ``"own init"`` or a scheme name.
        blocks: block names in depth order.
        init: ``{stat: {block: value}}`` averaged over the passes at init.
        after: ``{stat: {block: value}}`` at the last step of the burst.
        losses: the loss of every burst step.
        alerts: what the rules raised during the burst.
        skipped: why the scheme was not applied (then nothing was measured).

    Example::

        >>> Variant("rezero", skipped="not applicable").measured
        False
    """

    name: str
    blocks: list[str] = field(default_factory=list)
    init: dict[str, dict[str, float]] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    skipped: str | None = None

    @property
    def measured(self) -> bool:
        """False when the scheme was skipped."""
        return self.skipped is None

    @property
    def new_alerts(self) -> list[Alert]:
        """Alerts without their "still" updates."""
        return [a for a in self.alerts if not a.repeat]

    @property
    def diverged(self) -> bool:
        """True when a loss of the burst was NaN or infinite."""
        return any(not math.isfinite(v) for v in self.losses)

    def grad_ratio(self, when: str = "after") -> float:
        """Smallest block gradient norm over the largest of the top quarter of blocks."""
        table_ = (self.after if when == "after" else self.init).get("grad_norm", {})
        values = [table_[b] for b in self.blocks if b in table_ and math.isfinite(table_[b])]
        if not values:
            return math.nan
        top = max(values[-max(1, len(values) // 4) :])
        return min(values) / top if top > 0 else math.nan


@dataclass
class CheckResult:
    """What :func:`run_check` measured and concluded.

    Args:
        description: one line about the model.
        variants: one :class:`Variant` per init tried, the model's own first.
        recommendation: the init to use (``"own init"`` or a scheme name).
        reason: why, with the numbers.
        settings: the settings used.

    Example::

        >>> CheckResult("m", [], OWN, "no alerts", CheckSettings("bert")).recommendation
        'own init'
    """

    description: str
    variants: list[Variant]
    recommendation: str
    reason: str
    settings: CheckSettings
    seconds: float = 0.0


# ------------------------------------------------------------------------------ arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``initwatch check``.

    Example::

        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["bert", "--layers", "6"]).layers
        6
    """
    from initwatch.commands.demo import _positive, _positive_float

    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a family name (bert, gpt2, llama, t5, ...), a Hugging Face config JSON file, or "
        "a save_pretrained directory (only config.json is read; weights are random)",
    )
    parser.add_argument(
        "--layers", type=_positive, help="blocks per stack (family default 12; overrides a config)"
    )
    parser.add_argument(
        "--hidden", type=_positive, help="model width (family default 64; overrides a config)"
    )
    parser.add_argument(
        "--lr", type=_positive_float, default=1e-3, help="planned learning rate (default 1e-3)"
    )
    parser.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer (default adam)"
    )
    parser.add_argument(
        "--steps", type=_positive, default=30, help="optimizer steps in the burst (default 30)"
    )
    parser.add_argument(
        "--passes", type=_positive, default=3, help="forward/backward passes at init (default 3)"
    )
    parser.add_argument("--batch", type=_positive, default=8, help="batch size (default 8)")
    parser.add_argument("--seq", type=_positive, default=32, help="sequence length (default 32)")
    parser.add_argument(
        "--schemes",
        default=",".join(SCHEMES),
        help=f"schemes to try (default {','.join(SCHEMES)}; 'none' for the own init only)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights and inputs seed (default 0)")
    parser.add_argument(
        "--max-params",
        type=_positive,
        default=DEFAULT_MAX_PARAMS,
        help=f"refuse larger models (default {DEFAULT_MAX_PARAMS:,}); shrink with --hidden",
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=1,
        help="torch threads (default 1: small models gain nothing from more)",
    )
    parser.add_argument("--plot", metavar="PNG", help="draw the depth profiles into this image")


def _schemes(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return parse_scheme_list(text, "check")


def settings_from_args(args: argparse.Namespace) -> CheckSettings:
    """The :class:`CheckSettings` of a parsed command line.

    Example::

        >>> from initwatch.cli import build_parser
        >>> settings_from_args(build_parser().parse_args(["check", "gpt2", "--lr", "3e-4"])).lr
        0.0003
    """
    return CheckSettings(
        model=args.model,
        layers=args.layers,
        hidden=args.hidden,
        lr=args.lr,
        optimizer=args.optimizer,
        steps=args.steps,
        passes=args.passes,
        batch=args.batch,
        seq=args.seq,
        schemes=_schemes(args.schemes),
        seed=args.seed,
        max_params=args.max_params,
    )


# ------------------------------------------------------------------------------ the model


@dataclass
class ModelSource:
    """How to build the model under check, any number of times, identically.

    Args:
        build: a function returning a fresh model with random weights.
        inputs: a function ``(model, batch, seq, generator) -> dict`` of random inputs.
        description: what the model is.

    Example::

        >>> src = model_source(CheckSettings("gpt2", layers=2, hidden=32))
        >>> type(src.build()).__name__
        'GPT2LMHeadModel'
    """

    build: Callable[[], Any]
    inputs: Callable[[Any, int, int, Any], dict[str, Any]]
    description: str


_DEPTH_KEYS = (
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "n_layers",
    "encoder_layers",
    "decoder_layers",
    "num_decoder_layers",
)
_WIDTH_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
_FFN_KEYS = (
    "intermediate_size",
    "ffn_dim",
    "d_ff",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "n_inner",
    "hidden_dim",
)
_HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads")


def _load_config(path: str) -> Any:
    """A Hugging Face config from a JSON file or a ``save_pretrained`` directory."""
    from initwatch.cli import UsageError

    try:
        from transformers import AutoConfig
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise UsageError(f"reading a config needs transformers: {exc}", "check") from None
    if os.path.isdir(path):
        file = os.path.join(path, "config.json")
        if not os.path.isfile(file):
            raise UsageError(
                f"{path!r} is a directory without config.json; pass a save_pretrained "
                "directory, a config JSON file or a family name",
                "check",
            )
    else:
        file = path
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {file!r} as a JSON config: {exc}", "check") from None
    if not isinstance(data, dict) or not data.get("model_type"):
        raise UsageError(
            f'{file!r} is not a Hugging Face model config: it has no "model_type" '
            '(e.g. {"model_type": "bert", "num_hidden_layers": 12, ...})',
            "check",
        )
    model_type = data.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise UsageError(
            f"{file!r}: model_type {model_type!r} is not one transformers can build ({first})",
            "check",
        ) from None


def _resize_config(config: Any, layers: int | None, hidden: int | None) -> None:
    from initwatch.cli import UsageError

    keys = config.to_dict()
    if layers is not None:
        found = [k for k in _DEPTH_KEYS if isinstance(keys.get(k), int)]
        if not found:
            raise UsageError(
                f"--layers: this {config.model_type} config has no depth field "
                f"({', '.join(_DEPTH_KEYS)})",
                "check",
            )
        for k in found:
            setattr(config, k, layers)
    if hidden is not None:
        found = [k for k in _WIDTH_KEYS if isinstance(keys.get(k), int)]
        if not found:
            raise UsageError(
                f"--hidden: this {config.model_type} config has no width field "
                f"({', '.join(_WIDTH_KEYS)})",
                "check",
            )
        old = keys[found[0]]
        for k in _FFN_KEYS:
            if isinstance(keys.get(k), int):
                setattr(config, k, max(1, keys[k] * hidden // old))
        heads = next((keys[k] for k in _HEAD_KEYS if isinstance(keys.get(k), int)), None)
        if heads and hidden % heads:
            raise UsageError(
                f"--hidden {hidden} is not divisible by the config's {heads} attention heads",
                "check",
            )
        for k in ("head_dim", "d_kv"):
            if isinstance(keys.get(k), int) and heads:
                setattr(config, k, hidden // heads)
        for k in found:
            setattr(config, k, hidden)


def _hf_model(config: Any) -> Any:
    import transformers as tf

    order = (["AutoModelForSeq2SeqLM"] if getattr(config, "is_encoder_decoder", False) else []) + [
        "AutoModelForCausalLM",
        "AutoModelForMaskedLM",
        "AutoModelForImageClassification",
        "AutoModel",
    ]
    last: Exception | None = None
    for name in order:
        try:
            return getattr(tf, name).from_config(config)
        except (ValueError, KeyError) as exc:
            last = exc
    raise ValueError(f"transformers has no model class for this config ({last})")


def _hf_inputs(model: Any, batch: int, seq: int, gen: Any) -> dict[str, Any]:
    import torch

    config = model.config
    name = getattr(model, "main_input_name", "input_ids")
    if name == "pixel_values":
        size = getattr(config, "image_size", 32)
        size = size if isinstance(size, int) else size[0]
        channels = getattr(config, "num_channels", 3)
        return {"pixel_values": torch.randn(batch, channels, size, size, generator=gen)}
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if vocab < 4:
        raise ValueError(f"cannot make random inputs for {type(model).__name__} (no vocab_size)")
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        seq = min(seq, limit)
    ids = torch.randint(3, vocab - 1, (batch, seq), generator=gen)
    out = {"input_ids": ids}
    if getattr(config, "is_encoder_decoder", False):
        out["decoder_input_ids"] = torch.randint(3, vocab - 1, (batch, seq), generator=gen)
    return out


def _count_params(build: Callable[[], Any]) -> int | None:
    """Parameters of the model ``build`` makes, counted on the meta device (no memory)."""
    import torch

    try:
        with torch.device("meta"):
            model = build()
        return sum(p.numel() for p in model.parameters())
    except Exception:
        return None


def model_source(settings: CheckSettings) -> ModelSource:
    """Resolve ``settings.model`` into a :class:`ModelSource`.

    Raises:
        UsageError: an unknown family, a missing file, or a config transformers cannot build.

    Example::

        >>> model_source(CheckSettings("bert", layers=2, hidden=32)).description
        'bert (family), 2 blocks per stack, hidden 32'
    """
    from initwatch import zoo
    from initwatch.cli import UsageError

    spec = settings.model
    if os.path.exists(spec):
        config = _load_config(spec)
        _resize_config(config, settings.layers, settings.hidden)

        def build() -> Any:
            return _hf_model(config)

        desc = f"{spec} ({config.model_type} config; random weights)"
        inputs: Callable[[Any, int, int, Any], dict[str, Any]] = _hf_inputs
    elif spec in zoo.FAMILIES:
        layers = settings.layers or 12
        hidden = settings.hidden or 64
        heads = 4 if hidden % 4 == 0 else 1

        def build() -> Any:
            return zoo.build(spec, layers=layers, hidden=hidden, heads=heads, vocab=256)

        def inputs(model: Any, batch: int, seq: int, gen: Any) -> dict[str, Any]:
            if spec.startswith("torch_"):
                return zoo.example_inputs(spec, model, batch=batch, seq=seq)
            return _hf_inputs(model, batch, seq, gen)

        desc = f"{spec} (family), {layers} blocks per stack, hidden {hidden}"
    else:
        looks_like_path = os.sep in spec or spec.endswith(".json") or spec.startswith(".")
        if looks_like_path:
            raise UsageError(f"no such file or directory: {spec}", "check")
        raise UsageError(
            f"unknown model {spec!r}: expected a Hugging Face config (JSON file or "
            f"save_pretrained directory) or a family name ({', '.join(zoo.FAMILIES)})",
            "check",
        )
    n = _count_params(build)
    if n is not None and n > settings.max_params:
        raise UsageError(
            f"{spec}: {n / 1e6:,.0f}M parameters is too large to check on the CPU "
            f"(--max-params {settings.max_params:,}); shrink it, e.g. --hidden 256 "
            "(depth matters more than width here)",
            "check",
        )
    return ModelSource(build=build, inputs=inputs, description=desc)


# ------------------------------------------------------------------------------ measuring


def _optimizer(name: str, params: Any, lr: float) -> Any:
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def _output(out: Any) -> tuple[Any, bool]:
    """The main output tensor and whether it holds logits."""
    from initwatch.zoo import output_tensor

    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits, True
    return output_tensor(out), False


def _loss(model: Any, inputs: dict[str, Any], target: Any) -> Any:
    """Cross-entropy against fixed random labels for logits; MSE to a fixed target otherwise."""
    import torch.nn.functional as F

    y, _ = _output(model(**inputs))
    if target.dtype.is_floating_point:
        return F.mse_loss(y.float(), target)
    return F.cross_entropy(y.reshape(-1, y.shape[-1]).float(), target.reshape(-1))


def _make_target(model: Any, inputs: dict[str, Any], gen: Any) -> Any:
    """Random labels for logits, a random unit-variance tensor for other outputs."""
    import torch

    with torch.no_grad():
        y, logits = _output(model(**inputs))
    if logits and y.dim() >= 2 and y.shape[-1] > 1:
        return torch.randint(0, y.shape[-1], tuple(y.shape[:-1]), generator=gen)
    return torch.randn(tuple(y.shape), generator=gen)


def _profile(frame: Any, blocks: list[str]) -> dict[str, dict[str, float]]:
    from initwatch.sinks import aggregate_params

    params = aggregate_params(frame)
    out: dict[str, dict[str, float]] = {}
    for stat, _ in STATS:
        table_ = params[stat] if stat == "grad_norm" else frame.values.get(stat, {})
        out[stat] = {b: float(table_[b]) for b in blocks if b in table_}
    return out


def _mean_profiles(profiles: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for stat, _ in STATS:
        names = {b for p in profiles for b in p.get(stat, {})}
        out[stat] = {
            b: statistics.fmean(p[stat][b] for p in profiles if b in p.get(stat, {})) for b in names
        }
    return out


def measure(source: ModelSource, settings: CheckSettings, scheme: str | None) -> Variant:
    """Build the model, apply ``scheme`` (None: its own init) and measure it.

    Example::

        >>> s = CheckSettings("torch_encoder", layers=3, hidden=16, steps=3, passes=1)
        >>> v = measure(model_source(s), s, "rezero")
        >>> v.blocks
        ['encoder.0', 'encoder.1', 'encoder.2']
    """
    import torch

    import initwatch
    from initwatch.context import RunContext
    from initwatch.errors import InitWatchError
    from initwatch.watch import Watch

    name = scheme or OWN
    torch.manual_seed(settings.seed)
    model = source.build()
    model.train()
    anatomy = initwatch.anatomy.try_inspect(model)
    if scheme is not None:
        if anatomy is None:
            return Variant(name, skipped="initwatch cannot read this model's blocks")
        try:
            initwatch.reinit(model, scheme, seed=settings.seed, anatomy=anatomy)
        except InitWatchError as exc:
            return Variant(name, skipped=" ".join(str(exc).split()))
    gen = torch.Generator().manual_seed(1000 + settings.seed)
    opt = _optimizer(settings.optimizer, model.parameters(), settings.lr)

    # 1. Forward and backward passes at init, each on fresh random inputs; no update.
    probe = Watch(model, every=1, rules=False, on_alert="ignore", anatomy=anatomy)
    blocks: list[str] = []
    profiles = []
    try:
        for i in range(settings.passes):
            inputs = source.inputs(model, settings.batch, settings.seq, gen)
            target = _make_target(model, inputs, gen)
            probe.begin_step(i)
            loss = _loss(model, inputs, target)
            loss.backward()
            probe.before_optimizer_step(opt)
            probe.end_step(loss=loss.detach(), skipped=True)
            opt.zero_grad(set_to_none=True)
            frame = probe.last_frame
            if not blocks:
                blocks = [i.name for i in frame.layers if i.kind == "block"]
            profiles.append(_profile(frame, blocks))
    finally:
        probe.close()

    # 2. A burst of optimizer steps at the planned learning rate on one fixed random batch.
    context = RunContext(
        scheme=scheme,
        optimizer=type(opt).__name__,
        lr=settings.lr,
        base_lr=settings.lr,
        warmup_steps=0,
        max_steps=settings.steps,
    )
    watch = Watch(model, every=1, on_alert="ignore", context=context, anatomy=anatomy)
    inputs = source.inputs(model, settings.batch, settings.seq, gen)
    target = _make_target(model, inputs, gen)
    losses: list[float] = []
    try:
        for step in range(settings.steps):
            with watch.step(step, opt) as scope:
                loss = _loss(model, inputs, target)
                loss.backward()
                opt.step()
                scope.loss = loss.detach()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                break
        after = _profile(watch.last_frame, blocks) if watch.last_frame else {}
    finally:
        watch.close()
    return Variant(
        name,
        blocks=blocks,
        init=_mean_profiles(profiles),
        after=after,
        losses=losses,
        alerts=list(watch.alerts),
    )


def recommend(variants: Sequence[Variant], settings: CheckSettings) -> tuple[str, str]:
    """The init to use and why, from the measured variants.

    The model's own init is kept when it raised no alert and its loss fell. Otherwise the
    scheme with no alert and the lowest final loss of the burst wins. When every init alerts,
    the one with the fewest alerts is named, with the own init's remedy.

    Example::

        >>> own = Variant(OWN, losses=[5.0, 1.0])
        >>> recommend([own], CheckSettings("bert"))[0]
        'own init'
    """
    measured = [v for v in variants if v.measured and v.losses]
    if not measured:
        return OWN, "nothing could be measured"
    own = next((v for v in measured if v.name == OWN), None)

    def fell(v: Variant) -> bool:
        return not v.diverged and v.losses[-1] < v.losses[0]

    def loss_text(v: Variant) -> str:
        return f"loss {fmt(v.losses[0])} -> {fmt(v.losses[-1])} in {len(v.losses)} steps"

    def ratio_text(v: Variant) -> str:
        r = v.grad_ratio()
        return f"lowest block's gradient {fmt(r)}x the top blocks'" if math.isfinite(r) else ""

    def first_alert(v: Variant) -> str:
        a = v.new_alerts[0]
        extra = f" (+{len(v.new_alerts) - 1} more)" if len(v.new_alerts) > 1 else ""
        return f"{a.kind} at {a.layer} by step {a.step}{extra}"

    at = f"at lr {settings.lr:g} with {settings.optimizer}"
    if own is not None and not own.new_alerts and fell(own):
        return OWN, (
            f"the model's own init raised no alert {at}: {loss_text(own)}, "
            f"{ratio_text(own)}; no scheme is needed"
        )
    clean = [v for v in measured if v.name != OWN and not v.new_alerts and fell(v)]
    why_not_own = ""
    if own is not None:
        why_not_own = (
            f"the own init raised {first_alert(own)}"
            if own.new_alerts
            else f"the own init did not train ({loss_text(own)})"
        )
    if clean:
        best = min(clean, key=lambda v: v.losses[-1])
        parts = [why_not_own, f"{best.name} raised no alert {at}: {loss_text(best)}"]
        if ratio_text(best):
            parts.append(ratio_text(best))
        others = [v.name for v in clean if v is not best]
        if others:
            parts.append(f"also clean: {', '.join(others)}")
        return best.name, "; ".join(p for p in parts if p)
    best = min(measured, key=lambda v: (v.diverged, len(v.new_alerts), v.losses[-1]))
    advice = ""
    if own is not None and own.new_alerts:
        advice = f"; the remedy for the own init: {own.new_alerts[0].remedy}"
    return best.name, (
        f"every init alerted {at}; {best.name} had the fewest alerts "
        f"({len(best.new_alerts)}: {first_alert(best) if best.new_alerts else 'none'}), "
        f"{loss_text(best)}. Consider a lower learning rate or a warmup{advice}"
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' warnings about tiny test configs (e.g. token ids beyond a small vocab)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def run_check(settings: CheckSettings, progress: TextIO | None = None) -> CheckResult:
    """Measure the own init and every applicable scheme; recommend one.

    Example::

        >>> r = run_check(CheckSettings("gpt2", layers=2, hidden=32, steps=3, passes=1,
        ...                             schemes=("rezero",)))
        >>> [v.name for v in r.variants]
        ['own init', 'rezero']
    """
    start = time.perf_counter()
    with _quiet_transformers():
        source = model_source(settings)
        variants = []
        for scheme in (None, *settings.schemes):
            if progress is not None:
                print(f"  measuring {scheme or OWN} ...", file=progress, flush=True)
            variants.append(measure(source, settings, scheme))
    choice, reason = recommend(variants, settings)
    return CheckResult(
        source.description, variants, choice, reason, settings, time.perf_counter() - start
    )


# ------------------------------------------------------------------------------ output


def _rows(blocks: list[str], limit: int = 32) -> list[str]:
    if len(blocks) <= limit:
        return blocks
    step = math.ceil(len(blocks) / limit)
    keep = blocks[::step]
    return keep if keep[-1] == blocks[-1] else keep + [blocks[-1]]


def format_result(result: CheckResult) -> str:
    """The side-by-side tables, the alerts and the recommendation.

    Example::

        >>> v = Variant(OWN, ["encoder.0"], {"act_rms": {"encoder.0": 1.0}},
        ...             {"act_rms": {"encoder.0": 2.0}}, [3.0, 1.0])
        >>> r = CheckResult("m", [v], OWN, "fine", CheckSettings("bert"))
        >>> "encoder.0  1.00 -> 2.00" in format_result(r)
        True
    """
    s = result.settings
    lines = [
        f"initwatch check: {result.description}",
        f"measured: {s.passes} forward/backward pass{'es' if s.passes > 1 else ''} at init on "
        f"random inputs (batch {s.batch}), "
        f"then {s.steps} {s.optimizer} steps at lr {s.lr:g} on one fixed random batch",
        "",
    ]
    measured = [v for v in result.variants if v.measured]
    for v in result.variants:
        if not v.measured:
            lines.append(wrap(f"{v.name}: skipped: {v.skipped}", indent="", width=100))
    if len(measured) < len(result.variants):
        lines.append("")
    blocks = measured[0].blocks if measured else []
    if not blocks and measured:
        lines += ["No transformer blocks were recognised: nothing to profile.", ""]
    for stat, title in STATS if blocks else ():
        lines.append(f"{title}, at init -> after {s.steps} steps")
        rows = []
        for b in _rows(blocks):
            row = [b]
            for v in measured:
                a, z = v.init.get(stat, {}).get(b), v.after.get(stat, {}).get(b)
                row.append(f"{fmt(a)} -> {fmt(z)}")
            rows.append(row)
        lines += [table(["block"] + [v.name for v in measured], rows), ""]
    summary = [
        ["loss, first -> last step"]
        + [f"{fmt(v.losses[0])} -> {fmt(v.losses[-1])}" if v.losses else "-" for v in measured],
        ["lowest/top block gradient"]
        + [f"{fmt(v.grad_ratio('init'))} -> {fmt(v.grad_ratio())}" for v in measured],
        ["alerts"] + [str(len(v.new_alerts)) for v in measured],
    ]
    lines += [table([""] + [v.name for v in measured], summary), ""]
    alerted = [v for v in measured if v.new_alerts]
    if alerted:
        lines.append("What would alert:")
        for v in alerted:
            lines += alert_lines(v.name, v.new_alerts)
    else:
        lines.append("What would alert: nothing.")
    lines += ["", f"Recommendation: {result.recommendation}", wrap("why: " + result.reason, "  ")]
    return "\n".join(lines)


def plot(result: CheckResult, path: str) -> str:
    """Draw the depth profiles (one panel per statistic, one colour per init; dashed: at init,
    solid: after the burst) into ``path`` with matplotlib.

    Example::

        >>> import tempfile, os
        >>> v = Variant(OWN, ["e.0", "e.1"], {"act_rms": {"e.0": 1.0, "e.1": 2.0}},
        ...             {"act_rms": {"e.0": 1.0, "e.1": 3.0}}, [2.0, 1.0])
        >>> out = os.path.join(tempfile.mkdtemp(), "p.png")
        >>> plot(CheckResult("m", [v], OWN, "", CheckSettings("bert")), out) == out
        True
    """
    from initwatch.cli import UsageError

    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib: pip install 'initwatch[plot]'", "check"
        ) from None
    measured = [v for v in result.variants if v.measured]
    fig = Figure(figsize=(13, 4.2), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(STATS))
    colours = ["#444444", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for ax, (stat, title) in zip(axes, STATS, strict=True):
        for i, v in enumerate(measured):
            xs = list(range(len(v.blocks)))
            for when, style in ((v.init, "--"), (v.after, "-")):
                ys = [when.get(stat, {}).get(b, math.nan) for b in v.blocks]
                ys = [y if y > 0 else math.nan for y in ys]
                label = v.name if style == "-" else None
                ax.plot(xs, ys, style, color=colours[i % len(colours)], label=label, lw=1.6)
        ax.set_yscale("log")
        ax.set_title(title.split(" (")[0], fontsize=10)
        ax.set_xlabel("block (input -> output)")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].legend(fontsize=8, title="dashed: init, solid: after", title_fontsize=7)
    fig.suptitle(
        f"initwatch check: {result.description} - {result.settings.optimizer} lr "
        f"{result.settings.lr:g}, {result.settings.steps} steps",
        fontsize=10,
    )
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--plot: no such directory: {folder}", "check")
    fig.savefig(path)
    return path


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``initwatch check``: measure, print, optionally plot."""
    out = out or sys.stdout
    settings = settings_from_args(args)
    if args.plot:
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            from initwatch.cli import UsageError

            raise UsageError(f"--plot: no such directory: {folder}", "check")
    with threads(args.threads):
        result = run_check(settings)
    print(format_result(result), file=out)
    if args.plot:
        plot(result, args.plot)
        print(f"\nDepth profiles drawn to {args.plot}", file=out)
    print(f"({result.seconds:.0f} s)", file=out)
    return 0
