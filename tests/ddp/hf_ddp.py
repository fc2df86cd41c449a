"""The Hugging Face Trainer under DDP (torchrun, 2 CPU processes, gloo) with InitWatchCallback;
launched by tests/integrations/test_ddp.py. Each rank writes ``rank<N>.json`` into ``--out``."""

from __future__ import annotations

import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # tests/ddp/ and tests/ (the builders)

import torch  # noqa: E402
from _record import Recorder, out_arg, weights_hash  # noqa: E402
from builders import gpt2, hf_args, hf_dataset  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from initwatch.integrations.transformers import InitWatchCallback  # noqa: E402

warnings.filterwarnings("ignore")


class Probe(TrainerCallback):
    """After InitWatchCallback in the list: sees the model after the scheme and after the wrap."""

    def __init__(self, watch_cb: InitWatchCallback, out: str) -> None:
        self.cb, self.out, self.rec = watch_cb, out, Recorder()

    def on_init_end(self, args, state, control, model=None, **kwargs):
        self.rec.hashes["after_scheme"] = weights_hash(model)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.rec.hashes["train_begin"] = weights_hash(model)
        self.rec.attach(self.cb.watch, model.transformer.h[-1])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.rec.hashes["end"] = weights_hash(model)
        self.rec.dump(
            self.out,
            args.process_index,
            world_size=args.world_size,
            is_world_process_zero=state.is_world_process_zero,
            alerts=len(self.cb.alerts),
            global_step=state.global_step,
        )


def main() -> None:
    out = out_arg()
    rank = int(os.environ["RANK"])
    torch.manual_seed(10 + rank)  # rank-dependent model draw and re-init: DDP must equalize
    model = gpt2()
    data = hf_dataset(32)
    args = hf_args(out, max_steps=6, report_to="tensorboard", ddp_backend="gloo")
    # on_alert="stop" with an alert on rank 1 only: both ranks must stop at the same step
    # (one collective decides), or DDP would hang.
    rules = {"persistence": 1, "grad_norm_ceiling": 1e-9} if rank == 1 else None
    cb = InitWatchCallback(
        "rezero",
        on_alert="stop",
        rules=rules,
        scheme_options={"seed": 100 + rank},
        dense_start=0,  # the fixed cadence: non-logging steps exist (and issue nothing)
        max_interval=None,
    )
    Trainer(model=model, args=args, train_dataset=data, callbacks=[cb, Probe(cb, out)]).train()


if __name__ == "__main__":
    main()
