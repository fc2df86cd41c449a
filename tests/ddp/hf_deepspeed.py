"""The Hugging Face Trainer under DeepSpeed ZeRO-2 and ZeRO-3 and under DDP, 2 CPU processes
under torchrun, with InitWatchCallback; launched by tests/test_deepspeed.py. Rank r writes
``hf<r>.json`` into ``--out``.

No ``"optimizer"`` in the DeepSpeed config: the Trainer's torch AdamW goes to the engine (a
DeepSpeed optimizer would JIT-build fused_adam)."""

from __future__ import annotations

import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # tests/ddp/ and tests/ (the builders)

import torch  # noqa: E402
from _record import out_arg, write_json  # noqa: E402
from _sharded_case import WatchCollectives  # noqa: E402
from builders import gpt2, hf_args, hf_dataset  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from initwatch.integrations.transformers import InitWatchCallback  # noqa: E402

warnings.filterwarnings("ignore")


class Grab(TrainerCallback):
    """After InitWatchCallback: the collectives inside the Watch's calls, frames, weights."""

    def __init__(self, cb: InitWatchCallback) -> None:
        self.cb = cb

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.zero = [type(p).__name__ for p in model.parameters()][:1]
        self.zero3 = any(hasattr(p, "ds_id") for p in model.parameters())
        self.seen = WatchCollectives(self.cb.watch)


def train(out: str, rank: int, stage: int | None) -> dict:
    torch.manual_seed(0)
    model = gpt2()
    data = hf_dataset(8)
    ds = {}
    if stage is not None:
        ds["deepspeed"] = {
            "zero_optimization": {"stage": stage},
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
        }
    args = hf_args(
        out,
        max_steps=2,
        logging_steps=1,
        max_grad_norm=0.5,  # clipped by both: the frames are the pre-clip gradients
        ddp_backend="gloo",
        **ds,
    )
    # a rank-dependent draw: deepspeed.initialize and the DDP wrap broadcast rank 0's
    cb = InitWatchCallback("t-fixup", rules=False, scheme_options={"seed": 100 + rank})
    grab = Grab(cb)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[cb, grab]).train()
    seen = grab.seen
    return {"frames": seen.frames, "counts": seen.counts, "zero3": grab.zero3, "norms": seen.norms}


def main() -> None:
    out = out_arg()
    rank = int(os.environ["RANK"])
    results = {"ddp": train(out, rank, None)}
    for stage in (2, 3):
        results[f"zero{stage}"] = train(out, rank, stage)
    write_json(out, f"hf{rank}", results)


if __name__ == "__main__":
    main()
