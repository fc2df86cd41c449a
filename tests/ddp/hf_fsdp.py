"""The Hugging Face Trainer under FSDP2 (accelerate's fully_shard), 2 CPU processes under
torchrun, with InitWatchCallback; launched by tests/test_sharded.py. Rank r writes
``hf<r>.json`` into ``--out``."""

from __future__ import annotations

import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # tests/ddp/ and tests/ (the builders)

import torch  # noqa: E402
from _record import out_arg, write_json  # noqa: E402
from _sharded_case import WatchCollectives  # noqa: E402
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin  # noqa: E402
from builders import gpt2, hf_args, hf_dataset  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from initwatch.integrations.transformers import InitWatchCallback  # noqa: E402

warnings.filterwarnings("ignore")


class CPUFSDPTrainer(Trainer):
    """accelerate enables FSDP only on accelerator devices (on CPU ``fsdp=`` silently runs
    DDP): force its FSDP plugin and distributed type."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        state.distributed_type = DistributedType.FSDP
        self.is_fsdp_enabled = True


class Grab(TrainerCallback):
    """After InitWatchCallback: the collectives inside the Watch's calls, frames, weights."""

    def __init__(self, cb: InitWatchCallback) -> None:
        self.cb = cb

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from torch.distributed.tensor import DTensor

        self.sharded = all(isinstance(p, DTensor) for p in model.parameters())
        self.seen = WatchCollectives(self.cb.watch)


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """The ranks and a single process draw different dropout masks: none, to compare them."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def train(out: str, rank: int, fsdp: bool, batch: int = 2) -> dict:
    """``batch`` rows per rank; the single-process reference (tests/test_sharded.py) takes
    both ranks' rows (the Trainer's data order: step s gets the same 4 rows either way)."""
    torch.manual_seed(0)
    model = no_dropout(gpt2())
    data = hf_dataset(8)
    sharding = {"fsdp": "full_shard", "fsdp_config": {"version": 2}} if fsdp else {}
    args = hf_args(
        out,
        max_steps=2,
        per_device_train_batch_size=batch,
        logging_steps=1,
        ddp_backend="gloo" if "RANK" in os.environ else None,
        **sharding,
    )
    # a rank-dependent draw: under FSDP2 the callback broadcasts rank 0's before accelerate
    # shards (the DDP wrap broadcasts by itself)
    cb = InitWatchCallback("t-fixup", rules=False, scheme_options={"seed": 100 + rank})
    grab = Grab(cb)
    cls = CPUFSDPTrainer if fsdp else Trainer
    cls(model=model, args=args, train_dataset=data, callbacks=[cb, grab]).train()
    return {"frames": grab.seen.frames, "counts": grab.seen.counts, "sharded": grab.sharded}


def main() -> None:
    out = out_arg()
    rank = int(os.environ["RANK"])
    results = {"ddp": train(out, rank, False), "fsdp2": train(out, rank, True)}
    write_json(out, f"hf{rank}", results)


if __name__ == "__main__":
    main()
