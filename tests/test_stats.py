"""The stats buffer: declared reductions, accumulation, the one host copy, the DDP reduction."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from initwatch import stats
from initwatch.probes import reduce_activation
from initwatch.stats import (
    ACTIVATION_FIELDS,
    GRAD_SIGNAL_FIELDS,
    PARAM_FIELDS,
    Field,
    Reduce,
    StatBuffer,
    derive_activation,
    derive_grad_signal,
    derive_loss,
    derive_param,
)


def test_layout_puts_sum_fields_before_max_fields_and_rows_field_major():
    buf = StatBuffer()
    a = buf.add("a", ACTIVATION_FIELDS)
    p = buf.add("p", PARAM_FIELDS, size=3)
    g = buf.add("g", GRAD_SIGNAL_FIELDS)
    buf.allocate()
    n_sum = len(a.sum_fields) + 3 * len(p.sum_fields) + len(g.sum_fields)
    assert buf.n_sum == n_sum == 6 + 3 * 3 + 2
    assert buf.data.numel() == n_sum + 1 + 2 * 3
    assert a.offset("absmax") >= n_sum and p.offset("grad_nonfinite") >= n_sum
    assert p.offset("grad_sumsq") < n_sum
    # rows of one field are contiguous
    assert p.offset("weight_sumsq") == p.offset("grad_sumsq") + 3
    with pytest.raises(KeyError, match="no field 'nope'"):
        a.offset("nope")
    with pytest.raises(RuntimeError, match="before|after"):
        buf.add("late", GRAD_SIGNAL_FIELDS)


def test_using_the_buffer_before_allocate_says_to_call_allocate():
    buf = StatBuffer()
    g = buf.add("g", GRAD_SIGNAL_FIELDS)
    for use in (lambda: buf.accumulate(g, torch.tensor([1.0, 1.0])), buf.read, buf.reset):
        with pytest.raises(RuntimeError, match=r"before allocate\(\).*call allocate\(\) once"):
            use()


def test_accumulate_sums_and_maxes_and_reset_restores_defaults():
    buf = StatBuffer()
    g = buf.add("x", (Field("s", Reduce.SUM), Field("m", Reduce.MAX, default=-math.inf)))
    buf.allocate()
    assert buf.read().row(g) == {"s": 0.0, "m": -math.inf}
    for s, m in [(1.0, -5.0), (2.5, -7.0), (0.5, 3.0)]:
        buf.accumulate(g, torch.tensor([s]), torch.tensor([m]))
    assert buf.read().row(g) == {"s": 4.0, "m": 3.0}
    buf.reset()
    assert buf.read().row(g) == {"s": 0.0, "m": -math.inf}


def test_micro_batch_accumulation_equals_the_concatenated_batch():
    torch.manual_seed(0)
    chunks = [torch.randn(3, 7) * (i + 1) for i in range(4)]
    chunks[1][0, :3] = 0.0
    buf = StatBuffer()
    acc = buf.add("acc", ACTIVATION_FIELDS)
    whole = buf.add("whole", ACTIVATION_FIELDS)
    buf.allocate()
    for c in chunks:
        buf.accumulate(acc, *reduce_activation(c))
    buf.accumulate(whole, *reduce_activation(torch.cat(chunks)))
    host = buf.read()
    a, w = host.row(acc), host.row(whole)
    for name in a:
        assert a[name] == pytest.approx(w[name], rel=1e-5, abs=1e-5), name
    assert a["absmax"] == pytest.approx(torch.cat(chunks).abs().max().item())


def test_one_transfer_per_read(monkeypatch):
    calls = []
    real = stats.to_host
    monkeypatch.setattr(stats, "to_host", lambda t: calls.append(1) or real(t))
    buf = StatBuffer()
    groups = [buf.add(f"g{i}", ACTIVATION_FIELDS) for i in range(50)]
    buf.allocate()
    values = buf.read()
    assert len(calls) == 1
    assert all(values.row(g)["count"] == 0 for g in groups)


def test_derive_activation_matches_numpy():
    x = np.array([[0.0, -2.0, 3.0], [0.5, 0.0, -1.5]])
    v = {
        "count": x.size,
        "sum": x.sum(),
        "sumsq": (x**2).sum(),
        "zeros": (x == 0).sum(),
        "saturated": 1,
        "nonfinite": 0,
        "absmax": np.abs(x).max(),
    }
    d = derive_activation(v, bounded=True)
    assert d["act_rms"] == pytest.approx(np.sqrt((x**2).mean()))
    assert d["act_mean"] == pytest.approx(x.mean())
    assert d["act_std"] == pytest.approx(x.std())  # population std
    assert d["act_absmax"] == 3.0
    assert d["act_zero_frac"] == pytest.approx(2 / 6)
    assert d["act_sat_frac"] == pytest.approx(1 / 6)
    assert "act_sat_frac" not in derive_activation(v, bounded=False)
    assert derive_activation(dict(v, count=0)) == {}


def test_derive_activation_turns_non_finite_sums_into_nan_not_errors():
    v = {
        "count": 4,
        "sum": math.nan,
        "sumsq": math.inf,
        "zeros": 0,
        "saturated": 0,
        "nonfinite": 2,
        "absmax": math.inf,
    }
    d = derive_activation(v)
    assert math.isnan(d["act_mean"]) and math.isnan(d["act_std"])
    assert d["act_nonfinite"] == 2


def test_derive_param_and_grad_signal_and_loss():
    v = {"grad_sumsq": 4.0, "weight_sumsq": 16.0, "grad_nonfinite": 0.0, "update_sumsq": 0.25}
    d = derive_param(v, numel=400, sampled=100, updated=True)
    assert d["grad_norm"] == 2.0 and d["weight_norm"] == 4.0
    assert d["grad_weight_ratio"] == 0.5
    assert d["update_ratio"] == pytest.approx(math.sqrt(0.25 * 4) / 4.0)
    assert "update_ratio" not in derive_param(v, 400, 100, updated=False)
    assert set(derive_param(v, 400, 100, has_grad=False)) == {"weight_norm"}
    assert math.isnan(derive_param(dict(v, weight_sumsq=0.0), 4, 4)["grad_weight_ratio"])
    assert derive_grad_signal({"sumsq": 18.0, "count": 2.0}) == {"out_grad_rms": 3.0}
    assert derive_grad_signal({"sumsq": 0.0, "count": 0.0}) == {}
    assert derive_loss({"sum": 5.0, "count": 2.0}) == {"loss": 2.5}


def test_reduce_across_ranks_is_a_no_op_without_a_process_group():
    buf = StatBuffer()
    buf.add("g", GRAD_SIGNAL_FIELDS)
    buf.allocate()
    assert buf.reduce_across_ranks() == 0


_DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, torch, torch.distributed as dist
    import torch.multiprocessing as mp
    from initwatch.probes import reduce_activation
    from initwatch.stats import ACTIVATION_FIELDS, PARAM_FIELDS, StatBuffer

    def work(rank, world, init, out):
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        calls = []
        real_reduce, real_gather = dist.all_reduce, dist.all_gather
        dist.all_reduce = lambda t, op=None: calls.append("all_reduce") or real_reduce(t, op=op)
        dist.all_gather = lambda ts, t: calls.append("all_gather") or real_gather(ts, t)
        torch.manual_seed(rank)
        x = torch.randn(5, 4) * (rank + 1)
        buf = StatBuffer()
        groups = [buf.add(f"act{i}", ACTIVATION_FIELDS) for i in range(30)]
        params = buf.add("params", PARAM_FIELDS, size=2)
        buf.allocate()
        for g in groups:
            buf.accumulate(g, *reduce_activation(x))
        # per-parameter sums over the elements this rank owns (rank 0: all of tensor 1)
        own = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] if rank == 0 else [0.5, 0.0, 0.25, 0.0, 1.0, 0.0]
        buf.accumulate(params, sums=torch.tensor(own), maxs=torch.tensor([0.0, rank, 1, 1]))
        n = buf.reduce_across_ranks()
        host = buf.read()
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"n": n, "calls": calls, "row": host.row(groups[7]),
                           "param": host.row(params, 1)}, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        init, out = sys.argv[1], sys.argv[2]
        mp.spawn(work, args=(2, init, out), nprocs=2)
    """
)


@pytest.mark.slow
def test_ddp_reduction_is_one_collective(tmp_path):
    script = tmp_path / "ddp_stats.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "out.json"
    init = f"file://{tmp_path / 'store'}"
    subprocess.run([sys.executable, str(script), init, str(out)], check=True, timeout=120)
    res = json.loads(out.read_text())
    assert res["n"] == 1 and res["calls"] == ["all_gather"]  # independent of the 30 layers
    xs = []
    for rank in range(2):
        torch.manual_seed(rank)
        xs.append(torch.randn(5, 4) * (rank + 1))
    both = torch.cat(xs)
    row = res["row"]
    assert row["count"] == 40
    assert row["sum"] == pytest.approx(both.sum().item(), abs=1e-4)
    assert row["sumsq"] == pytest.approx((both**2).sum().item(), rel=1e-5)
    assert row["absmax"] == pytest.approx(both.abs().max().item())
    # per-parameter partial sums add up over ranks; flags are maxed
    assert res["param"] == {
        "grad_sumsq": 2.0,
        "weight_sumsq": 4.0,
        "update_sumsq": 6.0,
        "grad_nonfinite": 1.0,
        "grad_present": 1.0,
    }
