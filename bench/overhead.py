"""Overhead of initwatch.Watch against plain training and wandb.watch, side by side in one run.

A GPT-2 from a small config is trained on random tokens (CPU by default). Configurations run in
interleaved rounds (each round runs every configuration for ``--steps`` steps, in a rotating
order), so machine noise hits them alike; the step-time ratio against plain training is taken
within each round and the median over rounds is reported. Peak memory is measured separately,
one fresh subprocess per configuration (``VmHWM`` from ``/proc/self/status``: the peak resident
set size of the process since it started; ``ru_maxrss`` would include the parent's peak, which
Linux carries across fork and exec), because a process's peak cannot be reset.

    python bench/overhead.py                      # the table in docs/benchmarks.md
    python bench/overhead.py --steps 20 --rounds 2 --no-memory   # a quick look

wandb runs with ``WANDB_MODE=offline`` and ``wandb.watch(model, log="all", log_freq=N)``, with the
Watch's default interval and with every step; its rows are committed with one ``wandb.log`` per
logging step. The Watch configurations write to a TensorBoard ``SummaryWriter``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

CONFIGS = ("plain", "watch_default", "watch_every_step", "wandb_watch", "wandb_every_step")


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=args.layers,
        n_embd=args.d,
        n_head=args.heads,
        vocab_size=args.vocab,
        n_positions=args.seq,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(cfg).to(args.device).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


class Runner:
    """One configuration: a model, its optimizer, its monitor, and a step counter."""

    def __init__(self, name: str, args: argparse.Namespace, tmp: str) -> None:
        self.name, self.args, self.step = name, args, 0
        self.model, self.opt = build(args)
        self.watch = None
        self.wandb = None
        self.writer = None
        if name.startswith("watch"):
            from torch.utils.tensorboard import SummaryWriter

            from initwatch import Watch

            every = 1 if name == "watch_every_step" else args.every
            self.writer = SummaryWriter(os.path.join(tmp, name))  # TensorBoard output included
            self.watch = Watch(self.model, writer=self.writer, every=every, on_alert=lambda a: None)
        elif name.startswith("wandb"):
            import wandb

            self.log_every = 1 if name == "wandb_every_step" else args.every
            os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=tmp)
            self.wandb = wandb.init(project="initwatch-bench", dir=tmp, mode="offline")
            wandb.watch(self.model, log="all", log_freq=self.log_every)
        gen = torch.Generator().manual_seed(1)
        self.batches = [
            torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(args.device)
            for _ in range(8)
        ]

    def train(self, n: int) -> float:
        """Run n optimizer steps; return the wall time."""
        if self.args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            x = self.batches[self.step % len(self.batches)]
            if self.watch is not None:
                self.watch.begin_step(self.step)
            loss = self.model(x, labels=x).loss
            loss.backward()
            if self.watch is not None:
                self.watch.before_optimizer_step(self.opt)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if self.watch is not None:
                self.watch.end_step(loss=loss)
            elif self.wandb is not None and self.step % self.log_every == 0:
                self.wandb.log({"loss": loss.item()}, step=self.step)
            self.step += 1
        if self.args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def timing(args: argparse.Namespace, configs: list[str]) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        runners = [Runner(c, args, tmp) for c in configs]
        for r in runners:  # warm-up: allocator, first logging step, lazy imports
            r.train(args.warmup)
        times: dict[str, list[float]] = {c: [] for c in configs}
        for k in range(args.rounds):
            order = runners[k % len(runners) :] + runners[: k % len(runners)]
            for r in order:
                times[r.name].append(r.train(args.steps) / args.steps)
        for r in runners:
            r.close()
    out = {}
    for c in configs:
        ratios = [t / p for t, p in zip(times[c], times["plain"], strict=True)]
        out[c] = {
            "ms_per_step": 1000 * statistics.median(times[c]),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return out


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux VmHWM; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(args: argparse.Namespace, config: str) -> None:
    """Run one configuration alone and print its memory (child process)."""
    import psutil

    rss = psutil.Process().memory_info().rss
    # Every child imports the same libraries first, so that peaks differ by what each
    # configuration allocates while training, not by which libraries it imported.
    import matplotlib.backends.backend_agg  # noqa: F401  (the Watch's heatmaps)
    import torch.utils.tensorboard  # noqa: F401
    import wandb  # noqa: F401

    import initwatch.sinks.tensorboard  # noqa: F401
    import initwatch.watch  # noqa: F401

    imports = psutil.Process().memory_info().rss - rss
    with tempfile.TemporaryDirectory() as tmp:
        r = Runner(config, args, tmp)
        r.train(1)
        before = psutil.Process().memory_info().rss
        r.train(args.memory_steps)
        peak = _peak_rss()
        r.close()
    print(json.dumps({"imports": imports, "rss_after_first_step": before, "peak_rss": peak}))


def memory(args: argparse.Namespace, configs: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for c in configs:
        cmd = [sys.executable, __file__, "--memory-child", c] + _passthrough(args)
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[c] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def _passthrough(args: argparse.Namespace) -> list[str]:
    keys = ("layers", "d", "heads", "vocab", "seq", "batch", "every", "device", "memory_steps")
    keys += ("threads",)
    return [x for k in keys for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--every", type=int, default=50, help="the Watch's default interval")
    p.add_argument("--steps", type=int, default=50, help="steps per configuration per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument(
        "--warmup", type=int, default=12, help="untimed steps (covers the first heatmap)"
    )
    p.add_argument("--memory-steps", type=int, default=100)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: less noise)")
    p.add_argument("--no-wandb", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args, args.memory_child)
        return
    configs = [c for c in CONFIGS if not (args.no_wandb and c.startswith("wandb"))]
    t = timing(args, configs)
    m = {} if args.no_memory else memory(args, configs)
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"GPT-2 n_layer={args.layers} d={args.d} batch={args.batch}x{args.seq}, "
        f"{args.rounds} rounds x {args.steps} steps, interval {args.every}"
    )
    print("| configuration | ms / step | ratio vs plain (median) | min-max | peak RSS MB | ratio |")
    print("|---|---|---|---|---|---|")
    base = m.get("plain", {}).get("peak_rss")
    for c in configs:
        row = t[c]
        mem = m.get(c, {})
        peak = mem.get("peak_rss")
        peak_s = f"{peak / 2**20:.0f}" if peak else "-"
        mem_ratio = f"{peak / base:.3f}" if peak and base else "-"
        print(
            f"| {c} | {row['ms_per_step']:.1f} | {row['ratio']:.3f} | "
            f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f} | {peak_s} | {mem_ratio} |"
        )
    if m:
        mb = m["plain"]["imports"] / 2**20
        print(
            f"(every memory child first imports tensorboard, matplotlib, wandb, initwatch: {mb:.0f} MB)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"timing": t, "memory": m, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
