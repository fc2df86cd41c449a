"""Lightning with InitWatch under ModelParallelStrategy (fully_shard in configure_model) and
FSDPStrategy (FSDP1), 2 CPU processes under torchrun; launched by tests/test_sharded.py.
Rank r writes ``lightning<r>.json`` into ``--out``."""

from __future__ import annotations

import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # tests/ddp/ and tests/ (the builders)

import lightning as L  # noqa: E402
import torch  # noqa: E402
from _record import out_arg, write_json  # noqa: E402
from _sharded_case import STEPS, WatchCollectives, batch, build, rank_rows  # noqa: E402
from builders import lightning_trainer  # noqa: E402
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy  # noqa: E402
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard  # noqa: E402

from initwatch.integrations.lightning import InitWatch  # noqa: E402

warnings.filterwarnings("ignore")
OUT = "."  # set by main(): where the Trainers write


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning refuses FSDPStrategy without a GPU (its check is `type(flag) is
    FSDPStrategy`) and passes FSDP device_id=None on CPU: wrap with device_id=cpu."""

    def _setup_model(self, model):
        return FullyShardedDataParallel(
            model,
            device_id=torch.device("cpu"),
            sharding_strategy=self.sharding_strategy,
            **self.kwargs,
        )


class Net(L.LightningModule):
    def __init__(self, shard: bool) -> None:
        super().__init__()
        self.net = build()
        self.shard = shard

    def configure_model(self) -> None:
        if self.shard:  # ModelParallelStrategy: the model shards itself
            mesh = self.device_mesh["data_parallel"]
            fully_shard(self.net[0], mesh=mesh)
            fully_shard(self.net, mesh=mesh)

    def training_step(self, x, batch_idx):
        return self.net(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


class Grab(L.Callback):
    """After InitWatch: counts collectives inside the Watch's calls and keeps each frame."""

    def __init__(self, cb: InitWatch) -> None:
        self.cb = cb

    def on_train_start(self, trainer, pl_module):
        self.seen = WatchCollectives(self.cb.watch, rename=lambda name: name.removeprefix("net."))


class GPT(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from initwatch import zoo

        torch.manual_seed(0)
        self.model = zoo.build("gpt2", layers=2, hidden=32)

    def configure_model(self) -> None:
        for block in self.model.transformer.h:
            fully_shard(block)
        fully_shard(self.model)

    def training_step(self, ids, batch_idx):
        return self.model(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Hash(L.Callback):
    def on_train_start(self, trainer, pl_module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(pl_module, options=StateDictOptions(full_state_dict=True))
        self.hash = [float(v.double().sum()) for _, v in sorted(full.items())]


def scheme_fit(rank: int) -> list[float]:
    """A scheme drawn with a rank-dependent seed: InitWatch broadcasts rank 0's draw."""
    cb, probe = InitWatch("t-fixup", scheme_options={"seed": 100 + rank}), Hash()
    trainer = lightning_trainer(
        OUT,  # InitWatch's own run directory: not the working directory
        [cb, probe],
        devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_steps=1,
    )
    data = torch.arange(32).reshape(4, 8) % 96
    trainer.fit(GPT(), torch.utils.data.DataLoader(data, batch_size=2))
    return probe.hash


def fit(strategy, shard: bool, rank: int) -> dict:
    data = [batch(s)[rank_rows(rank)] for s in range(STEPS)]
    cb = InitWatch(log_every_n_steps=1, rules=False)
    grab = Grab(cb)
    trainer = lightning_trainer(
        OUT,  # InitWatch's own run directory: not the working directory
        [cb, grab],
        devices=2,
        strategy=strategy,
        max_steps=STEPS,
        use_distributed_sampler=False,
    )
    trainer.fit(Net(shard), torch.utils.data.DataLoader(data, batch_size=None))
    return {"frames": grab.seen.frames, "collectives": grab.seen.counts}


def main() -> None:
    out = out_arg()
    global OUT
    OUT = out
    rank = int(os.environ["RANK"])
    results = {
        "model_parallel": fit(
            ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1), True, rank
        ),
        "fsdp": fit(CPUFSDPStrategy(), False, rank),
        "scheme_sums": scheme_fit(rank),
    }
    write_json(out, f"lightning{rank}", results)


if __name__ == "__main__":
    main()
