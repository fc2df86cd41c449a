"""The model, data and loop shared by tests/ddp/sharded.py (2 ranks) and its single-process
reference in tests/test_sharded.py: the same micro-batches, split between ranks or not."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import initwatch

STEPS = 3  # the last one gets an Inf input on rank 1: non-finite gradients
BATCH = 8  # global batch; each of the 2 ranks trains on half of it
STATS = ("grad_norm", "weight_norm", "grad_weight_ratio", "update_ratio", "grad_nonfinite")
UPDATE_SAMPLE = 32  # smaller than the 240-element first weight: the sampled estimate


def build() -> nn.Sequential:
    """Uneven shard sizes (5 rows over 2 ranks), 1-element tensors (rank 1 holds none)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 40), nn.Tanh(), nn.Linear(40, 5), nn.LayerNorm(5), nn.Linear(5, 1)
    )


def batch(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(BATCH, 6, generator=g)
    if step == STEPS - 1:
        x[-1, 0] = math.inf  # in rank 1's half
    return x


class Collectives(TorchDispatchMode):
    """Counts the collectives issued inside the block (c10d and functional collectives)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if func.namespace in ("c10d", "_c10d_functional") and not any(
            s in name for s in ("wait_tensor", "_wrap_tensor_autograd")
        ):
            self.count += 1
        return func(*args, **(kwargs or {}))


def drawn_gpt2(scheme: str, seed: int) -> nn.Module:
    """A 2-layer, 32-wide GPT-2 built under global seed 0, ``scheme`` drawn with ``seed``: the
    ranks' scheme draws and the single-process draw they are compared with."""
    from initwatch import zoo

    torch.manual_seed(0)
    model = zoo.build("gpt2", layers=2, hidden=32)
    initwatch.reinit(model, scheme, seed=seed)
    return model


def rank_rows(rank: int) -> slice:
    """The rows of each global :func:`batch` that ``rank`` (of 2) trains on."""
    half = BATCH // 2
    return slice(rank * half, (rank + 1) * half)


def frame_stats(frame, rename: Callable[[str], str] = str) -> dict:
    """The frame's :data:`STATS` and ``act_rms``: ``{stat: {rename(layer): value}}``."""
    return {
        s: {rename(name): v for name, v in frame.values.get(s, {}).items()}
        for s in (*STATS, "act_rms")
    }


class WatchCollectives:
    """Wraps ``watch.before_optimizer_step`` and ``watch.end_step``: per step, the collectives
    issued inside them (``counts``, every ``before_optimizer_step`` call of the step: DeepSpeed
    makes two, the engine's and the hook's), the frame's :func:`frame_stats` (``frames``) and
    its global gradient norm (``norms``)."""

    def __init__(self, watch, rename: Callable[[str], str] = str) -> None:
        self.counts: list[int] = []
        self.frames: list[dict] = []
        self.norms: list[float | None] = []
        self._n = 0
        before, end = watch.before_optimizer_step, watch.end_step

        def counted_before(*a, **k):
            with Collectives() as c:
                before(*a, **k)
            self._n += c.count

        def counted_end(*a, **k):
            with Collectives() as c:
                out = end(*a, **k)
            self.counts.append(self._n + c.count)
            self._n = 0
            frame = watch.last_frame
            self.frames.append(frame_stats(frame, rename))
            self.norms.append(frame.globals.get("grad_norm_global"))
            return out

        watch.before_optimizer_step, watch.end_step = counted_before, counted_end


def optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=0.01)


def train(
    model: nn.Module, watch_model: nn.Module, rows: slice, watch=None, clip: float = 0.0
) -> dict:
    """Runs STEPS logging steps; returns the frames' parameter and activation statistics and
    the collectives counted inside the Watch's calls of each step. ``model`` may be a
    DeepSpeed engine (built with :func:`optimizer`): it steps (and clips) itself; ``clip``:
    the gradients are clipped to this global norm after the Watch read them."""
    engine = type(model).__name__ == "DeepSpeedEngine"
    opt = model if engine else optimizer(model)
    if watch is None:
        watch = initwatch.Watch(watch_model, every=1, rules=False, update_sample=UPDATE_SAMPLE)
    seen = WatchCollectives(watch)
    for step in range(STEPS):
        watch.begin_step(step)
        loss = model(batch(step)[rows]).pow(2).mean()
        model.backward(loss) if engine else loss.backward()
        watch.before_optimizer_step(opt)
        if clip and not engine:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad()
        watch.end_step(loss=loss)
    watch.close()
    return {"frames": seen.frames, "collectives": seen.counts}
