"""Exact parameter statistics under DeepSpeed ZeRO-1/2/3 on 2 CPU processes (gloo) against the
same model trained in this process on the whole batch (tests/ddp/deepspeed_zero.py, one
torchrun launch; the model, data and loop of tests/test_sharded.py).

DeepSpeed averages the gradients over the ranks, each micro-batch mean covers half the batch,
so every statistic must agree to float32 rounding (relative 1e-5). Two differences are
DeepSpeed's own and asserted as such: it skips a step whose gradients are non-finite (the last
step feeds an Inf; the reference steps into NaN), and it clips to a global norm of 1.0 unless
told otherwise (the runs set ``gradient_clipping: 0`` except the one compared with a clipped
reference; the Watch reads the gradients before the engine clips them).

Skipped when deepspeed is not installed; ``.ci/run`` installs it (``initwatch[deepspeed]``).
The first run JIT-builds DeepSpeed's CPU communication op (~140 s; cached in
``TORCH_EXTENSIONS_DIR``).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import initwatch

sys.path.insert(0, str(Path(__file__).parent / "ddp"))
from _sharded_case import STATS, STEPS, build, drawn_gpt2, train  # noqa: E402
from ranks import torchrun  # noqa: E402
from test_sharded import assert_frames as assert_sharded_frames  # noqa: E402
from test_sharded import same  # noqa: E402

STAGES = ("zero1", "zero2", "zero3")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("deepspeed")
    return torchrun("deepspeed_zero.py", out)


def reference(clip: float = 0.0) -> dict:
    model = build()
    return json.loads(json.dumps(train(model, model, slice(None), clip=clip)))


def assert_frames(frames: list[dict], ref: dict, case: str) -> None:
    assert len(frames) == len(ref["frames"]) == STEPS
    for step, (got, want) in enumerate(zip(frames, ref["frames"], strict=True)):
        for stat in (*STATS, "act_rms"):
            if stat == "update_ratio" and step == STEPS - 1:
                continue  # DeepSpeed skipped the non-finite step: asserted separately
            assert set(got[stat]) == set(want[stat]), (case, step, stat)
            for name, value in want[stat].items():
                assert same(got[stat][name], value), (case, step, stat, name, got[stat][name])


@pytest.mark.slow
@pytest.mark.parametrize("case", STAGES)
def test_zero_frames_equal_the_single_process_run(ranks, case):
    ref = reference()
    assert ref["frames"][-1]["grad_nonfinite"]["0.weight"] == 1.0  # the Inf input
    for rank in ranks:
        assert_frames(rank[case]["frames"], ref, case)
        # the skipped non-finite step left the weights unchanged: a zero update, measured
        last = rank[case]["frames"][-1]["update_ratio"]
        assert set(last) == set(ref["frames"][-1]["update_ratio"])
        assert all(v == 0.0 for v in last.values())


@pytest.mark.slow
@pytest.mark.parametrize("case", STAGES)
def test_zero_one_collective_per_logging_step(ranks, case):
    for rank in ranks:
        assert rank[case]["collectives"] == [1, 1, 1]  # the Watch's calls, nothing else


@pytest.mark.slow
def test_zero3_step_block_reads_before_the_engine_clips_and_steps(ranks):
    # `with watch.step(i, engine)` reads when engine.step() starts: the pre-clip gradients
    # (DeepSpeed's default clipping to 1.0; the reference clips after the Watch read), the
    # updates of the clipped gradients, and the skipped non-finite step marked skipped.
    ref = reference(clip=1.0)
    for rank in ranks:
        got = rank["zero3_step_block"]
        assert_frames(got["frames"], ref, "zero3 step block")
        assert got["grad_norm_global"][0] > 1.0  # so the clipping changed the update
        assert got["skipped"] == [0.0, 0.0, 1.0]
        assert got["frames"][-1]["update_ratio"] == {}  # no update ratio of a skipped step
        assert "Pass the engine" in got["refused_optimizer"]


@pytest.mark.slow
def test_reading_after_engine_step_warns_and_records_no_gradients(ranks):
    for rank in ranks:
        assert rank["zero2_late"]["grad_norm"] == {}
    warned = ranks[0]["zero2_late"]["warnings"]  # (rank 0 warns)
    assert any("only between engine.backward" in w for w in warned)


@pytest.mark.slow
def test_zero3_reinit_before_initialize_is_rank0s_draw(ranks):
    # t-fixup drawn with seed 5 + rank before deepspeed.initialize: the engine broadcast
    # rank 0's draw (the single-process draw with seed 5); re-drawing ZeRO-3 shards is refused
    from _record import weights_hash

    model = drawn_gpt2("t-fixup", seed=5)
    r0, r1 = (r["zero3_reinit"] for r in ranks)
    assert r0["keys"] == r1["keys"] == sorted(model.state_dict())
    assert r0["hash"] == r1["hash"] == weights_hash(model)
    assert "already sharded by DeepSpeed ZeRO-3" in r0["refused"]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("hf_deepspeed")
    return torchrun("hf_deepspeed.py", out, "hf")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["zero2", "zero3"])
def test_hf_trainer_deepspeed_equals_ddp(hf, case):
    # The same Trainer run (data order, clipping to 0.5, schedule) under DeepSpeed ZeRO and
    # under DDP, whose statistics equal a single process (tests/test_sharded.py): equal
    # frames, one collective per logging step, although accelerate runs engine.step() inside
    # accelerator.backward, before on_pre_optimizer_step (the callback reads when it starts).
    # The t-fixup draws were rank-dependent: both wraps kept rank 0's.
    for rank in hf:
        assert rank[case]["zero3"] is (case == "zero3")
        assert rank[case]["counts"] == rank["ddp"]["counts"] == [1, 1]
        assert rank["ddp"]["norms"][0] > 0.5  # the clipping changed the update
        assert_sharded_frames(rank[case]["frames"], rank["ddp"], f"hf {case}")


# ---- refusals that need no DeepSpeed: stand-ins named as DeepSpeed's classes ----------------


class DeepSpeedEngine(nn.Module):
    """Named as DeepSpeed's engine (initwatch finds it by class name)."""

    def __init__(self, module: nn.Module, fp16: bool = False) -> None:
        super().__init__()
        self.module = module
        self._fp16 = fp16

    def fp16_enabled(self) -> bool:
        return self._fp16

    def forward(self, x):
        return self.module(x)


class PipelineEngine(DeepSpeedEngine):
    pass


def test_fp16_engine_is_refused_before_training():
    with pytest.raises(initwatch.ShardingError, match="DeepSpeed fp16.*loss scale.*bf16"):
        initwatch.Watch(DeepSpeedEngine(nn.Linear(2, 2), fp16=True))


def test_pipeline_engine_is_refused():
    with pytest.raises(initwatch.ShardingError, match="PipelineEngine"):
        initwatch.Watch(PipelineEngine(nn.Linear(2, 2)))


def test_watch_on_an_engine_measures_the_inner_module():
    inner = nn.Sequential(nn.Linear(2, 2))
    watch = initwatch.Watch(DeepSpeedEngine(inner), every=1, rules=False)
    opt = torch.optim.SGD(inner.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not in the optimizer" warning, no failure
        with watch.step(0, opt) as scope:
            scope.loss = inner(torch.ones(1, 2)).sum()
            scope.loss.backward()
            opt.step()
    assert set(watch.last_frame.values["grad_norm"]) == {"0.weight", "0.bias"}  # no "module."
    watch.close()
