"""The Hugging Face Trainer under DDP (torchrun, 2 CPU processes, gloo) with InitWatchCallback;
launched by tests/integrations/test_ddp.py. Each rank writes ``rank<N>.json`` into ``--out``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _record import Recorder, weights_hash  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from initwatch import zoo  # noqa: E402
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
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    rank = int(os.environ["RANK"])
    torch.manual_seed(10 + rank)  # rank-dependent model draw and re-init: DDP must equalize
    model = zoo.build("gpt2", layers=2, hidden=32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 96, (32, 8), generator=g)
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=out,
        max_steps=6,
        per_device_train_batch_size=2,
        logging_steps=2,
        report_to="tensorboard",
        save_strategy="no",
        use_cpu=True,
        ddp_backend="gloo",
        disable_tqdm=True,
        seed=0,
    )
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
