"""Host-side time of one logging step: frame building, the rules, the TensorBoard sink.

Trains a few logging steps of the model (``bench/overhead.py``'s ``mlp``, ``gpt2-6`` or
``gpt2-12``) under a :class:`~initwatch.Watch` with a TensorBoard writer, keeps the last host copy
of the statistics buffer, then replays only the host side of a logging step on it many times:
building the frame from the copied buffer, ``Rules.update`` and the sink's ``write_frame`` +
``write_alerts`` (one event). The device work (hooks, norms, the copy) is not included. Prints
the median and the fastest of ``--repeats`` replays per part, in µs (thread CPU time), and,
counted (deterministic, so comparable on a loaded machine): the Python function calls and the
``dict.get`` calls of one replay of each part (with ``cProfile``).

    python bench/host_side.py --model gpt2-6 --repeats 300
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _overhead():
    spec = importlib.util.spec_from_file_location("bench_overhead", HERE / "overhead.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def measure(model_name: str, repeats: int, tmp: str) -> dict[str, float]:
    """Median and fastest µs per part of the host side of one logging step."""
    from torch.utils.tensorboard import SummaryWriter

    from initwatch import Watch

    model, batches, kind = _overhead().build(model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    writer = SummaryWriter(tmp)
    watch = Watch(model, writer=writer, every=1, on_alert=lambda a: None)
    watch._sink.heatmap_every = 10**9  # heatmaps are another bench's (overhead.py --only stall)
    kept = []
    read = watch._buffer.read

    def keep():
        host = read()
        kept[:] = [host]
        return host

    watch._buffer.read = keep
    for step in range(4):
        x = batches[step % len(batches)]
        with watch.step(step, opt) as scope:
            scope.loss = model(x).pow(2).mean() if kind == "mlp" else model(x, labels=x).loss
            scope.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    host = kept[0]
    rules, sink = watch._rules, watch._sink
    parts: dict[str, list[float]] = {"frame": [], "rules": [], "sink": [], "total": []}
    clock = time.thread_time
    for i in range(repeats):
        t0 = clock()
        frame = watch._frame(host, False)
        t1 = clock()
        alerts = list(rules.update(frame, watch.context))
        t2 = clock()
        sink.write_frame(frame)
        sink.write_alerts(alerts, frame.step, i)
        t3 = clock()
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            parts[k].append(v)
    out_counts = {}
    for name, fn in (
        ("frame", lambda: watch._frame(host, False)),
        ("rules", lambda: list(rules.update(watch._frame(host, False), watch.context))),
        ("sink", lambda: sink.write_frame(watch._frame(host, False))),
    ):
        calls, gets = _calls(fn)
        out_counts[name] = (calls, gets)
    base_calls, base_gets = out_counts["frame"]
    counts = {"frame_calls": base_calls, "frame_dict_gets": base_gets}
    for name in ("rules", "sink"):  # each replay also builds its frame: subtract it
        counts[f"{name}_calls"] = out_counts[name][0] - base_calls
        counts[f"{name}_dict_gets"] = out_counts[name][1] - base_gets
    n_layers = len(frame.layers)
    n_values = sum(len(v) for v in frame.values.values())
    watch.close()
    writer.close()
    out: dict[str, float] = {"layers": n_layers, "values": n_values, **counts}
    for k, v in parts.items():
        out[f"{k}_us_median"] = 1e6 * statistics.median(v)
        out[f"{k}_us_min"] = 1e6 * min(v)
    return out


def _calls(fn) -> tuple[int, int]:
    """Python function calls and ``dict.get`` calls of one call of ``fn`` (cProfile)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof).stats
    calls = sum(v[1] for v in stats.values())
    gets = sum(v[1] for k, v in stats.items() if k[2] == "<method 'get' of 'dict' objects>")
    return calls, gets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2-6", choices=("mlp", "gpt2-6", "gpt2-12"))
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        out = measure(args.model, args.repeats, tmp)
    print(json.dumps({args.model: out}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({args.model: out}, indent=1))


if __name__ == "__main__":
    main()
