"""Watch on sharded models, 2 CPU processes under torchrun (gloo): FSDP2, HSDP, FSDP1 and DDP in
one launch; launched by tests/test_sharded.py. Rank r writes ``rank<r>.json`` into ``--out``."""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from _record import out_arg, state_hash, write_json  # noqa: E402
from _sharded_case import UPDATE_SAMPLE, build, drawn_gpt2, rank_rows, train  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import (  # noqa: E402
    FullyShardedDataParallel,
    ShardingStrategy,
    fully_shard,
)

import initwatch  # noqa: E402

warnings.filterwarnings("ignore")


def fsdp2(mesh=None):
    model = build()
    fully_shard(model[0], mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, model  # the Watch attaches after fully_shard (names are unchanged)


def hsdp():
    return fsdp2(init_device_mesh("cpu", (2, 1), mesh_dim_names=("replicate", "shard")))


def fsdp1(strategy: ShardingStrategy = ShardingStrategy.FULL_SHARD):
    inner = build()
    watch = initwatch.Watch(inner, every=1, rules=False, update_sample=UPDATE_SAMPLE)
    model = FullyShardedDataParallel(
        inner, use_orig_params=True, device_id=torch.device("cpu"), sharding_strategy=strategy
    )
    return model, watch  # the Watch attaches before the FSDP1 wrap


def fsdp1_no_shard():
    """Replicated on both ranks: rank 0 owns every element (as under DDP)."""
    return fsdp1(ShardingStrategy.NO_SHARD)


def ddp():
    model = torch.nn.parallel.DistributedDataParallel(build())
    return model, model


def reinit_cases() -> dict:
    """Schemes applied to the full model before fully_shard, the same seed on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    def full_hash(model):
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        return state_hash(full), sorted(full)

    out = {}
    for scheme in ("t-fixup", "rezero"):
        model = drawn_gpt2(scheme, seed=5)
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
        h, keys = full_hash(model)
        ids = torch.arange(16).reshape(2, 8) % 96
        model(input_ids=ids, labels=ids).loss.backward()  # gates of shape (1,) shard and train
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        out[scheme] = {"hash": h, "keys": keys, "trained": full_hash(model)[0]}
        try:
            initwatch.reinit(model, scheme, seed=5)
        except initwatch.ShardingError as exc:
            out[scheme]["refused"] = str(exc)
    return out


def main() -> None:
    out = out_arg()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    rows = rank_rows(rank)
    results = {}
    cases = [("fsdp2", fsdp2), ("hsdp", hsdp), ("fsdp1", fsdp1), ("fsdp1_no_shard", fsdp1_no_shard)]
    for name, make in [*cases, ("ddp", ddp)]:
        model, target = make()
        if isinstance(target, torch.nn.Module):
            results[name] = train(model, target, rows)
        else:
            results[name] = train(model, None, rows, watch=target)
        if name == "hsdp":  # what the owner rule prevents: every replica adds its copy
            w = model[2].weight
            results[name]["replica_sumsq"] = float(w.to_local().pow(2).sum())
            results[name]["full_sumsq"] = float(w.full_tensor().pow(2).sum())
    results["reinit"] = reinit_cases()
    write_json(out, f"rank{rank}", results)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
