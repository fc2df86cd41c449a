"""Watch on DeepSpeed ZeRO-1/2/3 engines, 2 CPU processes under torchrun (gloo), one launch;
launched by tests/test_deepspeed.py. Rank r writes ``rank<r>.json`` into ``--out``.

A torch optimizer is passed to ``deepspeed.initialize`` (a DeepSpeed-config optimizer would
JIT-build fused_adam); the engine's CPU accelerator and gloo are picked automatically."""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from _record import out_arg, state_hash, write_json  # noqa: E402
from _sharded_case import (  # noqa: E402
    BATCH,
    STEPS,
    UPDATE_SAMPLE,
    batch,
    build,
    drawn_gpt2,
    frame_stats,
    optimizer,
    rank_rows,
    train,
)

import initwatch  # noqa: E402

warnings.filterwarnings("ignore")


def config(stage: int, clip: float = 0.0) -> dict:
    """DeepSpeed clips to a global norm of 1.0 unless told otherwise."""
    return {
        "gradient_clipping": clip,
        "train_micro_batch_size_per_gpu": BATCH // 2,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def engine(stage: int, model=None, clip: float = 0.0):
    import deepspeed  # here: the test collection imports this file, deepspeed may be absent

    model = build() if model is None else model
    cfg = config(stage, clip)
    eng, *_ = deepspeed.initialize(model=model, optimizer=optimizer(model), config=cfg)
    return eng


def with_step_block(stage: int, rows: slice) -> dict:
    """The same run through `with watch.step(i, engine)` (the Watch reads when engine.step()
    starts), with DeepSpeed's default clipping to 1.0."""
    eng = engine(stage, clip=1.0)
    watch = initwatch.Watch(eng, every=1, rules=False, update_sample=UPDATE_SAMPLE)
    frames, skipped, norms = [], [], []
    for step in range(STEPS):
        with watch.step(step, eng) as scope:
            scope.loss = eng(batch(step)[rows]).pow(2).mean()
            eng.backward(scope.loss)
            eng.step()
        f = watch.last_frame
        frames.append(frame_stats(f))
        skipped.append(f.globals["skipped_step"])
        norms.append(f.globals.get("grad_norm_global"))
    out = {"frames": frames, "skipped": skipped, "grad_norm_global": norms}
    try:  # a torch optimizer instead of the engine is refused before the step runs
        with watch.step(STEPS, torch.optim.SGD(build().parameters(), lr=0.1)):
            pass
    except initwatch.ShardingError as exc:
        out["refused_optimizer"] = str(exc)
    watch.close()
    return out


def late_read(stage: int, rows: slice) -> dict:
    """before_optimizer_step after engine.step(): the gradients are gone (ZeRO-1/2)."""
    eng = engine(stage)
    watch = initwatch.Watch(eng, every=1, rules=False)
    watch.begin_step(0)
    eng.backward(eng(batch(0)[rows]).pow(2).mean())
    eng.step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch.before_optimizer_step(eng)
    watch.end_step()
    grads = dict(watch.last_frame.values.get("grad_norm", {}))
    watch.close()
    return {"warnings": [str(w.message) for w in caught], "grad_norm": grads}


def reinit(stage: int) -> dict:
    """A scheme on the full model before deepspeed.initialize, rank-dependent seeds: the
    engine broadcasts rank 0's draw; the full weights are gathered to compare."""
    import deepspeed

    model = drawn_gpt2("t-fixup", seed=5 + dist.get_rank())
    eng = engine(stage, model)
    params = list(eng.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        state = {k: v.detach().clone() for k, v in eng.module.state_dict().items()}
    out = {"hash": state_hash(state), "keys": sorted(state)}
    try:
        initwatch.reinit(eng.module, "t-fixup", seed=5)
    except initwatch.ShardingError as exc:
        out["refused"] = str(exc)
    return out


def main() -> None:
    out = out_arg()
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    rank = dist.get_rank()
    rows = rank_rows(rank)
    results = {}
    for stage in (1, 2, 3):
        eng = engine(stage)
        results[f"zero{stage}"] = train(eng, eng, rows)
    results["zero3_step_block"] = with_step_block(3, rows)
    results["zero2_late"] = late_read(2, rows)
    results["zero3_reinit"] = reinit(3)
    write_json(out, f"rank{rank}", results)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
