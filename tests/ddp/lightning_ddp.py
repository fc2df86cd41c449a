"""Lightning DDP on 2 CPU processes (gloo) with InitWatch; launched by tests/integrations/test_ddp.py.

Lightning starts rank 1 by re-running this script, so it must run as a standalone script, not
inside pytest. Each rank writes ``rank<N>.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _record import Recorder, weights_hash  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from torch import nn  # noqa: E402

from initwatch import zoo  # noqa: E402
from initwatch.integrations.lightning import InitWatch  # noqa: E402

warnings.filterwarnings("ignore")
HIDDEN = 16


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = zoo.build("torch_encoder", layers=2, hidden=HIDDEN, heads=2)
        self.head = nn.Linear(HIDDEN, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.head(self.net(x)).squeeze(-1).mean(-1), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class Probe(Callback):
    """After InitWatch in the list: sees the model after the scheme, after the DDP wrap."""

    def __init__(self, watch_cb: InitWatch, out: str) -> None:
        self.cb, self.out, self.rec = watch_cb, out, Recorder()

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            self.rec.hashes["after_scheme"] = weights_hash(pl_module)

    def on_fit_start(self, trainer, pl_module):
        self.rec.hashes["fit_start"] = weights_hash(pl_module)
        self.rec.attach(self.cb.watch, pl_module.net.layers[-1])

    def on_fit_end(self, trainer, pl_module):
        self.rec.hashes["end"] = weights_hash(pl_module)
        self.rec.dump(
            self.out,
            trainer.global_rank,
            world_size=trainer.world_size,
            log_dir=trainer.logger.log_dir,
            alerts=len(self.cb.alerts),
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    rank = int(os.environ.get("LOCAL_RANK", 0))  # set by Lightning for the process it launches
    torch.manual_seed(10 + rank)  # rank-dependent model draw and re-init: DDP must equalize
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(32, 6, HIDDEN, generator=g), torch.randn(32, generator=g)
    )
    # dense_start=0, max_interval=None: the fixed cadence, so non-logging steps exist
    cb = InitWatch(
        "rezero",
        log_every_n_steps=2,
        scheme_options={"seed": 100 + rank},
        dense_start=0,
        max_interval=None,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=5,
        logger=TensorBoardLogger(out, name="tb"),
        callbacks=[cb, Probe(cb, out)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))


if __name__ == "__main__":
    main()
