"""Train a GPT-2-style model from scratch with T-Fixup under the Hugging Face Trainer.

T-Fixup removes the LayerNorms and scales the initial weights so that Adam trains the stack
without warmup. ``InitWatchCallback`` applies it when the Trainer is built (``on_init_end``:
before the optimizer exists), and writes per-layer statistics into the Trainer's own
TensorBoard run (``report_to="tensorboard"``):

    python examples/hf_trainer_tfixup.py               # 12 layers, 200 steps
    python examples/hf_trainer_tfixup.py --fast        # 2 layers, 4 steps (what the tests run)
    tensorboard --logdir hf_tfixup/runs
"""

from __future__ import annotations

import argparse

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from initwatch.integrations.transformers import InitWatchCallback


def counting_dataset(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Token sequences that count up modulo ``vocab`` from a random start."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab, (n, 1), generator=g)
    tokens = (start + torch.arange(seq)) % vocab
    return [{"input_ids": t, "labels": t} for t in tokens]


def main(argv: list[str] | None = None) -> InitWatchCallback:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", "--layers", dest="depth", type=int, default=12)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--output-dir", default="hf_tfixup")
    parser.add_argument("--fast", action="store_true", help="2 layers, 4 steps")
    args = parser.parse_args(argv)
    if args.fast:
        args.depth, args.steps, args.logging_steps = 2, 4, 2

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_embd=64, n_layer=args.depth, n_head=4, n_positions=64)
    model = GPT2LMHeadModel(config)  # from a config: random weights, so a scheme is allowed
    watch = InitWatchCallback(scheme="t-fixup")
    training = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=16,
        learning_rate=5e-4,
        warmup_steps=0,  # T-Fixup's point: no warmup needed
        logging_steps=args.logging_steps,  # InitWatchCallback measures on the same steps
        report_to="tensorboard",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=args.fast,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=counting_dataset(2048, 32, 64),
        callbacks=[watch],  # here, not add_callback(): the scheme is applied in __init__
    )
    print(watch.report)  # applied already: the Trainer has not created its optimizer yet
    result = trainer.train()
    print(f"final loss {result.training_loss:.3f}; alerts: {len(watch.alerts)}")
    for alert in watch.alerts:
        print(alert)
    print(f"tensorboard --logdir {training.output_dir}/runs")
    return watch


if __name__ == "__main__":
    main()
