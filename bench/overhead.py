"""Overhead of initwatch.Watch against plain training, wandb.watch and Lightning's grad_norm.

Per model (``--model mlp``, ``gpt2-6`` = GPT-2 6 layers d=128, ``gpt2-12`` = GPT-2 12 layers
d=256, or ``all``) it reports:

* **counts** (deterministic, the primary evidence on a noisy machine): extra top-level aten ops
  and host reads of one logging step against a plain step, for the Watch, ``wandb.watch(log="all")``
  and Lightning's ``grad_norm`` (read to floats, as logging them does), and the extra ops of a
  non-logging step (counted with the PyTorch profiler, :mod:`bench._profile`);
* **timing**: step time (by default the training thread's CPU time, ``--clock wall`` for wall
  time; CPU time is what a shared machine's load does not inflate) of every configuration at every 50 / 10 / 1 steps in interleaved rounds
  (each round runs every configuration for ``--steps`` steps in a rotating order, so machine
  noise hits them alike); the ratio to plain is taken within a round and the median over rounds
  is reported. Every-N ratios are also derived from the measured extra cost of a logging step and
  of a non-logging step (``1 + (extra_log / N + extra_nonlog) / plain``), which a few rounds
  resolve better than timing 50-step cycles on a busy machine;
* **stall**: the longest time the Watch's calls (``begin_step``, ``before_optimizer_step``,
  ``end_step``, and ``close``) keep the training thread in one step of a whole fit that writes
  TensorBoard output and heatmaps (forward-hook time is inside the forward and counted in the
  logging-step cost instead), wall and thread-CPU time;
* **non-logging step**: the extra time of a step that does not log (small MLP, median of
  interleaved rounds, in µs);
* **floor**: the physical limit of a logging step: one read of every monitored output (a sum)
  plus one ``_foreach_norm`` over every gradient and weight;
* **breakdown**: where a logging step's own work goes (thread-CPU time of each part, patched);
* **memory** (``--memory``): peak RSS (``VmHWM``) of one fresh process per configuration.

    python bench/overhead.py --model all --json overhead.json
    python bench/overhead.py --model gpt2-6 --only counts

wandb runs with ``mode="offline"`` and ``reinit="create_new"`` (each configuration its own run in
one process: a second plain ``wandb.init`` would return the first run and mix their step
counters, and rows with an out-of-order ``step=`` are dropped); each run watches its own model
with ``run.watch`` and commits one ``run.log`` per logging step; since ``wandb.watch``'s hooks log
to the global ``wandb.run``, each wandb configuration is made that run while it trains.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
MODELS = {
    "mlp": {"kind": "mlp", "width": 256, "depth": 4, "batch": 64},
    "gpt2-6": {"kind": "gpt2", "layers": 6, "d": 128, "heads": 4, "batch": 8, "seq": 64},
    "gpt2-12": {"kind": "gpt2", "layers": 12, "d": 256, "heads": 4, "batch": 8, "seq": 64},
}
MONITORS = ("watch", "wandb", "lightning")
CLOCK = [time.thread_time]  # --clock: the training thread's CPU time (default) or wall time
EVERY = (50, 10, 1)


def _profile():
    spec = importlib.util.spec_from_file_location("bench_profile", HERE / "_profile.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def build(name: str, seed: int = 0) -> tuple[nn.Module, list[torch.Tensor], str]:
    """The model, its batches, and its kind."""
    cfg = MODELS[name]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(1)
    if cfg["kind"] == "mlp":
        w, layers = cfg["width"], []
        for _ in range(cfg["depth"]):
            layers += [nn.Linear(w, w), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(w, 1))
        batches = [torch.randn(cfg["batch"], w, generator=gen) for _ in range(8)]
        return model, batches, "mlp"
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = GPT2Config(
        n_layer=cfg["layers"],
        n_embd=cfg["d"],
        n_head=cfg["heads"],
        vocab_size=2048,
        n_positions=cfg["seq"],
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config).train()
    batches = [torch.randint(0, 2048, (cfg["batch"], cfg["seq"]), generator=gen) for _ in range(8)]
    return model, batches, "gpt2"


class Runner:
    """One configuration: a model, its optimizer, its monitor at one cadence, a step counter."""

    def __init__(self, model_name: str, monitor: str, every: int, tmp: str) -> None:
        self.monitor, self.every, self.step = monitor, every, 0
        self.name = "plain" if monitor == "plain" else f"{monitor}/{every}"
        self.model, self.batches, self.kind = build(model_name)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.watch = self.writer = self.run = None
        self.stall = 0.0  # longest time in the Watch's calls in one step (wall)
        self.stall_cpu = 0.0
        self.calls: list[tuple[int, float, float]] = []  # (step, cpu, wall) of the Watch's calls
        if monitor == "watch":
            from torch.utils.tensorboard import SummaryWriter

            from initwatch import Watch

            self.writer = SummaryWriter(os.path.join(tmp, self.name.replace("/", "_")))
            self.watch = Watch(  # exactly every `every` steps: no dense start, no interval cap
                self.model,
                writer=self.writer,
                every=every,
                on_alert=lambda a: None,
                dense_start=0,
                max_interval=None,
            )
        elif monitor == "wandb":
            import wandb

            os.environ.update(WANDB_SILENT="true")
            self.run = wandb.init(
                project="initwatch-bench",
                name=self.name,
                dir=tmp,
                mode="offline",
                reinit="create_new",
                settings=wandb.Settings(console="off"),
            )
            self.run.watch(self.model, log="all", log_freq=every)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            return self.model(x).pow(2).mean()
        return self.model(x, labels=x).loss

    def one_step(self) -> None:
        x = self.batches[self.step % len(self.batches)]
        w = self.watch
        logging = self.step % self.every == 0
        t0, c0 = time.perf_counter(), time.thread_time()
        if w is not None:
            w.begin_step(self.step)
        spent, spent_cpu = time.perf_counter() - t0, time.thread_time() - c0
        loss = self.loss(x)
        loss.backward()
        if self.monitor == "lightning" and logging:
            from lightning.pytorch.utilities import grad_norm

            norms = grad_norm(self.model, norm_type=2)
            _ = {k: float(v) for k, v in norms.items()}  # what logging them reads
        t0, c0 = time.perf_counter(), time.thread_time()
        if w is not None:
            w.before_optimizer_step(self.opt)
        spent += time.perf_counter() - t0
        spent_cpu += time.thread_time() - c0
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.thread_time()
        if w is not None:
            w.end_step(loss=loss)
        spent += time.perf_counter() - t0
        spent_cpu += time.thread_time() - c0
        if self.run is not None and logging:
            self.run.log({"loss": loss.item()}, step=self.step)
        self.stall = max(self.stall, spent)
        self.stall_cpu = max(self.stall_cpu, spent_cpu)
        if w is not None and logging:
            self.calls.append((self.step, spent_cpu, spent))
        self.step += 1

    def train(self, n: int) -> float:
        if self.run is not None:  # wandb.watch's hooks log to the global wandb.run
            import wandb

            wandb.run = self.run
        clock = CLOCK[0]
        t0 = clock()
        for _ in range(n):
            self.one_step()
        return clock() - t0

    def close(self) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        if self.watch is not None:
            self.watch.close()
        self.stall = max(self.stall, time.perf_counter() - t0)
        self.stall_cpu = max(self.stall_cpu, time.thread_time() - c0)
        self.close_cpu, self.close_wall = time.thread_time() - c0, time.perf_counter() - t0
        if self.writer is not None:
            self.writer.close()
        if self.run is not None:
            self.run.finish()


# ---- counts (deterministic) ---------------------------------------------------------------


def counts(model_name: str, tmp: str, skip: tuple[str, ...] = ()) -> dict[str, dict[str, int]]:
    """Extra top-level aten ops and host reads of a logging / non-logging step, per monitor."""
    prof = _profile()
    out = {}
    plain = Runner(model_name, "plain", 1, tmp)
    plain.train(2)
    base = prof.count(plain.one_step)
    for monitor in [m for m in MONITORS if m not in skip]:
        r = Runner(model_name, monitor, 2, tmp)
        r.train(4)  # logging steps 0 and 2 (plans, index tensors; step 0 histograms), state
        r.train(0)  # (wandb: its run is the global one)
        a = prof.count(r.one_step)  # step 4: a logging step
        b = prof.count(r.one_step)  # step 5: not one (wandb counts its own calls: it may be)
        logged, other = (a, b) if a.ops >= b.ops else (b, a)
        out[monitor] = {
            "extra_ops_logging": logged.ops - base.ops,
            "host_reads_logging": logged.host_reads - base.host_reads,
            "extra_ops_non_logging": other.ops - base.ops,
            "host_reads_non_logging": other.host_reads - base.host_reads,
        }
        if monitor == "watch":
            out[monitor]["monitored_outputs"] = len(r.watch._probes.probes)
            out[monitor]["parameter_tensors"] = len(r.watch._params.targets)
            out[monitor]["sampled_tensors"] = len(r.watch._params.sparse)
        r.close()
    plain.close()
    return out


# ---- timing -------------------------------------------------------------------------------


def _rounds(runners: list[Runner], args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per step of each runner, one sample per round: all are warmed up first
    (allocator, first logging step, lazy imports), and each round starts with the next runner
    so that none always runs first."""
    for r in runners:
        r.train(args.warmup)
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for k in range(args.rounds):
        for r in runners[k % len(runners) :] + runners[: k % len(runners)]:
            times[r.name].append(r.train(args.steps) / args.steps)
    return times


def timing(model_name: str, args: argparse.Namespace, tmp: str) -> dict[str, dict]:
    monitors = [m for m in MONITORS if m not in args.skip]
    runners = [Runner(model_name, "plain", 1, tmp)]
    runners += [Runner(model_name, m, e, tmp) for m in monitors for e in args.every]
    times = _rounds(runners, args)
    for r in runners:
        r.close()
    plain = times["plain"]
    out: dict[str, dict] = {}
    for r in runners:
        ratios = [t / p for t, p in zip(times[r.name], plain, strict=True)]
        out[r.name] = {
            "ms_per_step": 1000 * statistics.median(times[r.name]),
            "ratio": statistics.median(ratios),
            "ratio_of_fastest": min(times[r.name]) / min(plain),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "stall_ms": 1000 * r.stall,
            "stall_cpu_ms": 1000 * r.stall_cpu,
        }
    return out


def _clock_cost(n: int = 2000) -> float:
    """Seconds one ``time.thread_time()`` call costs (a system call: ~1-10 µs on a VM)."""
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            time.thread_time()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


class _Timer:
    """Thread-CPU time of patched functions, by label, less the timer's own cost: an interval
    holds about one clock call of its own plus two per timed call nested inside it."""

    def __init__(self) -> None:
        self.cost = _clock_cost()
        self.spent: dict[str, float] = {}
        self._ticks = 0
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, fn, label: str):
        timer = self

        def timed(*a, **k):
            t0, k0 = time.thread_time(), timer._ticks
            try:
                return fn(*a, **k)
            finally:
                took = time.thread_time() - t0
                inner = timer._ticks - k0
                timer._ticks += 2
                took -= timer.cost * (1 + inner)
                timer.spent[label] = timer.spent.get(label, 0.0) + took

        return timed

    def patch(self, owner: object, name: str, label: str) -> None:
        real = getattr(owner, name)
        setattr(owner, name, self.wrap(real, label))
        self._undo.append((owner, name, real))

    def patch_attention_hooks(self, label: str) -> None:
        """The attention probes' hooks (made per attach: the Watch re-attaches its hooks at
        every logging step)."""
        from initwatch.attention import AttentionProbe

        make = AttentionProbe._hook
        AttentionProbe._hook = lambda probe, path: self.wrap(make(probe, path), label)
        self._undo.append((AttentionProbe, "_hook", make))

    def undo(self) -> None:
        for owner, name, real in reversed(self._undo):
            setattr(owner, name, real)
        self._undo = []


class _HookClock:
    """Thread-CPU time spent inside the Watch's forward and gradient hooks and its attention
    probes' hooks (patched in, less the timer's own cost)."""

    def __enter__(self) -> _HookClock:
        from initwatch.probes import ActivationProbe

        self._timer = _Timer()
        self._timer.patch(ActivationProbe, "__call__", "hooks")
        self._timer.patch(ActivationProbe, "_on_grad", "hooks")
        self._timer.patch_attention_hooks("hooks")
        return self

    @property
    def spent(self) -> float:
        return self._timer.spent.get("hooks", 0.0)

    def __exit__(self, *exc: object) -> None:
        self._timer.undo()


def direct(model_name: str, args: argparse.Namespace, tmp: str) -> dict[str, float]:
    """Per-step costs robust to a shared machine's noise (which only adds time): the fastest of
    many steps of each kind. Every monitor logs every other step; runners alternate in chunks
    of two steps. For the Watch also its own work, timed inside its hooks and calls."""
    monitors = [m for m in MONITORS if m not in args.skip]
    plain = Runner(model_name, "plain", 1, tmp)
    runners = {m: Runner(model_name, m, 2, tmp) for m in monitors}
    everyone = [plain, *runners.values()]
    for r in everyone:
        r.train(2)
    steps: dict[str, dict[bool, list[float]]] = {r.name: {True: [], False: []} for r in everyone}
    own: list[float] = []
    clock = CLOCK[0]
    with _HookClock() as hooks:
        for _ in range(args.rounds * args.steps):
            for r in everyone:
                if r.run is not None:
                    import wandb

                    wandb.run = r.run
                for _ in range(2):
                    logging = r.step % 2 == 0
                    before_hooks, before_stall = hooks.spent, r.stall_cpu
                    r.stall_cpu = 0.0
                    t0 = clock()
                    r.one_step()
                    steps[r.name][logging].append(clock() - t0)
                    if r.watch is not None and logging:
                        own.append(hooks.spent - before_hooks + r.stall_cpu)
                    r.stall_cpu = max(r.stall_cpu, before_stall)
    for r in everyone:
        r.close()
    base = min(steps["plain"][True] + steps["plain"][False])
    out = {"plain_ms": 1000 * base, "samples_per_kind": len(steps["plain"][True])}
    for m, r in runners.items():
        # wandb.watch counts its own hook calls, so its logging steps may be the odd ones
        log, other = sorted((min(steps[r.name][True]), min(steps[r.name][False])), reverse=True)
        out[f"{m}_logging_extra_ms"] = 1000 * (log - base)
        out[f"{m}_non_logging_extra_ms"] = 1000 * (other - base)
    if own:
        out["watch_own_work_ms"] = 1000 * min(own)
    return out


def logging_step_extra(model_name: str, args: argparse.Namespace, tmp: str) -> dict[str, float]:
    """Median extra ms of a logging step (every=1) and of a non-logging step, per monitor."""
    plain = Runner(model_name, "plain", 1, tmp)
    every1 = {m: Runner(model_name, m, 1, tmp) for m in MONITORS if m not in args.skip}
    never = Runner(model_name, "watch", 10**9, tmp)
    everyone = [plain, never, *every1.values()]
    samples = _rounds(everyone, args)
    # Noise on a shared machine only adds time, so the fastest round of each configuration is
    # its best estimate; the median of the paired differences is given too.
    base = samples["plain"]
    out = {"plain_ms": 1000 * min(base), "plain_ms_median": 1000 * statistics.median(base)}
    for key, r in [(f"{m}_logging", r) for m, r in every1.items()] + [("watch_non_logging", never)]:
        out[f"{key}_extra_ms"] = 1000 * (min(samples[r.name]) - min(base))
        out[f"{key}_extra_ms_median"] = 1000 * statistics.median(
            [t - p for t, p in zip(samples[r.name], base, strict=True)]
        )
    for r in everyone:
        r.close()
    return out


def non_logging_us(args: argparse.Namespace, tmp: str, n: int = 200) -> dict[str, float]:
    """Extra µs of a step that does not log, small MLP (Watch hooks detached after step 0): a
    whole step against a plain one (interleaved), and the Watch's calls alone."""
    plain = Runner("mlp", "plain", 1, tmp)
    watched = Runner("mlp", "watch", 10**9, tmp)
    for r in (plain, watched):
        r.train(5)
    times: dict[str, list[float]] = {plain.name: [], watched.name: []}
    for k in range(args.rounds * 4):
        for r in (plain, watched) if k % 2 == 0 else (watched, plain):
            times[r.name].append(r.train(n) / n)
    for r in (plain, watched):
        r.close()
    a, b = times[plain.name], times[watched.name]
    return {
        "plain_us": 1e6 * min(a),
        "extra_us": 1e6 * (min(b) - min(a)),
        "extra_us_median": 1e6 * statistics.median([y - x for x, y in zip(a, b, strict=True)]),
        **watch_calls_us(),
    }


def watch_calls_us(n: int = 20000) -> dict[str, float]:
    """The Watch's own calls on non-logging steps, timed alone (fastest of 7 x ``n`` steps):
    ``begin_step`` + ``before_optimizer_step`` + ``end_step``, and a ``with watch.step(...)``
    block around an optimizer step less the optimizer step alone."""
    from initwatch import Watch

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    watch = Watch(model, every=10**9, rules=False, dense_start=0, max_interval=None)
    model(torch.ones(1, 4)).sum().backward()
    with watch.step(0, opt):  # step 0 logs; every later one does not
        opt.step()
    clock = time.thread_time

    def best(fn) -> float:
        out = math.inf
        for _ in range(7):
            t0 = clock()
            fn()
            out = min(out, (clock() - t0) / n)
        return 1e6 * out

    def calls() -> None:
        for i in range(1, n + 1):
            watch.begin_step(i)
            watch.before_optimizer_step(opt)
            watch.end_step()

    def blocks() -> None:
        for i in range(1, n + 1):
            with watch.step(i, opt):
                opt.step()

    def steps() -> None:
        for _ in range(n):
            opt.step()

    out = {"calls_us": best(calls), "step_block_us": best(blocks) - best(steps)}
    watch.close()
    return out


def breakdown(model_name: str, args: argparse.Namespace, tmp: str) -> dict[str, float]:
    """Where a logging step's own work goes: thread-CPU ms of each part of the Watch (fastest of
    ``rounds * steps`` logging steps at every step; heatmaps off), timed by patching the parts,
    less the timers' own cost (one ``thread_time`` call, measured: ~1-10 µs on a VM)."""
    from initwatch import attention, probes, stats
    from initwatch import watch as watch_mod
    from initwatch.sinks.tensorboard import TensorBoardSink

    timer = _Timer()
    spent = timer.spent
    patch = timer.patch
    patch(probes.ActivationProbe, "__call__", "forward hooks")
    patch(probes, "activation_partials", "forward hooks: reductions")
    patch(probes.ActivationProbe, "_on_grad", "gradient hooks")
    timer.patch_attention_hooks("attention hooks")
    patch(watch_mod.Watch, "begin_step", "begin_step")
    patch(watch_mod.Watch, "before_optimizer_step", "before_optimizer_step")
    patch(probes.ParamProbe, "read_grads", "before: gradient and weight norms")
    patch(probes.ParamProbe, "snapshot", "before: update snapshot")
    patch(watch_mod.Watch, "end_step", "end_step")
    patch(probes.ParamProbe, "measure_update", "end: update measurement")
    patch(attention.AttentionBatch, "flush", "end: attention rows (batched)")
    patch(stats.StatBuffer, "flush", "end: buffer flush (attention rows included)")
    patch(watch_mod.Watch, "_frame", "end: frame")
    patch(stats, "to_host", "end: host read")
    try:
        from initwatch.rules import engine

        patch(engine.Rules, "update", "end: rules")
    except ImportError:
        pass
    patch(TensorBoardSink, "write_frame", "end: TensorBoard frame")
    patch(TensorBoardSink, "write_alerts", "end: TensorBoard alerts")
    try:
        r = Runner(model_name, "watch", 1, tmp)
        r.watch._sink.heatmap_every = 10**9
        r.train(3)
        samples: dict[str, list[float]] = {}
        for _ in range(args.rounds * args.steps):
            spent.clear()
            r.one_step()
            for k, v in spent.items():
                samples.setdefault(k, []).append(v)
        r.close()
    finally:
        timer.undo()
    calls = ("forward hooks", "gradient hooks", "attention hooks", "begin_step")
    calls += ("before_optimizer_step", "end_step")
    n = len(next(iter(samples.values())))
    totals = [sum(samples[k][i] for k in calls if k in samples) for i in range(n)]
    out = {k: 1000 * min(v) for k, v in samples.items()}
    out["total"] = 1000 * min(totals)
    out["total_median"] = 1000 * statistics.median(totals)
    out["clock_call_us"] = 1e6 * timer.cost
    return out


def stall(model_name: str, args: argparse.Namespace, tmp: str) -> dict[str, float]:
    """Longest Watch call time in one step over a whole fit (every 10, a heatmap due at every
    logging step: the worst case, one image per step; close included): the first logging
    step, the longest other one, and close, in thread-CPU and wall time."""
    r = Runner(model_name, "watch", 10, tmp)
    r.watch._sink.heatmap_every = 1
    r.train(args.stall_steps)
    r.close()
    first, *others = r.calls
    return {
        "steps": args.stall_steps,
        "stall_ms": 1000 * r.stall,
        "stall_cpu_ms": 1000 * r.stall_cpu,
        "first_logging_step_cpu_ms": 1000 * first[1],
        "first_logging_step_wall_ms": 1000 * first[2],
        "other_logging_steps_max_cpu_ms": 1000 * max(c for _, c, _ in others),
        "other_logging_steps_median_cpu_ms": 1000 * statistics.median(c for _, c, _ in others),
        "other_logging_steps_max_wall_ms": 1000 * max(w for _, _, w in others),
        "close_cpu_ms": 1000 * r.close_cpu,
        "close_wall_ms": 1000 * r.close_wall,
    }


def floor(model_name: str, args: argparse.Namespace) -> dict[str, float]:
    """The physical limit: one read of every monitored output + one norm of every gradient and
    weight, timed alone (median of repeats)."""
    from initwatch.watch import Watch

    model, batches, kind = build(model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    watch = Watch(model, every=1, rules=False)  # only to know the monitored outputs
    outputs: list[torch.Tensor] = []
    handles = [
        p.target.module.register_forward_hook(
            lambda m, a, o: outputs.append((o[0] if isinstance(o, tuple) else o).detach())
        )
        for p in watch._probes.probes
    ]
    watch.close()
    x = batches[0]
    loss = model(x).pow(2).mean() if kind == "mlp" else model(x, labels=x).loss
    loss.backward()
    for h in handles:
        h.remove()
    params = [p for p in model.parameters() if p.grad is not None]
    tensors = [p.grad for p in params] + params
    reads = []
    norms = []
    clock = CLOCK[0]
    for _ in range(max(5, args.rounds * 3)):
        t0 = clock()
        for o in outputs:
            o.sum()
        reads.append(clock() - t0)
        t0 = clock()
        torch._foreach_norm(tensors)
        norms.append(clock() - t0)
    opt.zero_grad()
    mb = sum(o.numel() * o.element_size() for o in outputs) / 2**20
    return {  # the limit: the fastest of the repeats
        "monitored_MB": mb,
        "read_ms": 1000 * min(reads),
        "norm_ms": 1000 * min(norms),
        "floor_ms": 1000 * (min(reads) + min(norms)),
    }


# ---- memory -------------------------------------------------------------------------------


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def memory_child(model_name: str, config: str, steps: int) -> None:
    import torch.utils.tensorboard  # noqa: F401  (every child imports the same libraries)

    import initwatch.sinks.tensorboard  # noqa: F401
    import initwatch.watch  # noqa: F401

    monitor, _, every = config.partition("/")
    with tempfile.TemporaryDirectory() as tmp:
        r = Runner(model_name, monitor, int(every or 1), tmp)
        r.train(steps)
        peak = _peak_rss()
        r.close()
    print(json.dumps({"peak_rss": peak}))


def memory(model_name: str, steps: int) -> dict[str, float]:
    out = {}
    for config in ("plain", "watch/1", "watch/10"):
        cmd = [sys.executable, __file__, "--memory-child", config, "--model", model_name]
        cmd += ["--memory-steps", str(steps)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[config] = json.loads(res.stdout.strip().splitlines()[-1])["peak_rss"]
    return out


# ---- main ---------------------------------------------------------------------------------

PARTS = ("counts", "direct", "extra", "timing", "nonlog", "stall", "floor", "breakdown")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2-6", choices=[*MODELS, "all"])
    p.add_argument("--only", nargs="*", default=list(PARTS), choices=PARTS)
    p.add_argument("--steps", type=int, default=10, help="steps per configuration per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--every", type=int, nargs="*", default=list(EVERY))
    p.add_argument("--skip", nargs="*", default=[], choices=MONITORS)
    p.add_argument("--stall-steps", type=int, default=60)
    p.add_argument("--memory", action="store_true")
    p.add_argument("--memory-steps", type=int, default=30)
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--clock",
        default="cpu",
        choices=("cpu", "wall"),
        help="time steps by the training thread's CPU time (robust on a shared machine) or wall",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    CLOCK[0] = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.memory_child:
        memory_child(args.model, args.memory_child, args.memory_steps)
        return
    names = list(MODELS) if args.model == "all" else [args.model]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            res: dict[str, object] = results.setdefault(name, {})
            parts = {
                "counts": (counts, (name, tmp, tuple(args.skip))),
                "floor": (floor, (name, args)),
                "direct": (direct, (name, args, tmp)),
                "extra": (logging_step_extra, (name, args, tmp)),
                "timing": (timing, (name, args, tmp)),
                "stall": (stall, (name, args, tmp)),
                "breakdown": (breakdown, (name, args, tmp)),
                "memory": (memory, (name, args.memory_steps)),
            }
            for part, (fn, fn_args) in parts.items():
                if part in args.only or (part == "memory" and args.memory):
                    res[part] = fn(*fn_args)
                    print(name, part, json.dumps(res[part]), flush=True)
        if "nonlog" in args.only:
            results["non_logging_mlp"] = non_logging_us(args, tmp)
            print("non_logging_mlp", json.dumps(results["non_logging_mlp"]), flush=True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
