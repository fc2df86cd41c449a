"""initwatch.sharding without a process group: layouts, sample positions, refusals."""

from __future__ import annotations

import warnings

import pytest
import torch

import initwatch
from initwatch import zoo
from initwatch.sharding import Layout


def test_sample_positions_of_a_box_and_of_a_flat_range():
    full = torch.arange(7 * 5).reshape(7, 5)
    index = torch.randperm(35, generator=torch.Generator().manual_seed(0))[:12].sort().values
    box = Layout(True, (7, 5), (4, 0), (3, 5))  # rows 4-6, the second of two chunks of 7
    kept, local = box.local_positions(index)
    assert full[4:].flatten()[local].tolist() == index[kept].tolist()
    rng = Layout(True, (7, 5), (9,), (13,), flat=True)  # FSDP1: elements 9..21
    kept, local = rng.local_positions(index)
    assert full.flatten()[9:22][local].tolist() == index[kept].tolist()
    assert [i for i in index.tolist() if 9 <= i < 22] == index[kept].tolist()
    assert Layout(False, (7, 5), (0, 0), (7, 5)).local_positions(index) == [[], []]


def test_reinit_refuses_meta_device_models():
    with torch.device("meta"):
        model = zoo.build("gpt2", layers=2, hidden=32)
    with pytest.raises(initwatch.ShardingError, match="meta device.*real device"):
        initwatch.reinit(model, "t-fixup")


def watched_step(watch, model, opt) -> list[warnings.WarningMessage]:
    """One step of ``model`` on a random batch under ``watch.step``: every warning raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with watch.step(0, opt) as scope:
            scope.loss = model(torch.randn(3, 4)).pow(2).mean()
            scope.loss.backward()
            opt.step()
    return caught


@pytest.fixture
def one_rank(tmp_path):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_unreadable_layouts_are_refused_never_misread(one_rank):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor, Partial

    from initwatch.sharding import layout

    mesh = init_device_mesh("cpu", (1,))
    partial = DTensor.from_local(torch.ones(2, 3), mesh, [Partial()])
    with pytest.raises(initwatch.ShardingError, match="Partial.*Shard and Replicate"):
        layout(partial)
    # FSDP1 without use_orig_params: the Watch warns and records no parameter statistics
    inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    watch = initwatch.Watch(inner, every=1, rules=False)
    model = FullyShardedDataParallel(inner, use_orig_params=False, device_id=torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    caught = watched_step(watch, model, opt)
    assert any("no longer the model" in str(w.message) for w in caught)
    assert "act_rms" in watch.last_frame.values  # the rest of the frame is kept
    assert "grad_norm" not in watch.last_frame.values
    assert "weight_norm" not in watch.last_frame.values
    watch.close()


def test_a_watch_created_before_fully_shard_reads_nothing_stale(one_rank):
    from torch.distributed.fsdp import fully_shard

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    watch = initwatch.Watch(model, every=1, rules=False)
    fully_shard(model)  # replaces every parameter by a DTensor parameter
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    caught = watched_step(watch, model, opt)
    assert any("after fully_shard" in str(w.message) for w in caught)
    assert "weight_norm" not in watch.last_frame.values
    watch.close()


def test_fsdp1_hybrid_units_are_refused_never_misread():
    # A hybrid FSDP1 unit shards within a group and replicates across groups: its views
    # carry no owner rule, so reading them is refused (a real hybrid mesh needs 4 ranks; with
    # 2, FSDP1 falls back to another strategy, so the unit is a stand-in here)
    from types import SimpleNamespace

    from torch.distributed.fsdp import ShardingStrategy

    from initwatch.sharding import _unit_layouts

    handle = SimpleNamespace(flat_param=SimpleNamespace(), _use_orig_params=True)
    for strategy in (ShardingStrategy.HYBRID_SHARD, ShardingStrategy._HYBRID_SHARD_ZERO2):
        unit = SimpleNamespace(_handle=handle, sharding_strategy=strategy)
        with pytest.raises(initwatch.ShardingError, match=f"{strategy.name}.*HSDP mesh"):
            _unit_layouts(unit)
