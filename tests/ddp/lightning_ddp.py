"""Lightning DDP on 2 CPU processes (gloo) with InitWatch; launched by tests/integrations/test_ddp.py.

Lightning starts rank 1 by re-running this script, so it must run as a standalone script, not
inside pytest. Each rank writes ``rank<N>.json`` into ``--out``.
"""

from __future__ import annotations

import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # tests/ddp/ and tests/ (the builders)

import torch  # noqa: E402
from _record import Recorder, out_arg, weights_hash  # noqa: E402
from builders import Tiny, lightning_trainer, loader  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from initwatch.integrations.lightning import InitWatch  # noqa: E402

warnings.filterwarnings("ignore")


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
    out = out_arg()
    rank = int(os.environ.get("LOCAL_RANK", 0))  # set by Lightning for the process it launches
    torch.manual_seed(10 + rank)  # rank-dependent model draw and re-init: DDP must equalize
    # dense_start=0, max_interval=None: the fixed cadence, so non-logging steps exist
    cb = InitWatch(
        "rezero",
        log_every_n_steps=2,
        scheme_options={"seed": 100 + rank},
        dense_start=0,
        max_interval=None,
    )
    trainer = lightning_trainer(
        out,
        [cb, Probe(cb, out)],
        devices=2,
        strategy="ddp",
        max_steps=5,
        logger=TensorBoardLogger(out, name="tb"),
    )
    trainer.fit(Tiny(), loader(32, batch=4))


if __name__ == "__main__":
    main()
