"""DDP on 2 CPU processes (gloo), through standalone scripts in tests/ddp/.

Lightning's ``strategy="ddp"`` starts the other rank by re-running ``sys.argv``, which inside
pytest would re-run the test session; so each framework runs a script in a subprocess (Lightning
as ``python script.py``, the Hugging Face Trainer under ``torchrun``) and the test reads the JSON
each rank wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from builders import initwatch_tags
from paths import DDP
from ranks import launch, torchrun

HERE = DDP
pytestmark = pytest.mark.slow


def check_ranks(ranks: list[dict], start: str) -> None:
    r0, r1 = ranks
    # The ranks re-initialized with different seeds; the DDP wrap broadcast rank 0's weights.
    assert r0["hashes"]["after_scheme"] != r1["hashes"]["after_scheme"]
    assert r0["hashes"][start] == r1["hashes"][start] == r0["hashes"]["after_scheme"]
    assert r0["hashes"]["end"] == r1["hashes"]["end"], "identical weights after training"
    # Collectives only on logging steps, the same small fixed number each time.
    for rank in ranks:
        counts = {
            logging: {n for _, lg, n in rank["collectives"] if lg == logging}
            for logging in (True, False)
        }
        assert counts[False] == {0}
        assert counts[True] == {1}  # the Watch's reduction: one collective for the whole buffer
    # Activation statistics are reduced across ranks: every rank holds the same frame, though
    # each saw different data; gradient statistics are read after the all-reduce.
    assert r0["frames"] and r0["frames"] == r1["frames"]
    assert r0["local_act"] != r1["local_act"], "the ranks did see different micro-batches"


def writers(events: list[Path]) -> set[int]:
    """Process ids in event file names (``events.out.tfevents.<time>.<host>.<pid>.<n>``)."""
    return {int(e.name.split(".")[-2]) for e in events}


def test_lightning_ddp_two_cpu_processes(tmp_path):
    ranks = launch(
        [sys.executable, str(HERE / "lightning_ddp.py"), "--out", str(tmp_path)], tmp_path
    )
    assert ranks[0]["world_size"] == 2
    check_ranks(ranks, "fit_start")
    assert [f["step"] for f in ranks[0]["frames"]] == [0, 1, 3]  # where Lightning logs, and 0
    events = list(tmp_path.rglob("events.out.tfevents*"))
    assert len(events) == 1 and writers(events) == {ranks[0]["pid"]}, "only rank 0 writes"
    assert initwatch_tags(events[0].parent)


def test_hf_trainer_ddp_under_torchrun(tmp_path):
    ranks = torchrun("hf_ddp.py", tmp_path)
    assert ranks[0]["world_size"] == 2 and ranks[0]["is_world_process_zero"]
    assert not ranks[1]["is_world_process_zero"]
    check_ranks(ranks, "train_begin")
    # Only rank 1 raised an alert (on_alert="stop"); both ranks stopped after step 2.
    assert [r["alerts"] for r in ranks] == [0, 1]
    assert [r["global_step"] for r in ranks] == [2, 2]
    assert [f["step"] for f in ranks[0]["frames"]] == [2]
    events = list(tmp_path.rglob("events.out.tfevents*"))
    # Rank 0's two writers (the Trainer's TensorBoardCallback and ours) in one run directory.
    assert len({e.parent for e in events}) == 1
    assert writers(events) == {ranks[0]["pid"]}, "only rank 0 writes"
    assert initwatch_tags(events[0].parent)
