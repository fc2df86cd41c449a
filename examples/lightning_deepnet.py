"""Train a deep Post-LN transformer from scratch with DeepNet, watched by InitWatch (Lightning).

A Post-LN stack this deep usually stalls or diverges with Adam and no warmup; DeepNet's
``x * alpha + f(x)`` residuals and ``beta``-scaled init keep it trainable. InitWatch applies the
scheme at ``setup("fit")`` and writes per-layer statistics next to Lightning's own scalars:

    python examples/lightning_deepnet.py               # 24 layers, 100 steps (minutes on a CPU)
    python examples/lightning_deepnet.py --fast        # 4 layers, 6 steps (what the tests run)
    tensorboard --logdir lightning_logs                # the "initwatch" dashboard; alerts as text
"""

from __future__ import annotations

import argparse
import math

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from initwatch.integrations.lightning import InitWatch


class CountingTask(torch.utils.data.Dataset):
    """Token sequences that count up modulo ``vocab`` from a random start: learnable quickly."""

    def __init__(self, n: int, seq: int, vocab: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, vocab, (n, 1), generator=g)
        self.tokens = (start + torch.arange(seq + 1)) % vocab

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[i, :-1], self.tokens[i, 1:]


class PostLNLanguageModel(L.LightningModule):
    """A causal Post-LN encoder stack (``norm_first=False``) with a token head."""

    def __init__(
        self, layers: int, d_model: int = 64, heads: int = 4, vocab: int = 32, lr: float = 1e-3
    ):
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(64, d_model) * 0.02)
        block = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(block, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(seq, device=tokens.device)
        x = self.embed(tokens) * math.sqrt(self.hparams.d_model) + self.pos[:seq]
        return self.head(self.encoder(x, mask=mask, is_causal=True))

    def training_step(self, batch, batch_idx):
        tokens, targets = batch
        logits = self(tokens)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)  # no warmup, on purpose


def main(argv: list[str] | None = None) -> InitWatch:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", "--layers", dest="depth", type=int, default=24)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--root", default=".", help="where lightning_logs/ goes")
    parser.add_argument("--fast", action="store_true", help="4 layers, 6 steps")
    args = parser.parse_args(argv)
    if args.fast:
        args.depth, args.steps, args.log_every = 4, 6, 2

    L.seed_everything(0, verbose=False)
    data = torch.utils.data.DataLoader(CountingTask(2048, 16, 32), batch_size=16, shuffle=True)
    watch = InitWatch(scheme="deepnet", log_every_n_steps=args.log_every)
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        logger=TensorBoardLogger(args.root, name="lightning_logs"),
        callbacks=[watch],
        enable_checkpointing=False,
        enable_progress_bar=not args.fast,
        enable_model_summary=False,
        log_every_n_steps=args.log_every,
    )
    trainer.fit(PostLNLanguageModel(args.depth), data)

    print(watch.report)  # what DeepNet changed: every parameter, with its gain and std
    print(f"final loss {trainer.callback_metrics['train_loss']:.3f}; alerts: {len(watch.alerts)}")
    for alert in watch.alerts:
        print(alert)
    print(f"tensorboard --logdir {trainer.logger.log_dir}")
    return watch


if __name__ == "__main__":
    main()
