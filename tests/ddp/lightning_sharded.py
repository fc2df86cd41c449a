"""Lightning with InitWatch under ModelParallelStrategy (fully_shard in configure_model) and
FSDPStrategy (FSDP1), 2 CPU processes under torchrun; launched by tests/test_sharded.py.
Rank r writes ``lightning<r>.json`` into ``--out``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from _sharded_case import BATCH, STATS, STEPS, Collectives, batch, build  # noqa: E402
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
        self.cb, self.frames, self.counts = cb, [], []

    def on_train_start(self, trainer, pl_module):
        watch = self.cb.watch
        before, end = watch.before_optimizer_step, watch.end_step

        def counted_before(*a, **k):
            with Collectives() as c:
                before(*a, **k)
            self._n = c.count

        def counted_end(*a, **k):
            with Collectives() as c:
                out = end(*a, **k)
            self.counts.append(self._n + c.count)
            f = watch.last_frame
            self.frames.append(
                {
                    s: {k.removeprefix("net."): v for k, v in f.values.get(s, {}).items()}
                    for s in (*STATS, "act_rms")
                }
            )
            return out

        watch.before_optimizer_step, watch.end_step = counted_before, counted_end


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
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_steps=1,
        callbacks=[cb, probe],
        logger=False,
        default_root_dir=OUT,  # InitWatch's own run directory: not the working directory
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = torch.arange(32).reshape(4, 8) % 96
    trainer.fit(GPT(), torch.utils.data.DataLoader(data, batch_size=2))
    return probe.hash


def fit(strategy, shard: bool, rank: int) -> dict:
    half = BATCH // 2
    data = [batch(s)[rank * half : (rank + 1) * half] for s in range(STEPS)]
    cb = InitWatch(log_every_n_steps=1, rules=False)
    grab = Grab(cb)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_steps=STEPS,
        callbacks=[cb, grab],
        logger=False,
        default_root_dir=OUT,  # InitWatch's own run directory: not the working directory
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Net(shard), torch.utils.data.DataLoader(data, batch_size=None))
    return {"frames": grab.frames, "collectives": grab.counts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
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
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"lightning{rank}.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
