"""The Hugging Face Trainer under DeepSpeed ZeRO-2 and ZeRO-3 and under DDP, 2 CPU processes
under torchrun, with InitWatchCallback; launched by tests/test_deepspeed.py. Rank r writes
``hf<r>.json`` into ``--out``.

No ``"optimizer"`` in the DeepSpeed config: the Trainer's torch AdamW goes to the engine (a
DeepSpeed optimizer would JIT-build fused_adam)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _sharded_case import STATS, Collectives  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from initwatch import zoo  # noqa: E402
from initwatch.integrations.transformers import InitWatchCallback  # noqa: E402

warnings.filterwarnings("ignore")


class Grab(TrainerCallback):
    """After InitWatchCallback: the collectives inside the Watch's calls, frames, weights."""

    def __init__(self, cb: InitWatchCallback) -> None:
        self.cb, self.frames, self.counts, self.norms = cb, [], [], []
        self._n = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.zero = [type(p).__name__ for p in model.parameters()][:1]
        self.zero3 = any(hasattr(p, "ds_id") for p in model.parameters())
        watch = self.cb.watch
        before, end = watch.before_optimizer_step, watch.end_step

        def counted_before(*a, **k):  # twice per step under DeepSpeed: the engine's, the hook's
            with Collectives() as c:
                before(*a, **k)
            self._n += c.count

        def counted_end(*a, **k):
            with Collectives() as c:
                out = end(*a, **k)
            self.counts.append(self._n + c.count)
            self._n = 0
            f = watch.last_frame
            self.frames.append({s: dict(f.values.get(s, {})) for s in (*STATS, "act_rms")})
            self.norms.append(f.globals.get("grad_norm_global"))
            return out

        watch.before_optimizer_step, watch.end_step = counted_before, counted_end


def train(out: str, rank: int, stage: int | None) -> dict:
    torch.manual_seed(0)
    model = zoo.build("gpt2", layers=2, hidden=32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 96, (8, 8), generator=g)
    data = [{"input_ids": row, "labels": row} for row in ids]
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
    args = TrainingArguments(
        output_dir=out,
        max_steps=2,
        per_device_train_batch_size=2,
        logging_steps=1,
        max_grad_norm=0.5,  # clipped by both: the frames are the pre-clip gradients
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        ddp_backend="gloo",
        disable_tqdm=True,
        seed=0,
        **ds,
    )
    # a rank-dependent draw: deepspeed.initialize and the DDP wrap broadcast rank 0's
    cb = InitWatchCallback("t-fixup", rules=False, scheme_options={"seed": 100 + rank})
    grab = Grab(cb)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[cb, grab]).train()
    return {"frames": grab.frames, "counts": grab.counts, "zero3": grab.zero3, "norms": grab.norms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    rank = int(os.environ["RANK"])
    results = {"ddp": train(out, rank, None)}
    for stage in (2, 3):
        results[f"zero{stage}"] = train(out, rank, stage)
    with open(os.path.join(out, f"hf{rank}.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
