"""Overhead of a logging step under FSDP2 (and DeepSpeed ZeRO) against DDP, 2 CPU processes
(gloo).

A GPT-2 (zoo, 4 blocks, d=64) trains on random tokens under DDP and under FSDP2 (fully_shard per
block, then the root). Each configuration runs plain steps and steps measured by a
``Watch(every=1)`` in interleaved rounds; the ratio (measured step / plain step) is taken within
each round and the median over rounds is reported, for DDP and FSDP2, and their quotient.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 bench/sharded_overhead.py
    ... bench/sharded_overhead.py --kinds ddp,zero2,zero3   # needs initwatch[deepspeed]

Rank 0 prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
import torch.distributed as dist

warnings.filterwarnings("ignore")


def build(kind: str):
    from torch.distributed.fsdp import fully_shard

    from initwatch import zoo

    torch.manual_seed(0)
    model = zoo.build("gpt2", layers=4, hidden=64)
    if kind == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model), model
    if kind.startswith("zero"):  # a DeepSpeed engine steps its own torch optimizer
        import deepspeed

        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        config = {
            "train_micro_batch_size_per_gpu": 4,
            "zero_optimization": {"stage": int(kind[-1])},
            "gradient_clipping": 0.0,
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
        }
        engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)
        return engine, engine
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    return model, model


def steps(model, opt, ids, n: int, watch=None) -> float:
    engine = type(model).__name__ == "DeepSpeedEngine"
    dist.barrier()
    start = time.perf_counter()
    for s in range(n):
        if watch is not None:
            watch.begin_step(s, measure=True)
        loss = model(input_ids=ids, labels=ids).loss
        model.backward(loss) if engine else loss.backward()
        if watch is not None:
            watch.before_optimizer_step(opt)
        opt.step()
        opt.zero_grad()
        if watch is not None:
            watch.end_step(loss=loss)
    dist.barrier()
    return (time.perf_counter() - start) / n


def main() -> None:
    import initwatch

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default="ddp,fsdp2", help="ddp first: the others over it")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    ids = torch.randint(0, 96, (4, 32), generator=torch.Generator().manual_seed(dist.get_rank()))
    setups = {}
    for kind in args.kinds.split(","):
        model, inner = build(kind)
        opt = model if kind.startswith("zero") else torch.optim.AdamW(model.parameters(), lr=1e-4)
        watch = initwatch.Watch(inner, every=1, rules=False, dense_start=0)
        steps(model, opt, ids, 3)  # warm-up
        steps(model, opt, ids, 3, watch)
        setups[kind] = (model, opt, watch)
    ratios = {k: [] for k in setups}
    times = {k: {"plain": [], "watch": []} for k in setups}
    for r in range(args.rounds):
        order = list(setups) if r % 2 == 0 else list(setups)[::-1]
        for kind in order:
            model, opt, watch = setups[kind]
            plain = steps(model, opt, ids, args.steps)
            measured = steps(model, opt, ids, args.steps, watch)
            ratios[kind].append(measured / plain)
            times[kind]["plain"].append(plain)
            times[kind]["watch"].append(measured)
    if dist.get_rank() == 0:
        med = {k: statistics.median(v) for k, v in ratios.items()}
        out = {
            "every_step_ratio": med,
            **{f"{k}_over_ddp": med[k] / med["ddp"] for k in med if k != "ddp"},
            "plain_step_ms": {k: 1e3 * statistics.median(v["plain"]) for k, v in times.items()},
            "logging_step_extra_ms": {
                k: 1e3 * (statistics.median(v["watch"]) - statistics.median(v["plain"]))
                for k, v in times.items()
            },
            "rounds": args.rounds,
            "steps": args.steps,
        }
        print(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
