"""Detection benchmark: fine-tune shocks at each framework's default cadence, and the step at
which initwatch raises its first alert (plus healthy twins that must stay silent).

Every run fine-tunes the same small "pretrained" GPT-2 (2 blocks, width 64; trained here first
by ``initwatch.zoo.pretrain``, then saved with ``save_pretrained``) on a synthetic copy task for ``--steps`` optimizer steps with AdamW,
once with the Hugging Face Trainer and once with Lightning, each at its **default** logging
cadence (HF ``logging_steps=500``, Lightning ``log_every_n_steps=50``) and with the callback's
defaults. A shock is a destructive learning rate, alone or with warmup, gradient clipping,
gradient accumulation, LoRA, or weights loaded with ``load_state_dict`` instead of
``from_pretrained``, or a usual lr under a decay sized for 3 steps (epochs) but stepped every
step; its healthy twin is the same run at a usual fine-tuning learning rate (with the decay
sized for the whole run).

Printed: a Markdown table with, per run, the framework's step number of the first alert (HF
counts optimizer steps from 1, Lightning from 0), the optimizer steps taken until it (onset is
the first step), its kind, and the number of causes alerted. ``--fast``: fewer steps and runs
(for the test that keeps this script working).

    python bench/detection.py            # the table in docs/benchmarks.md
    python bench/detection.py --fast
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from initwatch import zoo  # noqa: E402

VOCAB, SEQ, BATCH = 96, 16, 8


@dataclass(frozen=True)
class Run:
    """One fine-tune: its name, learning rate and what is switched on."""

    name: str
    lr: float
    warmup: int = 0
    clip: float = 0.0
    accumulate: int = 1
    lora: bool = False
    loaded: bool = False  # load_state_dict into a fresh model instead of from_pretrained
    decay: int = 0  # steps a decaying lr schedule is sized for (0: none, -1: the whole run)

    def healthy(self) -> Run:
        """The same run at a usual fine-tuning learning rate (a decay sized for the run)."""
        name = f"{self.name} (healthy twin)"
        if self.decay > 0:
            return replace(self, name=name, decay=-1)
        return replace(self, name=name, lr=2e-4 if self.lora else 5e-5)


SHOCKS = [
    Run("destructive lr", 1e-2),
    Run("destructive lr + warmup", 1e-2, warmup=20),
    Run("destructive lr + clipping", 1e-2, clip=1.0),
    Run("destructive lr + accumulation", 1e-2, accumulate=4),
    Run("LoRA at a high lr", 1e-1, lora=True),
    Run("loaded checkpoint, destructive lr", 1e-2, loaded=True),
    Run("lr decay sized for 3 steps (epochs)", 5e-5, decay=3),
]
FAST = [SHOCKS[0], SHOCKS[5]]


def batches(n: int, seed: int) -> torch.Tensor:
    """``n`` sequences of a copy task: a random first half, repeated."""
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(3, VOCAB, (n, SEQ // 2), generator=g)
    return torch.cat([half, half], dim=1)


def pretrain(folder: str, steps: int) -> str:
    """Stand-in pretrained weights (:func:`initwatch.zoo.pretrain`), saved with
    ``save_pretrained`` and as a plain state dict."""
    torch.manual_seed(0)
    model = zoo.pretrain(
        "gpt2", zoo.build("gpt2", layers=2, hidden=64, heads=4, vocab=VOCAB), steps
    )
    model.save_pretrained(folder)
    torch.save(model.state_dict(), os.path.join(folder, "weights.pt"))
    return folder


def load(folder: str, run: Run) -> torch.nn.Module:
    """The model a user would fine-tune: from_pretrained, or load_state_dict into a new one."""
    from transformers import GPT2LMHeadModel

    if run.loaded:
        model = zoo.build("gpt2", layers=2, hidden=64, heads=4, vocab=VOCAB)
        model.load_state_dict(torch.load(os.path.join(folder, "weights.pt"), weights_only=True))
    else:
        model = GPT2LMHeadModel.from_pretrained(folder)
    if run.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"]))
    return model


def first_alert(alerts: list) -> tuple[int | None, str, int]:
    new = [a for a in alerts if not a.repeat]
    if not new:
        return None, "none", 0
    return new[0].step, new[0].kind, len({a.extra.get("cause", a.kind) for a in new})


def run_hf(folder: str, run: Run, steps: int, out: str) -> tuple[int | None, str, int]:
    from transformers import (
        PrinterCallback,
        Trainer,
        TrainingArguments,
        get_linear_schedule_with_warmup,
    )

    from initwatch.integrations.transformers import InitWatchCallback

    cb = InitWatchCallback(on_alert=lambda a: None)
    data = batches(steps * BATCH * run.accumulate, seed=2)
    model = load(folder, run)
    optimizers: tuple = (None, None)
    if run.decay > 0:  # the misuse: num_training_steps set to the number of epochs
        opt = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=0.0)
        optimizers = (opt, get_linear_schedule_with_warmup(opt, run.warmup, run.decay))
    args = TrainingArguments(
        output_dir=out,
        max_steps=steps,
        learning_rate=run.lr,
        warmup_steps=run.warmup,
        lr_scheduler_type="linear" if run.decay else "constant_with_warmup",
        max_grad_norm=run.clip,
        gradient_accumulation_steps=run.accumulate,
        per_device_train_batch_size=BATCH,
        weight_decay=0.0,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=[{"input_ids": r, "labels": r} for r in data],
        callbacks=[cb],
        optimizers=optimizers,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    step, kind, causes = first_alert(cb.alerts)
    return step, kind, causes


def run_lightning(folder: str, run: Run, steps: int, out: str) -> tuple[int | None, str, int]:
    import lightning as L

    from initwatch.integrations.lightning import InitWatch

    class FineTune(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = load(folder, run)

        def training_step(self, batch, batch_idx):
            (ids,) = batch
            return self.model(input_ids=ids, labels=ids).loss

        def configure_optimizers(self):
            params = [p for p in self.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=run.lr, weight_decay=0.0)
            sched = torch.optim.lr_scheduler
            if run.decay:  # per step; a T_max of 3 is a schedule sized for 3 epochs
                t_max = run.decay if run.decay > 0 else steps
                ramp = sched.CosineAnnealingLR(opt, T_max=t_max)
            elif run.warmup:
                ramp = sched.LambdaLR(opt, lambda s: min(1.0, (s + 1) / run.warmup))
            else:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": ramp, "interval": "step"}}

    _quiet()
    cb = InitWatch(on_alert=lambda a: None)
    data = torch.utils.data.TensorDataset(batches(steps * BATCH * run.accumulate, seed=2))
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=run.clip or None,
        accumulate_grad_batches=run.accumulate,
        default_root_dir=out,
        callbacks=[cb],
    )
    torch.manual_seed(0)
    trainer.fit(FineTune(), torch.utils.data.DataLoader(data, batch_size=BATCH))
    return first_alert(cb.alerts)


def _quiet() -> None:
    """Only errors from the libraries' loggers (Lightning sets its own levels at import)."""
    import logging

    for name in ("transformers", "lightning", "lightning.pytorch", "initwatch", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("lightning", "pytorch_lightning")):
            logging.getLogger(name).setLevel(logging.ERROR)


FRAMEWORKS = {"hf": (run_hf, 1), "lightning": (run_lightning, 0)}  # (runner, first step number)


@dataclass
class Row:
    """One line of the table."""

    framework: str
    run: Run
    step: int | None
    kind: str
    causes: int
    seconds: float

    @property
    def taken(self) -> int | None:
        """Optimizer steps from the onset (the first step) to the first alert, inclusive."""
        first_number = FRAMEWORKS[self.framework][1]
        return None if self.step is None else self.step - first_number + 1

    def markdown(self) -> str:
        dash = "-"
        return (
            f"| {self.framework} | {self.run.name} | {self.run.lr:g} | "
            f"{dash if self.step is None else self.step} | "
            f"{dash if self.taken is None else self.taken} | {self.kind} | {self.causes} | "
            f"{self.seconds:.1f} |"
        )


HEADER = (
    "| framework | run | lr | first alert at step | optimizer steps until it | kind | causes "
    "| wall s |\n|---|---|---:|---:|---:|---|---:|---:|"
)


def run_all(fast: bool, steps: int, pretrain_steps: int, frameworks: list[str]) -> list[Row]:
    """Every shock and its healthy twin in every framework; prints each row as it is done."""
    shocks = FAST if fast else SHOCKS
    runs = [r for s in shocks for r in (s, s.healthy())]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = pretrain(os.path.join(tmp, "pretrained"), pretrain_steps)
        for fw in frameworks:
            runner = FRAMEWORKS[fw][0]
            for i, run in enumerate(runs):
                t0 = time.perf_counter()
                step, kind, causes = runner(folder, run, steps, os.path.join(tmp, f"{fw}{i}"))
                rows.append(Row(fw, run, step, kind, causes, time.perf_counter() - t0))
                print(rows[-1].markdown(), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--pretrain-steps", type=int, default=100)
    parser.add_argument("--fast", action="store_true", help="2 shocks and their twins, 8 steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frameworks", default="hf,lightning")
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    steps = 8 if a.fast else a.steps
    print(
        f"# detection benchmark: {steps} steps per run, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, threads {a.threads}"
    )
    print()
    print(HEADER)
    run_all(a.fast, steps, 30 if a.fast else a.pretrain_steps, a.frameworks.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
