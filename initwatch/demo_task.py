"""The demo's model and task: a deep Post-LN transformer on a synthetic sequence task.

Shared by ``initwatch demo`` and the scheme benchmark (``bench/schemes.py``), so that both train
the same thing. Framework-free: plain PyTorch, no Lightning.

The model is a token + learned position embedding, an ``nn.TransformerEncoder`` of Post-LN
``nn.TransformerEncoderLayer`` blocks (``norm_first=False``, dropout 0, ``batch_first``) and a
linear head. The task maps a sequence of random tokens to its reverse (``"reverse"``) or to its
sorted version (``"sort"``): a bidirectional task whose loss can go to ~0, and which a model that
ignores its input cannot solve (its loss stays near ``ln(vocab)``).

Trained with Adam at a fixed learning rate and no warmup, such a stack fails at depth with
PyTorch's default init (lower blocks lose their gradient, the loss stays at chance) while
DeepNet, T-Fixup and ReZero train (docs/schemes.md).

Example::

    >>> import torch
    >>> from initwatch.demo_task import TaskConfig, build_model, make_batch
    >>> cfg = TaskConfig(depth=2, width=16, heads=2, ffn=32, batch=4)
    >>> model = build_model(cfg, seed=0)
    >>> x, y = make_batch(cfg, torch.Generator().manual_seed(0))
    >>> model(x).shape
    torch.Size([4, 12, 16])
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

TASKS = ("reverse", "sort")


@dataclass
class TaskConfig:
    """Size of the demo model and of its task.

    Args:
        depth: Post-LN encoder blocks.
        width: model width d.
        heads: attention heads.
        ffn: feed-forward width.
        vocab: number of token values (chance loss is ``ln(vocab)``).
        length: tokens per sequence.
        batch: sequences per batch.
        task: ``"reverse"`` or ``"sort"``.

    Example::

        >>> round(TaskConfig(vocab=16).chance_loss, 3)
        2.773
    """

    depth: int = 24
    width: int = 64
    heads: int = 4
    ffn: int = 128
    vocab: int = 16
    length: int = 12
    batch: int = 16
    task: str = "reverse"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: expected one of {', '.join(TASKS)}")
        for name in ("depth", "width", "heads", "ffn", "vocab", "length", "batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected a positive integer")
        if self.width % self.heads:
            raise ValueError(
                f"width={self.width} is not divisible by heads={self.heads}; e.g. width=64, heads=4"
            )

    @property
    def chance_loss(self) -> float:
        """Cross-entropy of a uniform guess, ``ln(vocab)``."""
        return math.log(self.vocab)


class PostLNModel(nn.Module):
    """Token + learned position embedding, a Post-LN ``nn.TransformerEncoder``, a linear head.

    Args:
        cfg: a :class:`TaskConfig`.

    Example::

        >>> import initwatch
        >>> model = PostLNModel(TaskConfig(depth=3, width=16, heads=2, ffn=32))
        >>> initwatch.inspect(model).layout
        'post'
    """

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.width)
        self.pos = nn.Embedding(cfg.length, cfg.width)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, cfg.ffn, dropout=0.0, norm_first=False, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=cfg.depth, enable_nested_tensor=False
        )
        self.head = nn.Linear(cfg.width, cfg.vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, length, vocab)`` for tokens ``(batch, length)``."""
        h = self.embed(tokens) + self.pos.weight[: tokens.shape[1]]
        return self.head(self.encoder(h))


def redraw_default(layer: nn.Module) -> None:
    """Re-draw one layer exactly as PyTorch initializes a freshly built one.

    ``nn.TransformerEncoder`` deep-copies its layer, so all its layers start identical
    (PyTorch issue #72253). This draws each anew: ``nn.Linear`` / ``nn.LayerNorm`` defaults,
    then ``nn.MultiheadAttention._reset_parameters`` (Xavier-uniform in_proj, zero biases).

    Example::

        >>> layer = nn.TransformerEncoderLayer(16, 2, 32)
        >>> redraw_default(layer)
    """
    for m in layer.modules():
        if isinstance(m, (nn.Linear, nn.LayerNorm)):
            m.reset_parameters()
    for m in layer.modules():
        if isinstance(m, nn.MultiheadAttention):
            m._reset_parameters()


def build_model(cfg: TaskConfig, seed: int = 0) -> PostLNModel:
    """The vanilla model: seeded, each encoder layer drawn independently with PyTorch's
    default init. Every variant of one seed starts from these same weights; apply a scheme
    afterwards (``initwatch.reinit`` or ``InitWatch(scheme=...)``).

    Example::

        >>> a = build_model(TaskConfig(depth=2, width=16, heads=2, ffn=32), seed=1)
        >>> b = build_model(TaskConfig(depth=2, width=16, heads=2, ffn=32), seed=1)
        >>> bool((a.head.weight == b.head.weight).all())
        True
    """
    torch.manual_seed(seed)
    model = PostLNModel(cfg)
    for layer in model.encoder.layers:
        redraw_default(layer)
    return model


def targets(cfg: TaskConfig, tokens: torch.Tensor) -> torch.Tensor:
    """The task's answer for ``tokens``.

    Example::

        >>> targets(TaskConfig(task="reverse"), torch.tensor([[1, 2, 3]])).tolist()
        [[3, 2, 1]]
    """
    if cfg.task == "sort":
        return tokens.sort(dim=1).values
    return tokens.flip(1)


def make_batch(cfg: TaskConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch ``(tokens, targets)`` of random sequences, drawn from ``gen``.

    Example::

        >>> x, y = make_batch(TaskConfig(batch=2, length=5), torch.Generator().manual_seed(0))
        >>> x.shape, bool((y == x.flip(1)).all())
        (torch.Size([2, 5]), True)
    """
    x = torch.randint(0, cfg.vocab, (cfg.batch, cfg.length), generator=gen)
    return x, targets(cfg, x)


class TaskStream(torch.utils.data.IterableDataset):
    """An endless stream of batches (already batched: use ``DataLoader(stream, batch_size=None)``).

    Every iteration starts again from ``seed``, so every variant sees the same batches.

    Example::

        >>> stream = TaskStream(TaskConfig(batch=2, length=4), seed=0)
        >>> x, y = next(iter(stream))
        >>> x.shape
        torch.Size([2, 4])
    """

    def __init__(self, cfg: TaskConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed

    def __iter__(self):  # noqa: D105
        gen = torch.Generator().manual_seed(10_000 + self.seed)
        while True:
            yield make_batch(self.cfg, gen)


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy.

    Example::

        >>> round(float(loss_fn(torch.zeros(1, 2, 4), torch.tensor([[0, 1]]))), 4)
        1.3863
    """
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def steps_to(losses: Sequence[float], target: float, window: int = 10) -> int | None:
    """The first step count (1-based) whose trailing ``window``-step mean loss is at or below
    ``target``, or None if never.

    Example::

        >>> steps_to([3.0, 2.0, 0.4, 0.3], 0.5, window=2)
        4
    """
    window = max(1, min(window, len(losses)))
    for i in range(window - 1, len(losses)):
        chunk = losses[i - window + 1 : i + 1]
        if all(math.isfinite(v) for v in chunk) and statistics.fmean(chunk) <= target:
            return i + 1
    return None


def final_loss(losses: Sequence[float], k: int | None = None) -> float:
    """Mean of the last ``k`` losses (default: a tenth of the run, between 1 and 50).

    Example::

        >>> final_loss([4.0, 2.0, 1.0, 3.0], k=2)
        2.0
    """
    if not losses:
        return math.nan
    k = k or max(1, min(50, len(losses) // 10))
    return statistics.fmean(losses[-k:])


__all__ = [
    "TASKS",
    "PostLNModel",
    "TaskConfig",
    "TaskStream",
    "build_model",
    "final_loss",
    "loss_fn",
    "make_batch",
    "redraw_default",
    "steps_to",
    "targets",
]
