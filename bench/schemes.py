"""Scheme replication: a deep Post-LN transformer trained with Adam at a fixed learning rate and
no warmup, with PyTorch's default init ("vanilla") and with each scheme of ``initwatch.reinit``.

The model is ``nn.TransformerEncoder`` of Post-LN ``nn.TransformerEncoderLayer`` blocks
(``norm_first=False``, dropout 0) between a token + learned position embedding and a linear
head. The task is sorting: the input is a sequence of random tokens, the target at position i
is the i-th smallest input token (a bidirectional encoder task whose loss can go to ~0; a model
that ignores the input can only learn each position's marginal, printed as the "position-only"
loss).

Fairness: every variant starts from the same weights (same seed) and sees the same batches.
``nn.TransformerEncoder`` deep-copies its layer, so all its layers start identical (PyTorch
issue #72253); by default each layer is re-drawn with PyTorch's own default init before
anything else (``--baseline copied`` keeps the identical copies). The schemes are then applied
to that model with ``initwatch.reinit(model, scheme, seed=seed)``.

Two more suites (``--arch``): ``pre``, the same task on a **Pre-LN** ``nn.TransformerEncoder``
(``norm_first=True`` and a final LayerNorm) trained from scratch, for the scaled init of GPT-2 /
Megatron; ``resnet``, a small deep residual network (``zoo.resnet``, torchvision-shaped
``BasicBlock`` s on 8x8 images, widths 8 and 16, batch 32) classifying a synthetic task, with BatchNorm ("bn"), with every
BatchNorm removed ("no-norm") and with SkipInit and Fixup (which remove it themselves).

Usage::

    python bench/schemes.py                      # depth 24, 300 steps, lr 1e-3, seed 0
    python bench/schemes.py --seeds 3            # seeds 0, 1, 2 and a table of medians
    python bench/schemes.py --fast               # tiny smoke run (a few seconds)
    python bench/schemes.py --arch pre           # Pre-LN from scratch: vanilla vs scaled ...
    python bench/schemes.py --arch resnet        # 16-block ResNet: bn, no-norm, skipinit, fixup

Output: a Markdown table per seed (and one of medians over seeds) with, for each variant, the
final loss (mean of the last k steps), the first step at which the trailing mean loss reached
the target (or ``never``), the largest total gradient norm, the ratio of the lowest block's
gradient norm to the top block's over the last k steps, a failure note and the wall time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

import initwatch
from initwatch.demo_task import (
    PostLNModel,
    TaskConfig,
    build_model,
    make_batch,
    redraw_default,
    steps_to,
    targets,
)
from initwatch.numbers import fmt

ARCHS = {
    "post": ("vanilla", "deepnet", "t-fixup", "rezero", "xavier", "kaiming", "ds-init", "admin"),
    "pre": ("vanilla", "scaled", "t-fixup", "rezero"),
    "resnet": ("bn", "no-norm", "skipinit", "fixup"),
}
VARIANTS = ARCHS["post"]


@dataclass
class Config(TaskConfig):
    """The model and task sizes (the shared demo task's, with this benchmark's defaults) and the
    training settings of a replication."""

    ffn: int = 256
    batch: int = 64
    task: str = "sort"
    steps: int = 300
    lr: float = 1e-3
    warmup: int = 0
    target: float = 0.5
    seed: int = 0
    seeds: int = 1
    baseline: str = "redrawn"
    embedding: str = "untouched"
    threads: int = 2
    schemes: tuple[str, ...] = VARIANTS
    arch: str = "post"


@dataclass
class Result:
    scheme: str
    seed: int
    final_loss: float
    steps_to_target: int | None
    max_grad_norm: float
    grad_ratio: float
    note: str
    wall_s: float
    losses: list[float] = field(default_factory=list, repr=False)


class PreLNModel(PostLNModel):
    """The same model with Pre-LN blocks (``norm_first=True``) and a final LayerNorm."""

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, cfg.ffn, dropout=0.0, norm_first=True, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, cfg.depth, norm=nn.LayerNorm(cfg.width), enable_nested_tensor=False
        )


RESNET_WIDTH = 8  # channels of the first stage (the second has twice as many)


def build_resnet(cfg: Config, scheme: str, seed: int) -> nn.Module:
    """A torchvision-shaped ResNet of ``cfg.depth`` BasicBlocks in two stages (width 8, 16)."""
    from initwatch import zoo
    from initwatch.schemes.structure import remove_norm

    torch.manual_seed(seed)
    half = max(1, cfg.depth // 2)
    model = zoo.resnet((half, max(1, cfg.depth - half)), width=RESNET_WIDTH, classes=cfg.vocab)
    if scheme == "no-norm":
        for name, m in list(model.named_modules()):
            if isinstance(m, nn.BatchNorm2d):
                remove_norm(model, name)
    elif scheme != "bn":
        initwatch.reinit(model, scheme, seed=seed)
    return model


def image_batch(cfg: Config, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 3x8x8 images labelled by a fixed random linear map of their channel means and
    mean squares (the teacher is the same for every seed and variant)."""
    x = torch.randn(cfg.batch, 3, 8, 8, generator=gen)
    x = x + torch.randn(cfg.batch, 3, 1, 1, generator=gen)  # a per-image offset to detect
    teacher = torch.randn(cfg.vocab, 6, generator=torch.Generator().manual_seed(12345))
    feats = torch.cat([x.mean((2, 3)), x.pow(2).mean((2, 3)) - 2.0], dim=1)
    return x, (feats @ teacher.T).argmax(1)


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The residual blocks, lowest first."""
    if hasattr(model, "encoder"):
        return list(model.encoder.layers)
    return [b for name in ("layer1", "layer2") for b in getattr(model, name)]


def build(cfg: Config, scheme: str, seed: int) -> nn.Module:
    """The model for one variant: same weights for every variant of a seed, then the scheme."""
    if cfg.arch == "resnet":
        return build_resnet(cfg, scheme, seed)
    if cfg.arch == "pre":
        torch.manual_seed(seed)
        model = PreLNModel(cfg)
        for layer in model.encoder.layers:
            redraw_default(layer)
        if scheme != "vanilla":
            initwatch.reinit(model, scheme, seed=seed)
        return model
    if cfg.baseline == "redrawn":
        model = build_model(cfg, seed)
    else:  # keep nn.TransformerEncoder's identical copies
        torch.manual_seed(seed)
        model = PostLNModel(cfg)
    if scheme == "t-fixup" and cfg.embedding != "untouched":
        # initwatch recognises the nn.TransformerEncoder but not the embedding around it:
        # describe the model so T-Fixup also re-draws the token embedding.
        anatomy = initwatch.inspect(
            model,
            blocks="encoder.layers",
            roles={"qkv": "self_attn", "o": "self_attn", "ffn_in": "linear1", "ffn_out": "linear2"},
            norms={"attn": "norm1", "ffn": "norm2"},
            layout="post",
            token_embedding="embed",
        )
        initwatch.reinit(model, scheme, seed=seed, anatomy=anatomy, embedding=cfg.embedding)
    elif scheme == "t-fixup":
        # reinit finds the embedding next to the nn.TransformerEncoder by itself; "untouched"
        # keeps nn.Embedding's N(0, 1) table, the variant of the recorded main table.
        table = model.embed.weight.detach().clone()
        initwatch.reinit(model, scheme, seed=seed)
        with torch.no_grad():
            model.embed.weight.copy_(table)
    elif scheme != "vanilla":
        initwatch.reinit(model, scheme, seed=seed)
    return model


def position_only_loss(cfg: Config, samples: int = 20000) -> float:
    """Cross-entropy of the best input-independent predictor (each position's marginal; for
    the image task, the class marginal)."""
    gen = torch.Generator().manual_seed(12345)
    if cfg.arch == "resnet":
        y = torch.cat([image_batch(cfg, gen)[1] for _ in range(max(1, samples // cfg.batch))])
        p = torch.bincount(y, minlength=cfg.vocab).double() / y.numel()
        return float(-(p[p > 0] * p[p > 0].log()).sum())
    x = torch.randint(0, cfg.vocab, (samples, cfg.length), generator=gen)
    y = targets(cfg, x)
    total = 0.0
    for i in range(cfg.length):
        p = torch.bincount(y[:, i], minlength=cfg.vocab).double() / samples
        total += float(-(p[p > 0] * p[p > 0].log()).sum())
    return total / cfg.length


def _grad_norm(params: list[torch.Tensor]) -> float:
    grads = [p.grad.detach().double().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def train(cfg: Config, scheme: str, seed: int) -> Result:
    model = build(cfg, scheme, seed)
    model.train()
    params = list(model.parameters())
    low = list(blocks_of(model)[0].parameters())
    top = list(blocks_of(model)[-1].parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)  # fixed lr, no clipping
    # Linear warmup over cfg.warmup steps (0, the default: none), for control runs only.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) if cfg.warmup else 1.0
    )
    gen = torch.Generator().manual_seed(10_000 + seed)
    k = tail(cfg)
    losses: list[float] = []
    ratios: list[float] = []
    max_gn, note = 0.0, ""
    start = time.perf_counter()
    for step in range(cfg.steps):
        x, y = image_batch(cfg, gen) if cfg.arch == "resnet" else make_batch(cfg, gen)
        loss = nn.functional.cross_entropy(model(x).reshape(-1, cfg.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = _grad_norm(params)
        if not (math.isfinite(loss.item()) and math.isfinite(gn)):
            note = f"diverged: non-finite loss/grad at step {step}"
            losses.append(float("nan"))
            break
        losses.append(loss.item())
        max_gn = max(max_gn, gn)
        if step >= cfg.steps - k:
            ratios.append(_grad_norm(low) / max(_grad_norm(top), 1e-30))
        opt.step()
        sched.step()
    wall = time.perf_counter() - start
    final = statistics.fmean(losses[-k:]) if not note else float("nan")
    reached = steps_to(losses, cfg.target, window=min(10, k))
    if not note and reached is None:
        chance = math.log(cfg.vocab)
        note = "stuck near chance" if final > chance - 0.1 else "did not reach target"
    ratio = statistics.median(ratios) if ratios else float("nan")
    return Result(scheme, seed, final, reached, max_gn, ratio, note, wall, losses)


def tail(cfg: Config) -> int:
    """k, the number of last steps averaged into the final loss."""
    return max(1, min(50, cfg.steps // 10))


def _fmt_steps(v: float | None) -> str:
    return "never" if v is None or not math.isfinite(v) else f"{v:.0f}"


def table(rows: list[Result], cfg: Config) -> str:
    head = (
        f"| scheme | final loss (last {tail(cfg)}) | steps to {cfg.target:g} | max grad norm "
        "| grad ratio block0/top | note | wall s |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(
            f"| {r.scheme} | {r.final_loss:.4f} | {_fmt_steps(r.steps_to_target)} | "
            f"{fmt(r.max_grad_norm, 3)} | {fmt(r.grad_ratio, 3)} | {r.note} | {r.wall_s:.1f} |"
        )
    return "\n".join(lines)


def medians(results: list[Result], cfg: Config) -> list[Result]:
    """One row per scheme: medians over seeds ("never" counts as infinitely many steps)."""
    out = []
    for scheme in cfg.schemes:
        rs = [r for r in results if r.scheme == scheme]
        reached = [r.steps_to_target or math.inf for r in rs]
        med_steps = statistics.median(reached)
        failed = sum(r.steps_to_target is None for r in rs)
        note = f"{failed}/{len(rs)} seeds never reached target" if failed else ""
        out.append(
            Result(
                scheme,
                -1,
                statistics.median(r.final_loss for r in rs),
                None if math.isinf(med_steps) else int(med_steps),
                statistics.median(r.max_grad_norm for r in rs),
                statistics.median(r.grad_ratio for r in rs),
                note,
                statistics.median(r.wall_s for r in rs),
            )
        )
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}"
    )


def parse(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=24, help="encoder layers (default 24)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps per variant")
    p.add_argument("--lr", type=float, default=1e-3, help="fixed Adam learning rate")
    p.add_argument(
        "--warmup", type=int, default=0, help="linear warmup steps (default 0: no warmup)"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (seed, seed+1, ...)")
    p.add_argument("--target", type=float, default=0.5, help="target loss (nats)")
    p.add_argument("--width", type=int, default=64, help="model width d")
    p.add_argument("--batch", type=int, default=None, help="default 64 (resnet: 32)")
    p.add_argument("--task", choices=("sort", "reverse"), default="sort")
    p.add_argument(
        "--baseline",
        choices=("redrawn", "copied"),
        default="redrawn",
        help="vanilla init: each layer re-drawn with PyTorch defaults (default) or the "
        "identical deep copies nn.TransformerEncoder makes",
    )
    p.add_argument(
        "--tfixup-embedding",
        choices=("untouched", "literal", "effective"),
        default="untouched",
        help="T-Fixup's token embedding: kept at nn.Embedding's N(0, 1) (default, the recorded "
        "main table), or re-drawn with embedding='literal' (N(0, d^-1/2) x (9N)^-1/4) or "
        "'effective' (std (9N)^-1/4, what reinit does on this model by itself)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument(
        "--arch",
        choices=tuple(ARCHS),
        default="post",
        help="post: the Post-LN replication (default); pre: Pre-LN from scratch; resnet: a "
        "deep residual convnet (--depth blocks)",
    )
    p.add_argument(
        "--schemes",
        default=None,
        help="comma-separated subset of the suite's variants: "
        + "; ".join(f"{k}: {','.join(v)}" for k, v in ARCHS.items()),
    )
    p.add_argument("--json", help="also write the results (with loss curves) to this file")
    p.add_argument("--fast", action="store_true", help="tiny run for smoke tests")
    a = p.parse_args(argv)
    valid = ARCHS[a.arch]
    schemes = tuple(s.strip() for s in (a.schemes or ",".join(valid)).split(",") if s.strip())
    bad = [s for s in schemes if s not in valid]
    if bad or not schemes:
        p.error(f"--schemes: unknown {bad} for --arch {a.arch}; choose from {','.join(valid)}")
    cfg = Config(
        depth=a.depth,
        width=a.width,
        ffn=4 * a.width,
        batch=a.batch or (32 if a.arch == "resnet" else 64),
        steps=a.steps,
        lr=a.lr,
        warmup=a.warmup,
        target=a.target,
        seed=a.seed,
        seeds=a.seeds,
        task=a.task,
        baseline=a.baseline,
        embedding=a.tfixup_embedding,
        threads=a.threads,
        schemes=schemes,
        arch=a.arch,
    )
    if a.arch == "resnet":
        cfg.vocab = 4  # classes
    if a.fast:
        cfg.depth, cfg.width, cfg.ffn, cfg.heads = 2, 16, 32, 2
        cfg.batch, cfg.length, cfg.steps = 8, 6, 6
        cfg.vocab = 4 if a.arch == "resnet" else 8
    cfg.json = a.json  # type: ignore[attr-defined]
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    torch.set_num_threads(cfg.threads)
    print(f"# machine: {machine()}")
    if cfg.arch == "resnet":
        print(
            f"# model: torchvision-shaped ResNet, {cfg.depth} BasicBlocks (widths "
            f"{RESNET_WIDTH}, {2 * RESNET_WIDTH}), "
            f"8x8 inputs, {cfg.vocab} classes"
        )
        what = f"teacher classes of 3x8x8 images, batch {cfg.batch}"
    else:
        layout = "Post-LN" if cfg.arch == "post" else "Pre-LN (final LayerNorm)"
        print(
            f"# model: {layout} nn.TransformerEncoder, {cfg.depth} layers, d={cfg.width}, "
            f"{cfg.heads} heads, ffn {cfg.ffn}, dropout 0, vanilla baseline: {cfg.baseline}, "
            f"T-Fixup embedding: {cfg.embedding}"
        )
        what = f"{cfg.task} {cfg.length} tokens of vocab {cfg.vocab}, batch {cfg.batch}"
    print(
        f"# task: {what}; "
        f"Adam lr {cfg.lr:g}, "
        + (f"linear warmup {cfg.warmup} steps" if cfg.warmup else "fixed (no warmup)")
        + f", no clipping, {cfg.steps} steps"
    )
    print(
        f"# chance loss {math.log(cfg.vocab):.4f}, position-only loss "
        f"{position_only_loss(cfg):.4f}, target {cfg.target:g}"
    )
    results: list[Result] = []
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        rows = []
        for scheme in cfg.schemes:
            r = train(cfg, scheme, seed)
            print(
                f"# seed {seed} {scheme}: final {r.final_loss:.4f}, "
                f"steps to target {_fmt_steps(r.steps_to_target)}, {r.wall_s:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            rows.append(r)
        results += rows
        print(f"\n## seed {seed}\n")
        print(table(rows, cfg), flush=True)
    if cfg.seeds > 1:
        print(f"\n## median over {cfg.seeds} seeds\n")
        print(table(medians(results, cfg), cfg))
    if cfg.json:  # type: ignore[attr-defined]
        with open(cfg.json, "w") as fh:  # type: ignore[attr-defined]
            json.dump(
                {
                    "config": asdict(cfg),
                    "machine": machine(),
                    "results": [asdict(r) for r in results],
                },
                fh,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
