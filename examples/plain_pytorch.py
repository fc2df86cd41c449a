"""Watch a plain PyTorch training loop: per-layer statistics and alerts in TensorBoard.

A small GPT-2 (from a config, random weights) learns a toy copy task on random tokens. The
Watch measures every step of the first 20 (its dense start), then every ``--every`` steps and writes to a ``SummaryWriter``; afterwards run

    tensorboard --logdir runs/plain_pytorch

and open the "initwatch" dashboard (Custom Scalars tab), the heatmaps (Images tab) and the
alerts and summary (Text tab).

    python examples/plain_pytorch.py            # 300 steps
    python examples/plain_pytorch.py --fast     # a few seconds (used by the tests)
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.tensorboard import SummaryWriter
from transformers import GPT2Config, GPT2LMHeadModel

import initwatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="measure every N steps")
    parser.add_argument("--accumulate", type=int, default=2, help="micro-batches per step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--logdir", default="runs/plain_pytorch")
    parser.add_argument("--fast", action="store_true", help="a tiny run of a few steps")
    args = parser.parse_args()
    if args.fast:
        args.steps, args.every, args.batch, args.seq = 4, 2, 4, 16

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=4,
        n_embd=64,
        n_head=4,
        vocab_size=128,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    writer = SummaryWriter(args.logdir)
    # Create the Watch before the first forward (and before torch.compile, if you use it).
    watch = initwatch.Watch(model, writer=writer, every=args.every)

    for step in range(args.steps):
        watch.begin_step(step)  # before the first micro-batch of this optimizer step
        step_loss = torch.zeros(())
        for _ in range(args.accumulate):
            tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq))
            loss = model(tokens, labels=tokens).loss / args.accumulate
            loss.backward()
            step_loss += loss.detach()  # stays a tensor: no host sync in the loop
        watch.before_optimizer_step(optimizer)  # gradients are final here
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for alert in watch.end_step(loss=step_loss):
            print(alert)
        if watch.should_stop:
            break

    watch.close()  # writes the summary and removes the hooks
    writer.close()
    frame = watch.last_frame
    print(
        f"done: {len(watch.frames)} frames, last at step {frame.step}, "
        f"loss {frame.globals.get('loss', float('nan')):.3f}, "
        f"global grad norm {frame.globals.get('grad_norm_global', float('nan')):.3g}, "
        f"{len(watch.alerts)} alerts; tensorboard --logdir {args.logdir}"
    )


if __name__ == "__main__":
    main()
