"""Fine-tune a pretrained model safely: no re-initialization, monitoring with fine-tune remedies.

1. A small GPT-2 is trained for a few seconds (``zoo.pretrain``), saved with
   ``save_pretrained`` (standing in for a downloaded checkpoint) and reloaded with
   ``from_pretrained``.
2. Asking for a scheme on it is refused: re-initializing would erase the pretrained weights
   (initwatch sees from the weights' statistics that they were trained; loading them with
   ``load_state_dict`` or safetensors instead is recognised the same way).
3. ``InitWatchCallback(scheme=None)`` monitors the fine-tune; it knows the model is pretrained,
   so its remedies speak of fine-tuning. The learning rate here is far too high for a
   fine-tune, and the monitor says so, with the fix.

    python examples/hf_finetune_safely.py
    python examples/hf_finetune_safely.py --fast       # what the tests run
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from initwatch import PretrainedWeightsError, is_pretrained, zoo
from initwatch.integrations.transformers import InitWatchCallback


def text_like_dataset(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, seq), generator=g)
    return [{"input_ids": t, "labels": t} for t in tokens]


def main(argv: list[str] | None = None) -> InitWatchCallback:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=1e-2, help="too high for a fine-tune")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--fast", action="store_true", help="a smaller model, 6 steps")
    args = parser.parse_args(argv)
    out = args.output_dir or tempfile.mkdtemp(prefix="hf_finetune_")
    layers, steps = (2, 6) if args.fast else (4, args.steps)

    # 1. A "pretrained" checkpoint, saved and reloaded the way a hub model would be.
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=96, n_embd=64, n_layer=layers, n_head=4, n_positions=64)
    zoo.pretrain("gpt2", GPT2LMHeadModel(config), steps=60).save_pretrained(
        os.path.join(out, "pretrained")
    )
    model = GPT2LMHeadModel.from_pretrained(os.path.join(out, "pretrained"))
    print(f"is_pretrained: {is_pretrained(model)}")

    training = TrainingArguments(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=args.lr,
        logging_steps=1,
        report_to="none",  # statistics go to <output_dir>/initwatch_logs/version_N
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    data = text_like_dataset(256, 16, 96)

    # 2. A scheme on pretrained weights is refused, with what to do instead.
    try:
        Trainer(
            model=model, args=training, train_dataset=data, callbacks=[InitWatchCallback("t-fixup")]
        )
    except PretrainedWeightsError as err:
        print(f"refused, as it should be:\n  {err}\n")

    # 3. Monitor the fine-tune (scheme=None): the remedies know it is a fine-tune.
    watch = InitWatchCallback(scheme=None)  # on_alert="warn": one warning per cause
    Trainer(model=model, args=training, train_dataset=data, callbacks=[watch]).train()
    print(
        f"\nfine-tune (pretrained={watch.context.pretrained}, lr={args.lr}): {len(watch.alerts)} alert(s)"
    )
    for alert in watch.alerts:
        print(f"- {alert.kind} at {alert.layer}: {alert.message}\n  remedy: {alert.remedy}")
    return watch


if __name__ == "__main__":
    main()
